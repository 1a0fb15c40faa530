"""Broken models and settings end with a clear error instead of garbage with exit code 0: non-finite or missing
weights at load time, non-finite decodings while sampling, absurd temperatures at the command line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from model_helpers import TINY_CONFIG
from reliability_helpers import run_cli
from safetensors.torch import load_file, save_file

from hvae_pipeline import GaussianLatentPrior, HVAEModel, HVAEPipeline
from hvae_pipeline.cli import generate
from hvae_pipeline.hub.weights_check import CorruptWeightsError

WEIGHTS = "diffusion_pytorch_model.safetensors"


def edited_copy(folder: Path, destination: Path, component: str, edit: Callable[[dict], None]) -> Path:
    """Copy the saved pipeline ``folder`` to ``destination`` and ``edit`` the state dict of one component's file."""
    shutil.copytree(folder, destination)
    path = destination / component / WEIGHTS
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)
    return destination


def first_weight(tensors: dict) -> str:
    return sorted(tensors)[0]


@pytest.fixture
def quiet_pipeline() -> HVAEPipeline:
    torch.manual_seed(0)
    pipeline = HVAEPipeline(HVAEModel(**TINY_CONFIG))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------------ at load time
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_loading_non_finite_weights_fails(tiny_pipeline_folder, tmp_path, value):
    def poison(tensors):
        tensors[first_weight(tensors)][0] = value

    folder = edited_copy(tiny_pipeline_folder, tmp_path / "broken", "model", poison)
    name = first_weight(load_file(folder / "model" / WEIGHTS))
    with pytest.raises(CorruptWeightsError, match="NaN or infinite values") as error:
        HVAEPipeline.from_pretrained(str(folder))
    assert isinstance(error.value, OSError)
    assert f"weights of 'model' in {folder / 'model'}" in str(error.value)
    assert f"1 affected tensor ({name})" in str(error.value) and "load an earlier checkpoint" in str(error.value)


def test_loading_a_weights_file_without_a_tensor_fails(tiny_pipeline_folder, tmp_path):
    removed = []

    def drop(tensors):
        removed.append(first_weight(tensors))
        del tensors[removed[0]]

    folder = edited_copy(tiny_pipeline_folder, tmp_path / "truncated", "model", drop)
    with pytest.raises(CorruptWeightsError, match=rf"do not match its config.json: 1 missing tensor \({removed[0]}\)"):
        HVAEPipeline.from_pretrained(str(folder))


def test_loading_a_weights_file_with_foreign_tensors_fails(tiny_pipeline_folder, tmp_path):
    def add(tensors):
        tensors["head.weight"] = torch.zeros(2)
        tensors["tail.weight"] = torch.zeros(2)

    folder = edited_copy(tiny_pipeline_folder, tmp_path / "extra", "model", add)
    with pytest.raises(CorruptWeightsError, match=r"2 unexpected tensors \(head.weight, tail.weight\)"):
        HVAEPipeline.from_pretrained(str(folder))


def test_loading_a_non_finite_latent_prior_fails(tiny_pipeline_folder, tmp_path):
    pipeline = HVAEPipeline.from_pretrained(str(tiny_pipeline_folder))
    HVAEPipeline(pipeline.model, GaussianLatentPrior(pipeline.model.latent_shape)).save_pretrained(tmp_path / "fitted")
    assert HVAEPipeline.from_pretrained(str(tmp_path / "fitted")).latent_prior is not None  # healthy: loads

    def poison(tensors):
        tensors["mean"][3] = float("inf")

    folder = edited_copy(tmp_path / "fitted", tmp_path / "broken", "latent_prior", poison)
    with pytest.raises(CorruptWeightsError, match=r"weights of 'latent_prior' .* 1 affected tensor \(mean\)"):
        HVAEPipeline.from_pretrained(str(folder))


def test_generate_reports_a_broken_model_and_writes_nothing(tiny_pipeline_folder, tmp_path, capsys):
    def poison(tensors):
        tensors[first_weight(tensors)][0] = float("nan")

    folder = edited_copy(tiny_pipeline_folder, tmp_path / "broken", "model", poison)
    out = tmp_path / "out"
    code, err = run_cli(generate.main, ["--model", str(folder), "--num-samples", "2", "--out", str(out)], capsys)
    assert code == 2 and "hvae-generate: error: the weights of 'model'" in err and "NaN or infinite" in err
    assert "Traceback" not in err and not out.exists()


# ------------------------------------------------------------------------------------------------ while sampling
def test_sampling_with_an_overflowing_temperature_fails(quiet_pipeline):
    with pytest.raises(ValueError, match=r"NaN or infinite values: the latents reach \|z\| = .*lower the temperature"):
        quiet_pipeline(num_samples=2, temperature=1e30, output_type="np")


def test_sampling_and_reconstructing_with_non_finite_weights_fail(quiet_pipeline):
    with torch.no_grad():
        next(quiet_pipeline.model.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="the model's weights hold NaN or infinite values"):
        quiet_pipeline(num_samples=2, output_type="np")
    images = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="the model's weights hold NaN or infinite values"):
        quiet_pipeline.reconstruct(images)


def test_sampling_from_a_non_finite_fitted_prior_fails(quiet_pipeline):
    prior = GaussianLatentPrior(quiet_pipeline.model.latent_shape)
    prior.mean[0] = float("nan")
    pipeline = HVAEPipeline(quiet_pipeline.model, prior)
    pipeline.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="the latents are not finite: the temperature or the fitted latent prior"):
        pipeline(num_samples=1, output_type="np", prior="fitted")


# ------------------------------------------------------------------------------------------------ at the command line
@pytest.mark.parametrize("temperature", ["1e30", "nan", "inf", "-inf", "0", "-1", "100.5"])
def test_generate_refuses_absurd_temperatures(tiny_pipeline_folder, tmp_path, capsys, temperature):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_pipeline_folder), "--out", str(out), f"--temperature={temperature}"]
    code, err = run_cli(generate.main, argv, capsys)
    assert code == 2 and "--temperature must be in (0, 100], got" in err and "1 samples the prior as trained" in err
    assert not out.exists()


def test_generate_accepts_the_largest_temperature(tiny_pipeline_folder, tmp_path):
    out = tmp_path / "out"
    assert generate.main(["--model", str(tiny_pipeline_folder), "--num-samples", "1", "--out", str(out),
                          "--temperature", "100", "--min-tumour-area", "0"]) == 0
    assert (out / "manifest.csv").is_file()
