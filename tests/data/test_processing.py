"""Normalisation, filtering, balancing, splitting, caching, parallelism, dtypes, phantoms and the CLI."""

import os
import time

import numpy as np
import pytest
import torch

from hvae_pipeline.cli.data import main
from hvae_pipeline.data import (
    balance_by_area,
    collate_slices,
    load_brats_slices,
    make_phantom_slices,
    split_by_patient,
)
from hvae_pipeline.data.phantom import PHANTOM_SLICES_PER_PATIENT

SMALL = dict(size=32, depth=16)


def columns(dataset):
    return dataset.with_format("numpy")[:]


def test_minmax_and_zscore(phantom_trees):
    tree = phantom_trees["brats2021"]
    images = columns(load_brats_slices(tree, ("flair", "t1"), cache_dir=False, **SMALL))["image"]
    assert np.allclose(images.min(axis=(2, 3)), 0) and np.allclose(images.max(axis=(2, 3)), 1)
    raw = columns(load_brats_slices(tree, cache_dir=False, normalization="none", min_tumour_area=0, **SMALL))["image"]
    z = columns(load_brats_slices(tree, cache_dir=False, normalization="zscore", min_tumour_area=0, **SMALL))["image"]
    one_patient = slice(0, 16)
    foreground = raw[one_patient] > raw[one_patient].min()
    assert abs(z[one_patient][foreground].mean()) < 1e-3 and abs(z[one_patient][foreground].std() - 1) < 1e-3
    assert raw.max() > 50  # "none" keeps scanner units (phantom brain = 100)


def test_min_tumour_area_filters_after_resampling(phantom_trees):
    tree = phantom_trees["brats2023"]
    everything = columns(load_brats_slices(tree, cache_dir=False, min_tumour_area=0, **SMALL))
    assert len(everything["mask"]) == 2 * 16
    threshold = int(np.median(everything["tumour_area"][everything["tumour_area"] > 0]))
    kept = columns(load_brats_slices(tree, cache_dir=False, min_tumour_area=threshold, **SMALL))
    assert (kept["tumour_area"] >= threshold).all()
    assert len(kept["mask"]) == int((everything["tumour_area"] >= threshold).sum())


def test_balance_is_deterministic_and_even():
    slices = make_phantom_slices(400, size=128, seed=3)
    balanced = balance_by_area(slices, seed=1)
    again = balance_by_area(slices, seed=1)
    other = balance_by_area(slices, seed=2)
    areas = np.asarray(balanced["tumour_area"])
    assert (areas >= 200).all() and areas.tolist() == list(again["tumour_area"])
    assert list(balanced["patient_id"]) != list(other["patient_id"]) or list(balanced["slice_index"]) != list(other["slice_index"])
    original = np.bincount((np.asarray(slices["tumour_area"])[np.asarray(slices["tumour_area"]) >= 200] - 200) // 25)
    cap = int(np.ceil(np.median(original[original > 0])))
    counts = np.bincount((areas - 200) // 25)
    assert counts.max() <= cap and np.array_equal(counts > 0, original > 0)
    assert balance_by_area(slices, per_bin=1, seed=0).num_rows == int((original > 0).sum())


def test_split_by_patient_has_no_leakage():
    slices = make_phantom_slices(8 * PHANTOM_SLICES_PER_PATIENT, size=16)
    splits = split_by_patient(slices, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=4)
    patients = {name: set(part["patient_id"]) for name, part in splits.items()}
    assert [len(p) for p in patients.values()] == [5, 2, 1]  # largest remainder of 4.8 / 1.6 / 1.6
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert sum(part.num_rows for part in splits.values()) == slices.num_rows
    explicit = split_by_patient(slices, {"train": ["phantom-000", "phantom-001"], "val": ["phantom-007"]})
    assert set(explicit["val"]["patient_id"]) == {"phantom-007"} and explicit["train"].num_rows == 32
    with pytest.raises(ValueError, match="both split 'train' and split 'val'"):
        split_by_patient(slices, {"train": ["phantom-000"], "val": ["phantom-000"]})
    with pytest.raises(ValueError, match="not in the dataset"):
        split_by_patient(slices, {"train": ["phantom-999"]})


def test_cache_hit_is_fast_and_invalidated_by_file_changes(phantom_trees, tmp_path):
    tree = phantom_trees["msd"]
    first = load_brats_slices(tree, cache_dir=tmp_path, **SMALL)
    start = time.perf_counter()
    second = load_brats_slices(tree, cache_dir=tmp_path, **SMALL)
    assert time.perf_counter() - start < 0.5
    np.testing.assert_array_equal(columns(first)["image"], columns(second)["image"])
    entries = [p.name for p in tmp_path.iterdir()]
    assert len(entries) == 1 and not any(".tmp-" in name for name in entries)
    load_brats_slices(tree, cache_dir=tmp_path, label="enhancing_tumor", **SMALL)
    assert len(list(tmp_path.iterdir())) == 2  # other arguments, other entry
    image = next((tree / "imagesTr").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    load_brats_slices(tree, cache_dir=tmp_path, **SMALL)
    assert len(list(tmp_path.iterdir())) == 3  # a modified input file is a new key


def test_num_proc_gives_the_same_dataset(phantom_trees):
    tree = phantom_trees["brats2021"]
    serial = columns(load_brats_slices(tree, cache_dir=False, **SMALL))
    parallel = columns(load_brats_slices(tree, cache_dir=False, num_proc=2, **SMALL))
    for name in ("image", "mask", "slice_index", "patient_id"):
        np.testing.assert_array_equal(serial[name], parallel[name])


def test_features_and_torch_dtypes():
    slices = make_phantom_slices(8, size=16)
    assert slices.features["mask"].dtype == "uint8" and slices.features["image"].shape == (1, 16, 16)
    assert slices.features["slice_index"].dtype == "int32" and slices.features["source"].dtype == "string"
    assert slices.with_format("torch")[0]["mask"].dtype == torch.int64  # datasets' documented promotion
    batch = collate_slices([slices.with_format("numpy")[i] for i in range(4)])
    assert batch["image"].shape == (4, 1, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].dtype == torch.uint8 and batch["tumour_area"].dtype == torch.int32
    assert batch["patient_id"] == ["phantom-000"] * 4


def test_phantom_slices_are_fast_and_well_formed():
    start = time.perf_counter()
    slices = make_phantom_slices(64, size=64, num_classes=4, seed=1)
    assert time.perf_counter() - start < 1.0
    data = columns(slices)
    assert data["image"].shape == (64, 1, 64, 64) and data["image"].min() == 0 and data["image"].max() == 1
    assert set(np.unique(data["mask"])) == {0, 1, 2, 3}
    assert (data["tumour_area"] == np.count_nonzero(data["mask"], axis=(1, 2))).all() and (data["tumour_area"] > 0).all()
    assert len(set(data["patient_id"])) == 4
    np.testing.assert_array_equal(columns(make_phantom_slices(64, size=64, num_classes=4, seed=1))["image"], data["image"])


def test_cli_prepare_writes_atomically(phantom_trees, tmp_path, capsys):
    out = tmp_path / "prepared"
    argv = ["prepare", "brats", str(phantom_trees["brats2021"]), "--out", str(out), "--size", "32", "--depth", "16", "--parquet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "BraTS2021_00001:" in printed and "tumour area histogram" in printed
    assert {p.name for p in out.iterdir()} == {"dataset", "area_histogram.png", "summary.txt", "slices.parquet"}
    assert (out / "area_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--min-tumour-area", "30"]) == 0
    from datasets import load_from_disk

    assert min(load_from_disk(str(out / "dataset"))["tumour_area"]) >= 30
    failing = tmp_path / "never"
    assert main(["prepare", "brats", str(tmp_path / "missing"), "--out", str(failing)]) == 2
    assert not failing.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
