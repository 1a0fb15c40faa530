"""Data loaders never drop a patient or a tumour silently: thin and small tumours survive downsampling (with a
warning), a tumour mostly outside the crop box is named, broken links and empty images are errors naming the file,
and warnings reach the caller from worker processes and from the cache."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
from reliability_helpers import file_snapshot, run_cli, untouched

from hvae_pipeline.cli import data as data_cli
from hvae_pipeline.data import (
    DataFormatError,
    MissingDataError,
    load_brats_slices,
    load_hecktor_slices,
    load_pair_slices,
    write_phantom_tree,
)
from hvae_pipeline.data.volume import grid_over_volume, resample_labels

SMALL = dict(size=8, depth=8, cache_dir=False, min_tumour_area=0)
GLOB = dict(image_glob="images/{case}_Tumor.nii.gz", label_glob="labels/{case}_Seg.nii.gz")
PAIRS = ("{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif")


def rewrite(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace the voxels of a NIfTI file by ``edit(voxels)``, keeping its affine."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(edit(np.asarray(image.dataobj, dtype=np.float32)), image.affine), path)


def thin_slab(data: np.ndarray) -> np.ndarray:
    """A tumour one voxel thick (x = 21) in a 40 x 48 x 36 phantom: 5x in-plane downsampling to 8 x 8 skips it."""
    out = np.zeros_like(data)
    out[21, 10:30, 10:20] = 2
    return out


def break_link(path: Path) -> None:
    """Turn ``path`` into a symbolic link to a file that does not exist."""
    path.unlink()
    path.symlink_to(path.parent / "gone.nii.gz")


def tumour_pixels(dataset) -> int:
    return int(np.asarray(dataset["tumour_area"]).sum())


@pytest.fixture
def brats(tmp_path: Path) -> Path:
    """A two-patient BraTS 2021 phantom tree."""
    write_phantom_tree(tmp_path / "brats", "brats2021", num_cases=2)
    return tmp_path / "brats"


# --------------------------------------------------------------------------------------- tumours survive resampling
def test_thin_tumour_survives_fivefold_downsampling_with_a_warning(brats):
    seg = brats / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    rewrite(seg, thin_slab)
    with untouched(brats), pytest.warns(UserWarning, match=r"BraTS2021_00001_seg.nii.gz: label 1 is thinner or smaller"):
        data = load_brats_slices(brats, patients=["BraTS2021_00001"], **SMALL)
    assert tumour_pixels(data) >= 1  # point sampling returned 0 pixels here, without a word


def test_thin_line_keeps_its_whole_length():
    # A line one voxel wide and 40 long, downsampled 4x: it covers 10 output voxels a quarter each (true area 2.5).
    labels = np.zeros((40, 40, 1), dtype=np.uint8)
    labels[17, :, 0] = 1
    grid = grid_over_volume(np.eye(4), labels.shape, (10, 10, 1))
    with pytest.warns(UserWarning, match="line.nii: label 1 .* gave it back its 10 most covered voxel"):
        out = resample_labels(labels, np.eye(4), grid, (10, 10, 1), Path("line.nii"))
    assert np.count_nonzero(out) == 10 and np.count_nonzero(out[4]) == 10


def test_single_voxel_tumour_survives_eightfold_downsampling():
    labels = np.zeros((64, 64, 8), dtype=np.uint8)
    labels[37, 5, 3] = 3
    grid = grid_over_volume(np.eye(4), labels.shape, (8, 8, 1))
    with pytest.warns(UserWarning, match="dot.nii: label 3"):
        out = resample_labels(labels, np.eye(4), grid, (8, 8, 1), Path("dot.nii"))
    assert np.argwhere(out == 3).tolist() == [[4, 0, 0]]


def test_large_tumours_resample_without_warnings(brats):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_brats_slices(brats, size=32, depth=16, cache_dir=False)
    assert tumour_pixels(data) > 0


def test_tumour_mostly_outside_the_crop_box_names_the_patient(tmp_path):
    tree = tmp_path / "hecktor"
    write_phantom_tree(tree, "hecktor2021", num_cases=1)
    # The primary tumour spans RAS x in [-22, 2] mm; this box (LPS x1, x2 = -140, 4: RAS [-4, 140]) keeps a sliver.
    (tree / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHUM-001,-140,4,-84,60,-184,-40\n")
    with untouched(tree), pytest.warns(UserWarning, match=r"patient CHUM-001: the tumour of .*CHUM-001_ct_gtvt.nii.gz covers .* but only"):
        load_hecktor_slices(tree, ("pt",), size=16, depth=16, cache_dir=False, min_tumour_area=0)


# ---------------------------------------------------------------------------------------- warnings reach the caller
def test_warnings_from_worker_processes_reach_the_caller(brats):
    for case in ("BraTS2021_00001", "BraTS2021_00002"):
        rewrite(brats / case / f"{case}_seg.nii.gz", thin_slab)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_brats_slices(brats, num_proc=2, **SMALL)
    named = {case for case in ("BraTS2021_00001", "BraTS2021_00002") for w in caught if f"{case}_seg" in str(w.message)}
    assert named == {"BraTS2021_00001", "BraTS2021_00002"}


def test_warnings_are_repeated_when_the_dataset_comes_from_the_cache(brats, tmp_path):
    rewrite(brats / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz", thin_slab)
    options = dict(SMALL, cache_dir=tmp_path / "cache", patients=["BraTS2021_00001"])
    with pytest.warns(UserWarning, match="thinner or smaller"):
        first = load_brats_slices(brats, **options)
    cached = file_snapshot(tmp_path / "cache")
    with pytest.warns(UserWarning, match="thinner or smaller"):
        again = load_brats_slices(brats, **options)
    assert file_snapshot(tmp_path / "cache") == cached  # served from the cache, not rebuilt
    assert tumour_pixels(again) == tumour_pixels(first)


# ---------------------------------------------------------------------------------------- unreadable patients
def test_broken_link_image_is_an_error_not_a_missing_modality(brats):
    flair = brats / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz"
    break_link(flair)
    with untouched(brats), pytest.raises(MissingDataError, match=f"{flair}: broken symbolic link to .*gone.nii.gz; restore the target"):
        load_brats_slices(brats, **SMALL)


def test_broken_link_patient_of_a_one_file_layout_is_not_skipped(tmp_path):
    write_phantom_tree(tmp_path, "glob", num_cases=2)
    image = sorted((tmp_path / "images").iterdir())[1]
    break_link(image)
    with untouched(tmp_path), pytest.raises(MissingDataError, match=f"{image.name}: broken symbolic link"):
        load_brats_slices(tmp_path, **GLOB, **SMALL)  # used to load the other patient only, with no word


def test_broken_link_label_is_not_taken_for_an_unlabelled_case(brats):
    seg = brats / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    break_link(seg)
    with pytest.raises(MissingDataError, match=f"{seg.name}: broken symbolic link"):
        load_brats_slices(brats, allow_unlabelled=True, **SMALL)
    assert seg.is_symlink()


def test_broken_link_mask_of_2d_pairs(tmp_path):
    write_phantom_tree(tmp_path, "lgg", num_cases=1)
    mask = tmp_path / "TCGA_CS_0001" / "TCGA_CS_0001_2_mask.tif"
    break_link(mask)
    with untouched(tmp_path), pytest.raises(MissingDataError, match=f"{mask.name}: broken symbolic link"):
        load_pair_slices(tmp_path, *PAIRS, cache_dir=False)


def test_hvae_data_prepare_reports_a_broken_link_with_exit_code_2(brats, tmp_path, capsys):
    break_link(brats / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz")
    out = tmp_path / "prepared"
    code, err = run_cli(data_cli.main, ["prepare", "brats", str(brats), "--out", str(out), "--size", "8", "--depth", "8",
                                        "--modalities", "flair", "t1"], capsys)
    assert code == 2 and "BraTS2021_00002_t1.nii.gz: broken symbolic link" in err and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["brats"]


# ---------------------------------------------------------------------------------------- empty images
def test_all_zero_image_volume_is_refused(brats):
    flair = brats / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz"
    rewrite(flair, np.zeros_like)
    with untouched(brats), pytest.raises(DataFormatError, match=f"{flair}: every voxel is 0, an empty image .* patients="):
        load_brats_slices(brats, **SMALL)


def test_constant_channel_of_a_4d_image_is_refused(tmp_path):
    write_phantom_tree(tmp_path, "msd", num_cases=1)
    image = next((tmp_path / "imagesTr").iterdir())

    def constant_t1(data: np.ndarray) -> np.ndarray:
        data[..., 1] = 7.0
        return data

    rewrite(image, constant_t1)
    with pytest.raises(DataFormatError, match=rf"{image.name} \(channel 1\): every voxel is 7"):
        load_brats_slices(tmp_path, modalities=("flair", "t1"), **SMALL)
    assert len(load_brats_slices(tmp_path, modalities=("flair",), **SMALL)) == 8  # the other channels are fine


def test_constant_pet_volume_is_refused(tmp_path):
    write_phantom_tree(tmp_path, "hecktor2022", num_cases=1)
    pet = next((tmp_path / "imagesTr").glob("*__PT.nii.gz"))
    rewrite(pet, np.zeros_like)
    with pytest.raises(DataFormatError, match=f"{pet.name}: every voxel is 0"):
        load_hecktor_slices(tmp_path, ("pt",), **SMALL)


def test_blank_picture_with_a_tumour_mask_is_refused(tmp_path):
    from PIL import Image

    write_phantom_tree(tmp_path, "lgg", num_cases=1)
    picture = tmp_path / "TCGA_CS_0001" / "TCGA_CS_0001_2.tif"
    mask = np.asarray(Image.open(tmp_path / "TCGA_CS_0001" / "TCGA_CS_0001_2_mask.tif"))
    assert mask.any()
    size = Image.open(picture).size
    Image.new("RGB", size).save(picture)
    with pytest.raises(DataFormatError, match=f"{picture.name}: every voxel is 0"):
        load_pair_slices(tmp_path, *PAIRS, cache_dir=False)
