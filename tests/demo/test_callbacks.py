"""The demo's callbacks as plain functions: sampling, interpolation, reconstruction, the download archive, model info."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

from hvae_pipeline.demo import callbacks
from hvae_pipeline.demo.callbacks import DemoInputError
from hvae_pipeline.models import GaussianLatentPrior
from hvae_pipeline.pipeline import HVAEPipeline, spherical_interpolation
from hvae_pipeline.outputs.visualization import CLASS_COLOURS


def _generate(pipeline: HVAEPipeline, seed: int = 0, num_samples: int = 3, **overrides) -> callbacks.SampleSet:
    settings = dict(temperature=1.0, mask_threshold=0.5, min_tumour_area=0) | overrides
    return callbacks.generate_samples(pipeline, seed, num_samples, **settings)


# ------------------------------------------------------------------------------------------------ Sample tab
def test_generate_is_seeded_and_reports_tumour_areas(tiny_pipeline: HVAEPipeline) -> None:
    first, again, other = _generate(tiny_pipeline, 7), _generate(tiny_pipeline, 7.0), _generate(tiny_pipeline, 8)

    assert first.images.shape == (3, 16, 16, 1) and first.masks.shape == (3, 16, 16)
    np.testing.assert_array_equal(first.images, again.images)  # widgets send seeds as floats: same samples
    assert not np.array_equal(first.images, other.images)
    np.testing.assert_array_equal(first.tumour_areas, (first.masks > 0).sum(axis=(1, 2)))
    assert first.seed == 7 and first.settings == {"temperature": 1.0, "mask_threshold": 0.5, "min_tumour_area": 0}


def test_the_sample_tab_starts_from_the_papers_minimum_area_at_its_slice_size() -> None:
    assert callbacks.default_min_tumour_area(128) == callbacks.default_min_tumour_area(240) == 201
    assert callbacks.default_min_tumour_area(16) == 0  # 201 of 256 px: nearly no sample would pass


def test_generate_keeps_only_masks_above_the_minimum_area(tiny_pipeline: HVAEPipeline) -> None:
    areas = _generate(tiny_pipeline, num_samples=20).tumour_areas
    threshold = int(np.median(areas))

    kept = _generate(tiny_pipeline, num_samples=4, min_tumour_area=threshold)

    assert (kept.tumour_areas >= threshold).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_samples": 65}, "Number of samples must be between 1 and 64"),
        ({"num_samples": 2.5}, "Number of samples must be a whole number"),
        ({"seed": -1}, "Seed must be between 0"),
        ({"temperature": 3.0}, "Temperature must be between 0 and 2"),
        ({"mask_threshold": 1.0}, "Mask threshold must be strictly between 0 and 1"),
        ({"min_tumour_area": 16 * 16 + 1}, "Minimum tumour area must be between 0 and 256"),
    ],
)
def test_generate_refuses_out_of_range_settings(tiny_pipeline: HVAEPipeline, overrides: dict, message: str) -> None:
    with pytest.raises(DemoInputError, match=message):
        _generate(tiny_pipeline, **overrides)


def test_generate_explains_an_unreachable_minimum_area(tiny_pipeline: HVAEPipeline) -> None:
    with pytest.raises(DemoInputError, match="lower the minimum tumour area"):
        _generate(tiny_pipeline, min_tumour_area=16 * 16, mask_threshold=0.95)


def test_gallery_shows_image_mask_and_coloured_overlay_with_areas(tiny_pipeline: HVAEPipeline) -> None:
    samples = _generate(tiny_pipeline, num_samples=2)

    gallery = callbacks.sample_gallery(samples)

    assert [caption for _, caption in gallery] == [
        caption
        for index, area in enumerate(samples.tumour_areas)
        for caption in (f"#{index + 1} image", f"#{index + 1} mask · tumour area {area} px", f"#{index + 1} overlay")
    ]
    (image, _), (mask, _), (coloured, _) = gallery[:3]
    np.testing.assert_array_equal(image, np.round(samples.images[0, ..., 0] * 255))
    np.testing.assert_array_equal(mask, np.where(samples.masks[0] > 0, 255, 0))
    tumour = samples.masks[0] > 0
    assert tumour.any() and not tumour.all(), "the tiny model's first mask should be partly tumour for this check"
    # Tumour pixels are tinted towards the first class colour (red); the rest stays the grey slice.
    assert coloured.shape == (16, 16, 3) and CLASS_COLOURS[0][0] > CLASS_COLOURS[0][1]
    assert (coloured[tumour, 0].astype(int) > coloured[tumour, 1]).all()
    np.testing.assert_array_equal(coloured[~tumour], np.repeat(image[~tumour][:, None], 3, axis=1))


# ------------------------------------------------------------------------------------------------ Explore tab
def test_interpolation_runs_from_seed_a_to_seed_b(tiny_pipeline: HVAEPipeline) -> None:
    frames = callbacks.interpolate_seeds(tiny_pipeline, 3, 4, num_frames=5, temperature=0.8, mask_threshold=0.5)

    assert len(frames) == 5 * 3
    images = [picture for picture, caption in frames if caption.endswith(" image")]
    assert [caption for _, caption in frames if caption.endswith(" image")] == [
        "seed 3 image", "t=0.25 image", "t=0.50 image", "t=0.75 image", "seed 4 image"
    ]
    for picture, seed in ((images[0], 3), (images[-1], 4)):  # the ends are the seeds' own prior samples
        latent = tiny_pipeline.prior_latents(1, torch.Generator().manual_seed(seed), 0.8)
        decoded = tiny_pipeline.decode_latents(latent)[0][0, 0].numpy()
        np.testing.assert_array_equal(picture, np.round(decoded.clip(0, 1) * 255))
    assert not np.array_equal(images[1], images[0])


def test_interpolation_follows_a_fitted_prior(tiny_pipeline: HVAEPipeline) -> None:
    latent_shape = tiny_pipeline.model.latent_shape
    prior = GaussianLatentPrior(latent_shape)
    prior.set_moments(torch.full_like(prior.mean, 1.5), 0.25 * torch.eye(prior.mean.numel()))
    pipeline = HVAEPipeline(tiny_pipeline.model, prior)
    pipeline.set_progress_bar_config(disable=True)
    frames = callbacks.interpolate_seeds(pipeline, 3, 4, num_frames=3, temperature=0.8, mask_threshold=0.5)
    images = [picture for picture, caption in frames if caption.endswith(" image")]
    for picture, seed in ((images[0], 3), (images[-1], 4)):  # the ends are the seeds' fitted-prior samples
        latent = pipeline.prior_latents(1, torch.Generator().manual_seed(seed), 0.8)
        decoded = pipeline.decode_latents(latent)[0][0, 0].numpy()
        np.testing.assert_array_equal(picture, np.round(decoded.clip(0, 1) * 255))
    # The middle frame is the fitted prior's image of the interpolated noise, so it keeps the prior's mean.
    start, end = (torch.randn(1, *latent_shape, generator=torch.Generator().manual_seed(seed)) for seed in (3, 4))
    middle = prior.from_standard_normal(0.8 * spherical_interpolation(start, end, 0.5))
    np.testing.assert_array_equal(images[1], np.round(pipeline.decode_latents(middle)[0][0, 0].numpy().clip(0, 1) * 255))


def test_interpolation_refuses_a_zero_temperature(tiny_pipeline: HVAEPipeline) -> None:
    with pytest.raises(DemoInputError, match="Temperature must be between 0.05 and 2"):
        callbacks.interpolate_seeds(tiny_pipeline, 0, 1, num_frames=3, temperature=0.0, mask_threshold=0.5)


# ------------------------------------------------------------------------------------------------ Reconstruct tab
def _write_png(path: Path, pixels: np.ndarray) -> str:
    PIL.Image.fromarray(pixels).save(path)
    return str(path)


@pytest.mark.parametrize("with_mask", [True, False])
def test_reconstruct_shows_input_mean_and_posterior_samples(
    tiny_pipeline: HVAEPipeline, tmp_path: Path, with_mask: bool
) -> None:
    rows = np.linspace(0, 60000, 24 * 24).reshape(24, 24).astype(np.uint16)  # a 16-bit slice, resized to 16x16
    slice_path = _write_png(tmp_path / "slice.png", rows)
    mask = np.zeros((24, 24), np.uint8)
    mask[8:16, 8:16] = 255
    mask_path = _write_png(tmp_path / "mask.png", mask) if with_mask else None

    gallery, notes = callbacks.reconstruct_upload(tiny_pipeline, slice_path, 0, mask_path, 3, 0, 0.5)

    titles = [caption.split(" · ")[0] for _, caption in gallery]
    inputs = ["input image", "input mask", "input overlay"] if with_mask else ["input image (no mask given)"]
    assert titles == inputs + [
        f"{draw} {kind}" for draw in ("posterior mean", "posterior sample 1", "posterior sample 2")
        for kind in ("image", "mask", "overlay")
    ]
    assert all(picture.shape[:2] == (16, 16) for picture, _ in gallery)
    assert "Resized 24x24 to 16x16 and min-max normalised (values 0..60000 mapped to 0..1)" in notes
    assert ("the model imputed it" in notes) is not with_mask
    if with_mask:
        assert "Mask values [0, 255] were read as tumour wherever non-zero." in notes
        shown_mask = gallery[1][0]  # nearest-neighbour resize of rows/columns 8..15 of 24 -> 5..10 of 16
        assert shown_mask.sum() == 6 * 6 * 255 and (shown_mask[5:11, 5:11] == 255).all()


def test_reconstruct_asks_for_an_upload(tiny_pipeline: HVAEPipeline) -> None:
    with pytest.raises(DemoInputError, match="Upload a slice"):
        callbacks.reconstruct_upload(tiny_pipeline, None, 0, None, 2, 0, 0.5)


# ------------------------------------------------------------------------------------------------ Download tab
def test_zip_holds_png_pairs_nifti_and_a_manifest(tiny_pipeline: HVAEPipeline, tmp_path: Path) -> None:
    samples = _generate(tiny_pipeline, seed=5, num_samples=3)

    path = callbacks.write_samples_zip(samples, "tiny test model", tmp_path)

    assert path.name == "hvae-samples-seed5-n3.zip" and path.is_relative_to(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # the partial file was renamed, not left over
    with zipfile.ZipFile(path) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        manifest = json.loads(archive.read("manifest.json"))
        for index, row in enumerate(rows):
            mask = np.asarray(PIL.Image.open(io.BytesIO(archive.read(row["mask"]))))
            image = np.asarray(PIL.Image.open(io.BytesIO(archive.read(row["image"]))))
            np.testing.assert_array_equal(mask, samples.masks[index])  # PNG keeps class ids exactly
            np.testing.assert_array_equal(image, np.round(samples.images[index, ..., 0] * 255))
            assert int(row["tumour_area"]) == samples.tumour_areas[index] and row["seed"] == "5"
        archive.extract("images.nii.gz", tmp_path)
        archive.extract("masks.nii.gz", tmp_path)
    assert [row["image"] for row in rows] == [f"images/sample_{i:05d}.png" for i in range(3)]
    assert manifest["model"] == "tiny test model" and manifest["settings"]["temperature"] == 1.0
    assert [sample["tumour_area"] for sample in manifest["samples"]] == [int(r["tumour_area"]) for r in rows]
    nifti_images = nib.load(tmp_path / "images.nii.gz").get_fdata(dtype=np.float32)
    nifti_masks = np.asarray(nib.load(tmp_path / "masks.nii.gz").dataobj)
    assert nifti_images.shape == (16, 16, 3, 1)
    np.testing.assert_array_equal(nifti_images[:, :, 1, 0].T, samples.images[1, ..., 0])  # exact floats
    np.testing.assert_array_equal(nifti_masks[:, :, 2].T, samples.masks[2])


# ------------------------------------------------------------------------------------------------ Model info tab
def test_model_info_says_plainly_when_the_model_is_untrained(tiny_pipeline: HVAEPipeline) -> None:
    text = callbacks.model_info_markdown(tiny_pipeline, "UNTRAINED randomly initialised model")

    assert "This model is UNTRAINED" in text
    assert "training data and licence unknown" in text
    assert '"sample_size": 16' in text
    assert "**Sampling prior:** N(0, I)" in text
    fitted = HVAEPipeline(tiny_pipeline.model, GaussianLatentPrior(tiny_pipeline.model.latent_shape, num_slices=7))
    assert "fitted to the model's latents of its 7 training slices" in callbacks.model_info_markdown(fitted, "fitted")


def test_model_info_reads_licence_and_training_data_from_the_model_card(saved_pipeline_dir: Path) -> None:
    card_data = ModelCardData(license="apache-2.0", datasets=["brats-msd-flair"], library_name="diffusers")
    ModelCard.from_template(card_data, model_description="Trained on 10 BraTS patients.").save(
        saved_pipeline_dir / "README.md"
    )
    pipeline = HVAEPipeline.from_pretrained(str(saved_pipeline_dir))

    text = callbacks.model_info_markdown(pipeline, f"model {saved_pipeline_dir}")

    assert "UNTRAINED" not in text
    assert "**Licence:** apache-2.0" in text
    assert "**Training data:** brats-msd-flair" in text
    assert "Trained on 10 BraTS patients." in text


def test_model_info_without_a_model_card(saved_pipeline_dir: Path) -> None:
    pipeline = HVAEPipeline.from_pretrained(str(saved_pipeline_dir))

    text = callbacks.model_info_markdown(pipeline, "a saved model")

    assert "UNTRAINED" not in text and "Model card:** none found" in text
