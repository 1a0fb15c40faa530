"""Synthetic volumes in every official layout: shapes, orientation, label mapping, HECKTOR geometry."""

import numpy as np
import pytest

from hvae_pipeline.data import (
    MissingDataError,
    axial_slices,
    load_brats_slices,
    load_hecktor_slices,
    load_pair_slices,
    read_bbox_csv,
    write_phantom_tree,
)
from hvae_pipeline.data.labels import BRATS_CONVENTIONS, detect_brats_convention

GLOB = dict(image_glob="images/{case}_Tumor.nii.gz", label_glob="labels/{case}_Seg.nii.gz")
SMALL = dict(size=32, depth=16, cache_dir=False)


def _brats(tree, layout, **kwargs):
    return columns(load_brats_slices(tree, **(GLOB if layout == "glob" else {}), **SMALL, **kwargs))


def columns(dataset):
    """All rows as numpy arrays (``dataset["col"]`` is a lazy Column in datasets 5)."""
    return dataset.with_format("numpy")[:]


def test_axial_slices_follow_radiological_convention():
    volume = np.zeros((5, 6, 7))
    volume[4, 5, 6] = 1  # most Right, most Anterior, most Superior voxel of a RAS volume
    volume[0, 0, 0] = 2  # Left, Posterior, Inferior
    slices = axial_slices(volume)
    assert slices.shape == (7, 6, 5)
    assert slices[6, 0, 0] == 1  # superior slice, top row (anterior), left column (patient right)
    assert slices[0, 5, 4] == 2  # inferior slice, bottom row (posterior), right column (patient left)


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd", "glob"])
def test_every_brats_layout_loads_with_shapes_and_dtypes(phantom_trees, layout):
    data = _brats(phantom_trees[layout], layout)
    assert data["image"].shape[1:] == (1, 32, 32) and data["image"].dtype == np.float32
    assert data["mask"].shape[1:] == (32, 32)
    assert set(data["source"]) == {layout}
    assert len(set(data["patient_id"])) == 2
    assert (data["tumour_area"] == np.count_nonzero(data["mask"], axis=(1, 2))).all()
    assert (data["tumour_area"] >= 1).all()


def test_tumour_lands_where_the_display_convention_says(phantom_trees):
    # The phantom tumour is in the patient's left, anterior, superior quadrant.
    data = _brats(phantom_trees["brats2021"], "brats2021")
    rows, cols = np.nonzero(data["mask"].sum(axis=0))
    assert cols.mean() > 16  # patient left -> image right
    assert rows.mean() < 16  # anterior -> top
    assert data["slice_index"].mean() > 8  # superior -> high slice index


@pytest.mark.parametrize("orientation", ["LPS", "LAS", "RPI"])
def test_non_ras_affines_give_identical_slices(tmp_path, phantom_trees, orientation):
    write_phantom_tree(tmp_path, "brats2021", orientation=orientation)
    reference = _brats(phantom_trees["brats2021"], "brats2021", modalities=("flair", "t2"))
    other = _brats(tmp_path, "brats2021", modalities=("flair", "t2"))
    assert len(other["mask"]) == len(reference["mask"])
    np.testing.assert_array_equal(other["mask"], reference["mask"])
    np.testing.assert_allclose(other["image"], reference["image"], atol=0.05)  # only the noise differs


@pytest.mark.parametrize("label", ["whole_tumor", "tumor_core", "enhancing_tumor", "multiclass"])
def test_label_mapping_is_release_independent(phantom_trees, label):
    masks = {layout: _brats(phantom_trees[layout], layout, label=label, min_tumour_area=0)["mask"]
             for layout in ("brats2021", "brats2023", "msd")}
    np.testing.assert_array_equal(masks["brats2021"], masks["brats2023"])
    np.testing.assert_array_equal(masks["brats2021"], masks["msd"])
    assert masks["msd"].any()


def test_subregions_nest_and_multiclass_ids_are_unified(phantom_trees):
    tree = phantom_trees["msd"]
    areas = {label: _brats(tree, "msd", label=label, min_tumour_area=0)["mask"].sum()
             for label in ("whole_tumor", "tumor_core", "enhancing_tumor")}
    assert areas["whole_tumor"] > areas["tumor_core"] > areas["enhancing_tumor"] > 0
    multi = _brats(tree, "msd", label="multiclass", min_tumour_area=0)["mask"]
    enhancing = _brats(tree, "msd", label="enhancing_tumor", min_tumour_area=0)["mask"]
    assert set(np.unique(multi)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(multi == 3, enhancing == 1)


def test_label_convention_detection_and_override(phantom_trees):
    labels_2021 = np.array([0, 1, 2, 4])
    assert detect_brats_convention(labels_2021, "brats2021", "x").name == "brats2017"
    assert detect_brats_convention(np.array([0, 1, 3]), "brats2021", "x").name == "brats2023"
    assert detect_brats_convention(np.array([0, 1, 2, 3]), "msd", "x").name == "msd"
    assert detect_brats_convention(np.array([0, 1]), "glob", "x").name == "binary"
    with pytest.raises(ValueError, match="tumor_core"):
        _brats(phantom_trees["glob"], "glob", label="tumor_core")
    # Forcing the 2017 convention on 2023 labels fails on the unexpected 3, naming the file.
    with pytest.raises(ValueError, match=r"seg\.nii\.gz.*\[3\]"):
        _brats(phantom_trees["brats2023"], "brats2023", label_convention="brats2017")
    assert BRATS_CONVENTIONS["msd"].target(np.array([1, 2, 3]), "tumor_core", "x").tolist() == [0, 1, 1]


def test_modalities_are_stacked_in_request_order(phantom_trees):
    both = _brats(phantom_trees["brats2023"], "brats2023", modalities=("t1", "flair"))
    flair = _brats(phantom_trees["brats2023"], "brats2023", modalities=("t2f",))
    t1 = _brats(phantom_trees["brats2023"], "brats2023", modalities=("t1n",))
    assert both["image"].shape[1] == 2
    np.testing.assert_array_equal(both["image"][:, 0], t1["image"][:, 0])
    np.testing.assert_array_equal(both["image"][:, 1], flair["image"][:, 0])
    msd = _brats(phantom_trees["msd"], "msd", modalities=("flair", "t1", "t1ce", "t2"))
    assert msd["image"].shape[1] == 4 and not np.allclose(msd["image"][:, 0], msd["image"][:, 2])


def test_hecktor_2022_targets_and_pet_ct_grid(phantom_trees):
    tree = phantom_trees["hecktor2022"]
    kwargs = dict(size=32, depth=24, cache_dir=False, min_tumour_area=0)
    primary = columns(load_hecktor_slices(tree, ("pt", "ct"), "gtvp", **kwargs))
    nodes = columns(load_hecktor_slices(tree, ("pt", "ct"), "gtvn", **kwargs))
    multi = columns(load_hecktor_slices(tree, ("pt", "ct"), "multiclass", **kwargs))
    assert primary["image"].shape[1:] == (2, 32, 32)
    np.testing.assert_array_equal(multi["mask"] == 1, primary["mask"] == 1)
    np.testing.assert_array_equal(multi["mask"] == 2, nodes["mask"] == 1)
    # PET and CT were resampled onto one grid: the hot PET tumour sits on the CT's denser tumour.
    tumour = primary["mask"] == 1
    assert primary["image"][:, 0][tumour].mean() > primary["image"][:, 0][~tumour].mean()
    # Primary (x=-10 mm) is the patient's left of the node (x=+30 mm): further right on the image.
    assert np.nonzero(tumour)[2].mean() > np.nonzero(nodes["mask"])[2].mean()


def test_hecktor_2021_uses_bbox_csv_in_lps(phantom_trees):
    tree = phantom_trees["hecktor2021"]
    boxes = read_bbox_csv(tree / "bbox.csv")
    assert boxes["CHUM-001"] == (-80.0, 64.0, -60.0, 84.0, -184.0, -40.0)
    data = columns(load_hecktor_slices(tree, ("ct", "pt"), "gtvp", size=36, depth=36, cache_dir=False))
    assert set(data["source"]) == {"hecktor2021"}
    # 4 mm grid from x=-80: the tumour centre x=-10 mm (patient left) is column 36 - 1 - 17.5 ~ 17.5 ... in RAS
    # index (-10 + 80) / 4 = 17.5 -> display column 36 - 1 - 17.5 = 17.5; y=20 -> index 20, row 15; z=-100 -> slice 21.
    rows, cols = np.nonzero(data["mask"].sum(axis=0))
    assert abs(cols.mean() - 17.5) < 1 and abs(rows.mean() - 15) < 1
    assert abs(np.average(data["slice_index"], weights=data["tumour_area"]) - 20.5) < 1
    with pytest.raises(ValueError, match="gtvn"):
        load_hecktor_slices(tree, label="gtvn", cache_dir=False)


def test_hecktor_without_labels_needs_allow_unlabelled(phantom_trees):
    tree = phantom_trees["hecktor-pet"]
    with pytest.raises(MissingDataError, match="allow_unlabelled"):
        load_hecktor_slices(tree, cache_dir=False)
    with pytest.raises(MissingDataError, match="'ct' missing.*available: \\['pt'\\]"):
        load_hecktor_slices(tree, ("ct",), cache_dir=False, allow_unlabelled=True)
    data = columns(load_hecktor_slices(tree, size=24, depth=12, cache_dir=False, allow_unlabelled=True))
    assert len(data["mask"]) == 2 * 12 and not data["mask"].any()
    assert set(data["source"]) == {"hecktor2022-flat-unlabelled"}


def test_pairs_lgg_layout_picks_channels(phantom_trees):
    tree = phantom_trees["lgg"]
    flair = columns(load_pair_slices(tree, "{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif",
                                     channels=[1], size=64, cache_dir=False, min_tumour_area=0))
    assert flair["image"].shape[1:] == (1, 64, 64) and len(flair["mask"]) == 12
    assert flair["slice_index"][:6].tolist() == [1, 2, 3, 4, 5, 6]
    from PIL import Image

    first = np.asarray(Image.open(tree / "TCGA_CS_0001" / "TCGA_CS_0001_1.tif"))[:, :, 1].astype(np.float32)
    np.testing.assert_allclose(flair["image"][0, 0], (first - first.min()) / (first.max() - first.min()), atol=1e-6)
    mask = np.asarray(Image.open(tree / "TCGA_CS_0001" / "TCGA_CS_0001_1_mask.tif")) > 0
    np.testing.assert_array_equal(flair["mask"][0], mask)
    rgb = load_pair_slices(tree, "{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif", size=32, cache_dir=False)
    assert columns(rgb)["image"].shape[1:] == (3, 32, 32)
