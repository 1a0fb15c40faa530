"""Issue 26, cases 9-11 (data, outputs, demo): duplicated patient ids and a wrong label convention are refused by
hvae-data in one line naming the option; an RGBA picture's alpha is no image channel; NIfTI image and mask of a
one-channel pair have the same shape; a dataset export's manifest names each pair's row; the demo takes a seed typed
as text and refuses a blank upload."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch
from reliability_helpers import run_cli, untouched

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.cli import data as data_cli
from hvae_pipeline.data import load_pair_slices
from hvae_pipeline.data.phantom import write_phantom_tree
from hvae_pipeline.demo import callbacks
from hvae_pipeline.demo.uploads import DemoInputError, prepare_slice
from hvae_pipeline.outputs.export import export_samples

PAIRS = ("{case}/{case}_{n}.tif", "{case}/{case}_{n}_mask.tif")


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_folder: Path) -> HVAEPipeline:
    loaded = HVAEPipeline.from_pretrained(tiny_pipeline_folder)
    loaded.set_progress_bar_config(disable=True)
    return loaded


# ------------------------------------------------------------------------------------------------ case 9
def test_a_patient_given_twice_is_refused_in_one_line(tmp_path, capsys):
    write_phantom_tree(tmp_path / "lgg", "lgg", num_cases=1)
    with untouched(tmp_path):
        code, err = run_cli(data_cli.main, ["prepare", "pairs", str(tmp_path / "lgg"), "--out", str(tmp_path / "out"),
                                            "--image-glob", PAIRS[0], "--mask-glob", PAIRS[1], "--patients",
                                            "TCGA_CS_0001", "TCGA_CS_0001"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("hvae-data: error: --patients: TCGA_CS_0001 given more than once; "
                                            "list each patient once")


# ------------------------------------------------------------------------------------------------ case 11: option name
def test_a_wrong_label_convention_names_the_option(tmp_path, capsys):
    with untouched(tmp_path):
        code, err = run_cli(data_cli.main, ["prepare", "brats", str(tmp_path), "--out", str(tmp_path / "out"),
                                            "--label-convention", "brats2019"], capsys)
    assert code == 2 and "argument --label-convention: invalid choice: 'brats2019'" in err
    assert "label_convention=" not in err


# ------------------------------------------------------------------------------------------------ case 10
@pytest.mark.parametrize("alpha", [255, 0])  # opaque, and fully transparent
def test_the_alpha_of_an_rgba_picture_is_no_image_channel(tmp_path, alpha):
    write_phantom_tree(tmp_path, "lgg", num_cases=1)
    from_rgb = load_pair_slices(tmp_path, *PAIRS, size=16, cache_dir=False).with_format("numpy")[:]["image"]
    for picture in (tmp_path / "TCGA_CS_0001").glob("*_[0-9].tif"):
        rgb = np.asarray(PIL.Image.open(picture))
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), alpha, np.uint8)], axis=2)
        picture.unlink()
        PIL.Image.fromarray(rgba, "RGBA").save(picture.with_suffix(".png"))
    with_alpha = load_pair_slices(tmp_path, "{case}/{case}_{n}.png", PAIRS[1], size=16,
                                  cache_dir=False).with_format("numpy")[:]["image"]
    assert with_alpha.shape[1] == 3  # red, green and blue: the alpha became no 4th channel
    np.testing.assert_array_equal(with_alpha, from_rgb)


# ------------------------------------------------------------------------------------------------ case 11: outputs
def draw(pipeline: HVAEPipeline, count: int):
    return pipeline(num_samples=count, generator=torch.Generator().manual_seed(0), output_type="np")


def test_nifti_image_and_mask_of_a_one_channel_pair_have_the_same_shape(pipeline, tmp_path):
    export_samples(draw(pipeline, 1), tmp_path / "out", "nifti")
    image = nib.load(tmp_path / "out" / "images" / "sample_00000.nii.gz")
    mask = nib.load(tmp_path / "out" / "masks" / "sample_00000.nii.gz")
    assert image.shape == mask.shape == (16, 16, 1)


def test_a_dataset_exports_manifest_names_each_pairs_row(pipeline, tmp_path):
    from datasets import load_from_disk

    export_samples(draw(pipeline, 2), tmp_path / "out", "dataset", pipeline=pipeline, settings={"seed": 0})
    with open(tmp_path / "out" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["image"], row["mask"]) for row in rows] == [("dataset[0]['image']", "dataset[0]['mask']"),
                                                            ("dataset[1]['image']", "dataset[1]['mask']")]
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert [int(area) for area in dataset["tumour_area"]] == [int(row["tumour_area"]) for row in rows]


# ------------------------------------------------------------------------------------------------ case 11: demo
def test_the_demo_takes_a_seed_typed_as_text(pipeline):
    settings = dict(num_samples=1, temperature=1.0, mask_threshold=0.5, min_tumour_area=0)
    typed = callbacks.generate_samples(pipeline, seed="7.0", **settings)
    picked = callbacks.generate_samples(pipeline, seed=7, **settings)
    assert typed.seed == 7 and np.array_equal(typed.images, picked.images)
    with pytest.raises(DemoInputError, match=r"Seed must be a whole number, got '7.5'"):
        callbacks.generate_samples(pipeline, seed="7.5", **settings)


def test_a_blank_upload_is_refused_not_reconstructed(tmp_path):
    black = tmp_path / "black.png"
    PIL.Image.new("L", (32, 32)).save(black)
    with untouched(tmp_path), pytest.raises(DemoInputError, match=r"black.png is blank: every pixel is 0\. Upload"):
        prepare_slice(black, 0, image_channels=1, sample_size=16)
