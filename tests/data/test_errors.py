"""Bad input: every case is a clear ValueError / FileNotFoundError subclass naming the file."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from hvae_pipeline.data import DataFormatError, MissingDataError, load_brats_slices, load_pair_slices, write_phantom_tree

SMALL = dict(size=16, depth=8, cache_dir=False)


@pytest.fixture
def tree(tmp_path):
    write_phantom_tree(tmp_path, "brats2021", num_cases=1)
    return tmp_path / "BraTS2021_00001"


def _rewrite(path, transform):
    image = nib.load(path)
    data, affine = transform(np.asarray(image.dataobj, dtype=np.float32), image.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def test_corrupt_nifti_names_the_file(tree):
    flair = tree / "BraTS2021_00001_flair.nii.gz"
    flair.write_bytes(gzip.compress(b"not a nifti header at all")[:20])
    with pytest.raises(DataFormatError, match="BraTS2021_00001_flair.nii.gz: not a readable NIfTI"):
        load_brats_slices(tree.parent, **SMALL)


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda d, a: (d[:-1], a), "shape .* does not match"),
        (lambda d, a: (d, a + np.pad(np.full((3, 1), 5.0), ((0, 1), (3, 0)))), "affine does not match"),
    ],
)
def test_image_label_grid_mismatch(tree, transform, message):
    _rewrite(tree / "BraTS2021_00001_seg.nii.gz", transform)
    with pytest.raises(DataFormatError, match="BraTS2021_00001_seg.nii.gz: " + message):
        load_brats_slices(tree.parent, **SMALL)


def test_nan_voxels(tree):
    def add_nan(data, affine):
        data[3, 3, 3] = np.nan
        return data, affine

    _rewrite(tree / "BraTS2021_00001_flair.nii.gz", add_nan)
    with pytest.raises(DataFormatError, match="flair.nii.gz: 1 NaN"):
        load_brats_slices(tree.parent, **SMALL)


def test_unknown_label_values(tree):
    def add_seven(data, affine):
        data[data == 2] = 7
        return data, affine

    _rewrite(tree / "BraTS2021_00001_seg.nii.gz", add_seven)
    with pytest.raises(DataFormatError, match=r"seg.nii.gz: unknown label value\(s\) \[7\]"):
        load_brats_slices(tree.parent, **SMALL)


def test_non_integer_labels(tree):
    _rewrite(tree / "BraTS2021_00001_seg.nii.gz", lambda d, a: (d * 0.5, a))
    with pytest.raises(DataFormatError, match="seg.nii.gz: a label map must hold non-negative integers"):
        load_brats_slices(tree.parent, **SMALL)


def test_missing_modality_lists_available(tree):
    (tree / "BraTS2021_00001_t1ce.nii.gz").unlink()
    with pytest.raises(MissingDataError, match=r"t1ce.nii.gz: modality 't1ce' missing .*\['flair', 't1', 't2'\]"):
        load_brats_slices(tree.parent, modalities=("flair", "t1ce"), **SMALL)


def test_missing_label_and_unknown_patient(tree):
    (tree / "BraTS2021_00001_seg.nii.gz").unlink()
    with pytest.raises(MissingDataError, match="seg.nii.gz: label file missing"):
        load_brats_slices(tree.parent, **SMALL)
    data = load_brats_slices(tree.parent, allow_unlabelled=True, **SMALL)
    assert len(data) == 8 and set(data["source"]) == {"brats2021-unlabelled"}
    with pytest.raises(MissingDataError, match="patients \\['nobody'\\] not found"):
        load_brats_slices(tree.parent, patients=["nobody"], **SMALL)


def test_empty_tumour_set(tree):
    with pytest.raises(DataFormatError, match="no slice with tumour_area >= min_tumour_area=100000"):
        load_brats_slices(tree.parent, min_tumour_area=100_000, **SMALL)


def test_no_known_layout(tmp_path):
    (tmp_path / "random.txt").write_text("x")
    with pytest.raises(MissingDataError, match="no known BraTS layout"):
        load_brats_slices(tmp_path, **SMALL)


def test_bad_arguments(tree):
    with pytest.raises(ValueError, match="label='necrosis'"):
        load_brats_slices(tree.parent, label="necrosis", **SMALL)
    with pytest.raises(ValueError, match="normalization='max'"):
        load_brats_slices(tree.parent, normalization="max", **SMALL)
    with pytest.raises(ValueError, match="unknown BraTS modalities \\['pet'\\]"):
        load_brats_slices(tree.parent, modalities=("pet",), **SMALL)


def test_unreadable_2d_file(tmp_path):
    write_phantom_tree(tmp_path, "lgg", num_cases=1)
    broken = tmp_path / "TCGA_CS_0001" / "TCGA_CS_0001_3.tif"
    broken.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="TCGA_CS_0001_3.tif: not a readable 2D image"):
        load_pair_slices(tmp_path, "{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif", cache_dir=False)
    (tmp_path / "TCGA_CS_0001" / "TCGA_CS_0001_2_mask.tif").unlink()
    with pytest.raises(MissingDataError, match="TCGA_CS_0001_2.tif: no mask found"):
        load_pair_slices(tmp_path, "{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif", cache_dir=False)
