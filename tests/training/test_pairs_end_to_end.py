"""A folder of 2D image/mask pairs, end to end with no code: train a generator on it (``data.kind: pairs``), then
compare augmentation with it (``hvae-evaluate augmentation --data pairs``). SYNTHETIC ellipse pictures, 32 x 32 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.cli.evaluate import main as evaluate
from hvae_pipeline.evaluation import RealDataSpec, load_real_split
from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.data import load_slice_dataset
from hvae_pipeline.training.command_line import check_before_data
from hvae_pipeline.training.train_hvae import HVAERun

CASES = [f"case_{number}" for number in range(6)]
TRAIN_CASES, TEST_CASES = CASES[:4], CASES[4:]
SLICES_PER_CASE = 6  # slice 0 of every case has no tumour: the loaders drop it (min_tumour_area = 1)
PICTURE_SIDE = 48  # resized to SIZE by the loaders
SIZE = 32
IMAGE_GLOB, MASK_GLOB = "{case}/{case}_{index}.png", "{case}/{case}_{index}_mask.png"
# The phantom-tiny network (32 x 32, two levels) for a few steps, two of them with the flow on.
TINY_TRAINING = ["--config", "phantom-tiny", "data.kind=pairs", f'data.image_glob="{IMAGE_GLOB}"',
                 f'data.mask_glob="{MASK_GLOB}"', f"data.patients=[{','.join(TRAIN_CASES)}]", "training.max_steps=4",
                 "training.vae_warmup_steps=2", "training.batch_size=8", "training.log_steps=1",
                 "training.sample_steps=1000", "training.checkpointing_steps=1000", "training.num_threads=1"]
# A two-level U-Net for one epoch; one seed; every sample kept (a 4-step generator draws mostly empty masks).
TINY_AUGMENTATION = ["--counts", "0", "8", "--num-seeds", "1", "--size", str(SIZE), "--unet-channels", "4", "8",
                     "--unet-res-units", "1", "--epochs", "1", "--batch-size", "8",
                     "--sampling-min-tumour-area", "0", "--no-progress", "--num-threads", "1",
                     "--train-patients", *TRAIN_CASES, "--test-patients", *TEST_CASES]


def ellipse_picture(rng: np.random.Generator, with_tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """A grey ``(PICTURE_SIDE, PICTURE_SIDE)`` uint8 "brain" with a bright elliptic tumour, and its 0/255 mask."""
    rows, cols = np.mgrid[0:PICTURE_SIDE, 0:PICTURE_SIDE] - PICTURE_SIDE / 2
    brain = (rows / 20) ** 2 + (cols / 16) ** 2 <= 1
    picture = np.where(brain, 90 + rng.normal(0, 8, brain.shape), 5)
    mask = np.zeros(brain.shape, dtype=bool)
    if with_tumour:
        centre = rng.uniform(-8, 8, size=2)
        radii = rng.uniform(3, 7, size=2)
        mask = ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1
        picture = np.where(mask, 210 + rng.normal(0, 8, brain.shape), picture)
    return np.clip(picture, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_pair_folder(root: Path, rgb: bool) -> Path:
    """Write ``root/<case>/<case>_<index>.png`` pictures and ``..._mask.png`` 0/255 masks for :data:`CASES`.

    RGB pictures hold noise in red, the grey picture in green and its negative in blue.
    """
    rng = np.random.default_rng(0)
    for case in CASES:
        (root / case).mkdir(parents=True)
        for index in range(SLICES_PER_CASE):
            picture, mask = ellipse_picture(rng, with_tumour=index > 0)
            if rgb:
                noise = rng.integers(0, 256, picture.shape, dtype=np.uint8)
                picture = np.stack([noise, picture, 255 - picture], axis=-1)
            PIL.Image.fromarray(picture).save(root / case / f"{case}_{index}.png")
            PIL.Image.fromarray(mask).save(root / case / f"{case}_{index}_mask.png")
    return root


@pytest.fixture(autouse=True)
def _slice_cache_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HVAE_PIPELINE_CACHE", str(tmp_path / "slice-cache"))  # not the user's ~/.cache


def augmentation_records(out: Path) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))}


def test_grey_png_folder_trains_a_generator_then_runs_the_augmentation_comparison(tmp_path):
    root = write_pair_folder(tmp_path / "slices", rgb=False)
    run = tmp_path / "run"
    assert train_hvae.main([*TINY_TRAINING, f"data.root={root}", f"training.output_dir={run}"]) == 0
    pipeline = HVAEPipeline.from_pretrained(run / "pipeline")
    # Trained on the 5 tumour slices of each of the 4 train cases (slice 0, without tumour, is left out).
    assert pipeline.latent_prior.config.num_slices == 4 * (SLICES_PER_CASE - 1)

    out = tmp_path / "comparison"
    code = evaluate(["augmentation", "--generator", f"HVAE={run / 'pipeline'}", "--data", "pairs", "--root", str(root),
                     "--image-glob", IMAGE_GLOB, "--mask-glob", MASK_GLOB, *TINY_AUGMENTATION, "--out", str(out)])
    assert code == 0
    records = augmentation_records(out)
    assert sorted(records) == ["augmentation__HVAE__n8__seed0.json", "augmentation__real-only__n0__seed0.json"]
    for record in records.values():
        assert record["num_real_train_slices"] == 4 * (SLICES_PER_CASE - 1)
        assert record["num_test_slices"] == 2 * (SLICES_PER_CASE - 1)
        assert 0.0 <= record["dice_mean"] <= 1.0
        data = record["settings"]["data"]
        assert data["kind"] == "pairs" and data["root"] == str(root)
        assert (data["image_glob"], data["mask_glob"], data["channels"]) == (IMAGE_GLOB, MASK_GLOB, None)
        assert data["train_patients"] == TRAIN_CASES and data["test_patients"] == TEST_CASES
    assert records["augmentation__HVAE__n8__seed0.json"]["num_synthetic"] == 8
    assert "| HVAE |" in (out / "augmentation.md").read_text()


def test_rgb_png_folder_uses_the_named_channels_for_training_and_evaluation(tmp_path):
    root = write_pair_folder(tmp_path / "slices", rgb=True)
    run = tmp_path / "run"
    # Blue (the negative) then green (the picture): one modality name per kept channel.
    channels = ["data.channels=[2, 1]", "data.modalities=[negative, picture]"]
    assert train_hvae.main([*TINY_TRAINING, *channels, f"data.root={root}", f"training.output_dir={run}"]) == 0
    assert HVAEPipeline.from_pretrained(run / "pipeline").model.config.image_channels == 2

    spec = RealDataSpec("pairs", tuple(TRAIN_CASES), tuple(TEST_CASES), root=str(root), image_glob=IMAGE_GLOB,
                        mask_glob=MASK_GLOB, channels=(2, 1), size=SIZE)
    real = load_real_split(spec)
    # Per-channel min-max scaling of a picture and its negative: the two kept channels add up to 1 everywhere.
    assert real.test_images.shape == (2 * (SLICES_PER_CASE - 1), 2, SIZE, SIZE)
    np.testing.assert_allclose(real.test_images.sum(dim=1).numpy(), 1.0, atol=1e-5)
    # 0/255 masks are binarised.
    assert set(real.test_masks.unique().tolist()) == {0, 1}

    out = tmp_path / "comparison"
    code = evaluate(["augmentation", "--generator", f"HVAE={run / 'pipeline'}", "--data", "pairs", "--root", str(root),
                     "--image-glob", IMAGE_GLOB, "--mask-glob", MASK_GLOB, "--channels", "2", "1",
                     *TINY_AUGMENTATION, "--out", str(out)])
    assert code == 0
    record = augmentation_records(out)["augmentation__HVAE__n8__seed0.json"]
    assert record["settings"]["data"]["channels"] == [2, 1]


def test_rgb_folder_without_channels_or_modalities_for_each_is_refused_before_training(tmp_path):
    root = write_pair_folder(tmp_path / "slices", rgb=True)
    data = load_config("phantom-tiny", ["data.kind=pairs", f"data.root={root}", f'data.image_glob="{IMAGE_GLOB}"',
                                        f'data.mask_glob="{MASK_GLOB}"'])["data"]
    with pytest.raises(ValueError, match=r"data.modalities=\['flair'\] names 1 image channel\(s\) but the pairs "
                                         r"slices have 3.*data.channels"):
        load_slice_dataset(data, None)


def test_the_documented_pairs_config_needs_only_a_folder():
    config = load_config("pairs-128", ["data.root=my_slices"])
    check_before_data(HVAERun(config))  # model.* and data.size agree: the run would start
    assert config["data"]["kind"] == "pairs" and config["data"]["channels"] == [1]


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.root=somewhere", 'data.image_glob="{case}.png"'], "needs data.image_glob and data.mask_glob"),
    (["data.root=somewhere", 'data.image_glob="{case}.png"', 'data.mask_glob="{case}_m.png"', "data.channels=[-1]"],
     r"data.channels=\[-1\]: expected a non-empty list of channel numbers >= 0"),
    (["data.root=somewhere", "data.image_glob={case}/{case}.png"], "not valid YAML.*quote text"),
])
def test_pairs_training_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("phantom-tiny", ["data.kind=pairs", *overrides])


@pytest.mark.parametrize(("arguments", "message"), [
    (["--data", "pairs", "--root", "somewhere", "--image-glob", IMAGE_GLOB], "needs --image-glob and --mask-glob"),
    (["--data", "pairs", "--root", "somewhere", "--image-glob", IMAGE_GLOB, "--mask-glob", MASK_GLOB,
      "--modalities", "flair"], "--modalities: not used by data kind 'pairs'"),
    (["--data", "phantom", "--channels", "1"], "apply to data kind 'pairs' only"),
])
def test_evaluate_refuses_pair_options_that_do_not_fit_the_data_kind(tmp_path, capsys, arguments, message):
    code = evaluate(["image-quality", "--generator", "HVAE=bundled", *arguments, "--test-patients", "case_4",
                     "--out", str(tmp_path / "out")])
    assert code == 2 and message in capsys.readouterr().err


def test_only_pairs_data_carry_the_pair_fields_in_their_identity():
    """Records written before ``mask_glob``/``channels`` existed keep matching the other kinds' identity."""
    phantom = RealDataSpec("phantom", ("phantom-000",), ("phantom-001",))
    assert "mask_glob" not in phantom.identity() and "channels" not in phantom.identity()
    pairs = RealDataSpec("pairs", ("a",), ("b",), root="r", image_glob=IMAGE_GLOB, mask_glob=MASK_GLOB, channels=(1,))
    assert pairs.identity()["mask_glob"] == MASK_GLOB and pairs.identity()["channels"] == [1]
