"""hvae-generate: writes exactly N pairs with a matching manifest, atomically, and rejects bad arguments."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch

from hvae_pipeline import GaussianLatentPrior, HVAEModel, HVAEPipeline
from hvae_pipeline.cli.generate import main


@pytest.fixture
def saved_pipeline(tiny_config, tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "pipeline"
    HVAEPipeline(HVAEModel(**tiny_config)).save_pretrained(folder)
    return folder


def read_manifest(folder):
    with open(folder / "manifest.csv") as handle:
        return list(csv.DictReader(handle))


def test_png_output_matches_manifest(saved_pipeline, tmp_path):
    out = tmp_path / "samples"
    assert main(["--model", str(saved_pipeline), "--num-samples", "5", "--out", str(out), "--seed", "3"]) == 0
    rows = read_manifest(out)
    assert len(rows) == 5
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r["image"].split("/")[1] for r in rows)
    for row in rows:
        mask = np.array(PIL.Image.open(out / row["mask"]))
        assert int(row["tumour_area"]) == int((mask > 0).sum())
        assert np.array(PIL.Image.open(out / row["image"])).shape == (16, 16)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 3 and len(manifest["samples"]) == 5
    assert (out / "preview.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".samples")]  # no staging folder left


def test_same_seed_same_files_and_overwrite_rules(saved_pipeline, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert main(["--model", str(saved_pipeline), "--num-samples", "3", "--out", str(out)]) == 0
    for name in ("sample_00000.png", "sample_00002.png"):
        assert (first / "images" / name).read_bytes() == (second / "images" / name).read_bytes()
    with pytest.raises(SystemExit) as refused:
        main(["--model", str(saved_pipeline), "--num-samples", "3", "--out", str(first)])
    assert refused.value.code == 2
    assert main(["--model", str(saved_pipeline), "--num-samples", "2", "--out", str(first), "--overwrite"]) == 0
    assert len(read_manifest(first)) == 2 and len(list((first / "images").iterdir())) == 2


def test_nifti_and_dataset_formats(saved_pipeline, tmp_path):
    from datasets import load_from_disk

    nifti = tmp_path / "nifti"
    assert main(["--model", str(saved_pipeline), "--num-samples", "2", "--out", str(nifti), "--format", "nifti"]) == 0
    rows = read_manifest(nifti)
    mask = np.asarray(nib.load(nifti / rows[0]["mask"]).dataobj)
    assert mask.shape == (16, 16, 1) and int(rows[0]["tumour_area"]) == int((mask > 0).sum())
    dataset_dir = tmp_path / "dataset"
    assert main(["--model", str(saved_pipeline), "--num-samples", "3", "--out", str(dataset_dir), "--format", "dataset"]) == 0
    dataset = load_from_disk(str(dataset_dir / "dataset"))
    assert len(dataset) == 3
    assert np.array(dataset[0]["image"]).shape == (1, 16, 16)
    assert [row["tumour_area"] for row in dataset] == [int(r["tumour_area"]) for r in read_manifest(dataset_dir)]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--num-samples", "0"], "--num-samples"),
        (["--mask-threshold", "2"], "--mask-threshold"),
        (["--batch-size", "0"], "--batch-size"),
        (["--format", "jpeg"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_message(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path / "x"), *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_model_folder_is_reported(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing"), "--num-samples", "1", "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prior_choice_is_applied_and_recorded(saved_pipeline, tmp_path, capsys):
    assert main(["--model", str(saved_pipeline), "--num-samples", "1", "--out", str(tmp_path / "o"),
                 "--prior", "fitted"]) == 2
    assert "--prior fitted: " in capsys.readouterr().err and not (tmp_path / "o").exists()
    pipeline = HVAEPipeline.from_pretrained(str(saved_pipeline))
    shifted = GaussianLatentPrior(pipeline.model.latent_shape)
    shifted.set_moments(torch.full_like(shifted.mean, 2.0), torch.eye(shifted.mean.numel()))
    HVAEPipeline(pipeline.model, shifted).save_pretrained(tmp_path / "fitted")
    written = {}
    for prior in ("auto", "standard"):
        out = tmp_path / prior
        assert main(["--model", str(tmp_path / "fitted"), "--num-samples", "2", "--out", str(out), "--prior", prior]) == 0
        assert json.loads((out / "manifest.json").read_text())["settings"]["prior_used"] == {"auto": "fitted"}.get(
            prior, prior)
        written[prior] = np.array(PIL.Image.open(out / read_manifest(out)[0]["image"]))
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline.decode_latents(2.0 + torch.randn(1, *pipeline.model.latent_shape,
                                                         generator=torch.Generator().manual_seed(0)))[0]
    np.testing.assert_array_equal(written["auto"], np.round(expected[0, 0].numpy() * 255))
    assert not np.array_equal(written["auto"], written["standard"])
