"""The Python API's temperature, the demo's fields and uploads, and hvae-evaluate's numbers: bad values end with a
clear message (exit code 2 at the command line) before any sampling, decoding or data loading."""

from __future__ import annotations

import math
from pathlib import Path

import PIL.Image
import pytest
from reliability_helpers import run_cli, untouched

from hvae_pipeline.demo import callbacks
from hvae_pipeline.demo.uploads import MAX_SIDE, DemoInputError, prepare_slice
from hvae_pipeline import HVAEPipeline
from hvae_pipeline.cli import evaluate


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_folder: Path) -> HVAEPipeline:
    loaded = HVAEPipeline.from_pretrained(tiny_pipeline_folder)
    loaded.set_progress_bar_config(disable=True)
    return loaded


# ------------------------------------------------------------------------------------------------ Python API
@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, math.nan, math.inf, True, "1.0", None])
def test_api_temperature_must_be_a_finite_number_above_zero(pipeline, temperature):
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0 .*got"):
        pipeline(num_samples=1, temperature=temperature, output_type="np")


# ------------------------------------------------------------------------------------------------ demo fields
@pytest.mark.parametrize("field, value, message", [
    ("seed", "seven", "Seed must be a number, got 'seven'"),
    ("seed", None, "Seed must be a number, got None"),
    ("num_samples", math.inf, "Number of samples must be a finite number"),
    ("temperature", "hot", "Temperature must be a number, got 'hot'"),
    ("temperature", 0.0, "Temperature must be between 0 and 2, above 0; got 0"),
    ("mask_threshold", math.nan, "Mask threshold must be a finite number"),
])
def test_demo_sample_fields_refuse_non_numbers(pipeline, field, value, message):
    settings = dict(seed=0, num_samples=2, temperature=1.0, mask_threshold=0.5, min_tumour_area=0)
    settings[field] = value
    with pytest.raises(DemoInputError, match=message.replace("(", r"\(")):
        callbacks.generate_samples(pipeline, **settings)


def test_decompression_bomb_upload_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    PIL.Image.new("L", (MAX_SIDE * 4, MAX_SIDE * 4)).save(bomb)  # ~60 kB on disk, 67 megapixels decoded
    decoded = []
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    with untouched(tmp_path), pytest.raises(DemoInputError, match=f"bomb.png is {MAX_SIDE * 4}x{MAX_SIDE * 4} pixels"):
        prepare_slice(bomb, 0, image_channels=1, sample_size=16)
    assert decoded == []


def test_beyond_pils_own_bomb_limit_is_a_clear_refusal(tmp_path, monkeypatch):
    picture = tmp_path / "big.png"
    PIL.Image.new("L", (64, 64)).save(picture)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # PIL raises DecompressionBombError past twice this
    with pytest.raises(DemoInputError, match="big.png: not a readable PNG/TIF picture .*decompression bomb"):
        prepare_slice(picture, 0, image_channels=1, sample_size=16)


# ------------------------------------------------------------------------------------------------ hvae-evaluate
PHANTOM = ["--data", "phantom", "--size", "16", "--num-phantom-slices", "32", "--test-patients", "phantom-001",
           "--no-progress", "--num-threads", "1"]


@pytest.mark.parametrize("arguments, message", [
    (["image-quality", "--seed", str(2**64)], f"seed {2**64} is too large: seeds must be <= {2**63 - 1}"),
    (["augmentation", "--train-patients", "phantom-000", "--seeds", "0", str(2**70)], "is too large"),
    (["augmentation", "--train-patients", "phantom-000", "--learning-rate", "inf"],
     "--learning-rate must be a finite number > 0, got inf"),
    (["likelihood", "--seed", "huge"], "argument --seed: invalid int value: 'huge'"),
    (["image-quality", "--no-tstr", "--mask-threshold", "nan"], "mask_threshold must be in (0, 1), got nan"),
])
def test_evaluate_refuses_bad_numbers_before_loading_data(tmp_path, capsys, arguments, message):
    out = tmp_path / "out"
    command, *rest = arguments
    with untouched(tmp_path):
        code, err = run_cli(evaluate.main, [command, "--out", str(out), *PHANTOM, *rest], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert "Real data" not in capsys.readouterr().out
