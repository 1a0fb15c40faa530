"""Real data in ../shared/data (read in place, never copied; skipped when the folder is absent)."""

import nibabel as nib
import numpy as np
import pytest

from hvae_pipeline.data import MissingDataError, load_brats_slices, load_hecktor_slices, split_by_patient
from hvae_pipeline.data.hecktor import head_and_neck_box
from hvae_pipeline.data.labels import detect_brats_convention
from hvae_pipeline.data.volume import read_label_volume, read_volume

pytestmark = pytest.mark.shared_data
MSD_GLOBS = dict(image_glob="images/{case}_Tumor.nii.gz", label_glob="labels/{case}_Seg.nii.gz")
TRAIN = ["001", "002", "004", "008", "009", "011", "017", "027", "030", "033"]
VAL = ["036", "050", "082", "089", "190", "259"]


def columns(dataset):
    return dataset.with_format("numpy")[:]


def test_all_16_msd_flair_patients_and_readme_split(shared_data):
    data = load_brats_slices(shared_data / "brats-msd-flair", size=32, depth=16, cache_dir=False, num_proc=2, **MSD_GLOBS)
    patients = sorted(set(data["patient_id"]))
    assert patients == sorted(f"BRATS_{n}" for n in TRAIN + VAL)
    assert set(data["source"]) == {"glob"}
    arrays = columns(data)
    assert set(np.unique(arrays["mask"])) == {0, 1} and (arrays["tumour_area"] >= 1).all()
    splits = split_by_patient(data, {"train": [f"BRATS_{n}" for n in TRAIN], "val": [f"BRATS_{n}" for n in VAL]})
    assert not set(splits["train"]["patient_id"]) & set(splits["val"]["patient_id"])
    assert splits["train"].num_rows + splits["val"].num_rows == data.num_rows


def test_msd_flair_at_paper_size(shared_data):
    root = shared_data / "brats-msd-flair"
    data = columns(load_brats_slices(root, patients=["BRATS_001"], cache_dir=False, **MSD_GLOBS))
    assert data["image"].shape[1:] == (1, 128, 128) and data["slice_index"].max() < 64
    assert np.allclose(data["image"].max(axis=(1, 2, 3)), 1) and data["image"].min() == 0
    # Tumour pixels over the kept slices ~ the tumour volume scaled by the voxel-count ratio of the resampling.
    seg = read_label_volume(root / "labels" / "BRATS_001_Seg.nii.gz").data
    expected = np.count_nonzero(seg) * (128 * 128 * 64) / seg.size
    assert abs(data["tumour_area"].sum() / expected - 1) < 0.05
    # Display convention: the brain's front (the long axis of the head) runs top-bottom, nose up: the
    # FLAIR slice is taller than wide, and the brain mass is centred.
    middle = data["image"][len(data["image"]) // 2, 0] > 0.05
    rows, cols = np.nonzero(middle)
    assert np.ptp(rows) > np.ptp(cols)


def test_brats_gli_2023_labels_in_2021_layout(shared_data):
    root = shared_data / "brats-gli"
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000"):
        labels = read_label_volume(root / case / f"{case}_seg.nii.gz")
        convention = detect_brats_convention(labels.data, "brats2021", labels.path)
        assert convention.name == "brats2023"
        whole = convention.target(labels.data, "whole_tumor", labels.path)
        assert whole.sum() == np.count_nonzero(labels.data)  # whole tumour = label > 0, exactly
    data = columns(load_brats_slices(root, ("flair", "t1ce"), size=64, depth=32, cache_dir=False))
    assert data["image"].shape[1:] == (2, 64, 64) and sorted(set(data["patient_id"])) == ["BraTS-GLI-00000-000", "BraTS-GLI-00002-000"]
    multi = columns(load_brats_slices(root, size=64, depth=32, label="multiclass", cache_dir=False, min_tumour_area=0))
    assert set(np.unique(multi["mask"])) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \[3\]"):
        load_brats_slices(root, size=16, depth=8, cache_dir=False, label_convention="brats2017")


def test_hecktor_pet_without_labels(shared_data):
    root = shared_data / "hecktor-pet"
    with pytest.raises(MissingDataError, match="CHUM-006.nii.gz: no label file.*allow_unlabelled=True"):
        load_hecktor_slices(root, cache_dir=False)
    data = columns(load_hecktor_slices(root, size=64, depth=32, cache_dir=False, allow_unlabelled=True))
    assert data["image"].shape == (64, 1, 64, 64) and not data["mask"].any()
    assert set(data["source"]) == {"hecktor2022-flat-unlabelled"}
    assert np.isclose(data["image"].max(), 1) and data["image"].min() == 0
    pet = read_volume(root / "CHUM-006__PT.nii.gz")
    box = head_and_neck_box(pet, "pt", (144, 144, 144), 40)
    np.testing.assert_allclose(box[1] - box[0], [144, 144, 144])
    top = (pet.affine @ [0, 0, pet.shape[2], 1])[2]
    assert box[1, 2] <= top - 40 + 1e-6  # the box starts below the top of the body (here the top of the scan)
    assert nib.aff2axcodes(nib.load(root / "CHUM-006__PT.nii.gz").affine) == ("L", "P", "S")  # a non-RAS input
