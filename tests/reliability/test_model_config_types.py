"""Issue 26, cases 7, 8 and 11 (model parts): integers are integers at every entry point (the model's call, its
constructor, a saved config.json, hvae-train's overrides), a wrong-typed config.json entry fails with one error naming
the key and the file (from_pretrained of the model and of the pipeline, hvae-generate), and a non-finite or textual
model.step_size names its key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_helpers import TINY_CONFIG
from reliability_helpers import TINY_TRAINING, run_cli, untouched

from hvae_pipeline import HVAEModel, HVAEPipeline, LSGANModel
from hvae_pipeline.cli import generate
from hvae_pipeline.training import train_hvae


@pytest.fixture(scope="module")
def model() -> HVAEModel:
    torch.manual_seed(0)
    return HVAEModel(**TINY_CONFIG).eval()


def pair(model: HVAEModel) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.sample_size
    return torch.rand(2, 1, size, size), (torch.rand(2, size, size) > 0.5).long()


def test_a_fractional_n_leapfrog_in_a_call_names_it(model):
    with pytest.raises(ValueError, match=r"`n_leapfrog` must be an integer >= 0, got 1.5"):
        model(*pair(model), n_leapfrog=1.5)


def test_a_fractional_n_samples_names_it(model):
    with pytest.raises(ValueError, match=r"`n_samples` must be an integer >= 1, got 2.5"):
        model.estimate_log_likelihood(*pair(model), n_samples=2.5)


@pytest.mark.parametrize("key, value, expected", [
    ("n_leapfrog", 2.5, "an integer >= 0"),
    ("sample_size", "16", "an integer >= 1"),
    ("step_size", "0.01", "a finite number"),
    ("block_out_channels", [8, 16.0], "a non-empty list of integers >= 1"),
    ("learn_step_size", "yes", "true or false"),
    ("decoder_block_out_channels", [16, 0], "null or a non-empty list of integers >= 1"),
])
def test_a_wrong_typed_constructor_argument_names_the_key(key, value, expected):
    with pytest.raises(ValueError, match=rf"^`{key}`={value!r}: expected {expected}$".replace("[", r"\[")):
        HVAEModel(**{**TINY_CONFIG, key: value})


def test_the_lsgan_checks_its_types_too():
    with pytest.raises(ValueError, match=r"`discriminator_noise_std`='0.1': expected a finite number >= 0"):
        LSGANModel(sample_size=16, block_out_channels=(8, 16), attention_levels=(False, False),
                   discriminator_noise_std="0.1")


@pytest.fixture
def saved_with(tiny_pipeline_folder, tmp_path):
    """A copy of the tiny saved pipeline whose model config.json has one entry replaced."""

    def save(key: str, value) -> Path:
        folder = shutil.copytree(tiny_pipeline_folder, tmp_path / "pipeline")
        config_file = folder / "model" / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), key: value}))
        return folder

    return save


@pytest.mark.parametrize("key, value, expected", [
    ("n_leapfrog", 2.5, "an integer >= 0"),
    ("sample_size", "32", "an integer >= 1"),
    ("step_size", "0.01", "a finite number"),
])
def test_a_wrong_typed_saved_config_names_the_key_and_the_file(saved_with, key, value, expected):
    folder = saved_with(key, value)
    message = f"{folder / 'model' / 'config.json'}: `{key}`={value!r}: expected {expected}"
    for load in (lambda: HVAEModel.from_pretrained(folder / "model"), lambda: HVAEPipeline.from_pretrained(folder)):
        with pytest.raises((ValueError, OSError)) as error:  # the pipeline's loader reports any failure as OSError
            load()
        assert message in str(error.value)


def test_hvae_generate_reports_a_wrong_typed_saved_config_in_one_line(saved_with, tmp_path, capsys):
    folder = saved_with("sample_size", "32")
    with untouched(tmp_path):
        code, err = run_cli(generate.main, ["--model", str(folder), "--num-samples", "1", "--out",
                                            str(tmp_path / "out")], capsys)
    assert code != 0 and "Traceback" not in err  # above the error line: diffusers' loading progress bar
    assert "config.json: `sample_size`='32': expected an integer >= 1" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("override, message", [
    ("model.n_leapfrog=2.5", "model.n_leapfrog=2.5: expected an integer >= 0"),
    ("model.step_size=nan", "model.step_size='nan': expected a finite number"),
    ("model.step_size=.nan", "model.step_size=nan: expected a finite number"),
    ("model.layers_per_block=1.0", "model.layers_per_block=1.0: expected an integer >= 1"),
])
def test_hvae_train_names_a_bad_model_key_and_writes_nothing(tmp_path, capsys, override, message):
    with untouched(tmp_path):
        code, err = run_cli(train_hvae.main, [*TINY_TRAINING, f"training.output_dir={tmp_path / 'run'}", override],
                            capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
