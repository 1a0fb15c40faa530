"""What the demo's buttons do, as plain functions of a pipeline and the widget values (no Gradio needed).

Each function checks its inputs and raises :class:`~demo.uploads.DemoInputError` with a sentence meant for the user;
the app turns those into Gradio error pop-ups.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard

from hvae_pipeline.hub.model_card import find_model_card
from hvae_pipeline.outputs.export import write_samples_zip as write_zip
from hvae_pipeline.pipeline import PAPER_MIN_TUMOUR_AREA, HVAEPipeline, SamplingBudgetExceeded, spherical_interpolation
from hvae_pipeline.models.inputs import MAX_SEED
from hvae_pipeline.outputs.visualization import mask_to_uint8, overlay, to_grey_uint8

from .uploads import DemoInputError, prepare_mask, prepare_slice

# Request bounds: one request must stay a few seconds of CPU, whatever a client sends.
MAX_SAMPLES = 64
MAX_FRAMES = 16
MAX_POSTERIOR_SAMPLES = 8
# Latents drawn per requested sample before a high minimum tumour area gives up (bounds rejection sampling).
DRAWS_PER_SAMPLE = 10
# The slice side at which the paper states its minimum tumour area (> 200 px at 128 x 128).
PAPER_SAMPLE_SIZE = 128

GalleryItems = list[tuple[np.ndarray, str]]


@dataclass(frozen=True)
class SampleSet:
    """The samples of one Generate click, kept per browser session for the Download tab.

    Attributes:
        images: ``(N, H, W, C)`` float32 in ``[0, 1]``.
        masks: ``(N, H, W)`` uint8 class ids (0/1 for binary masks).
        tumour_areas: ``(N,)`` tumour pixels per mask.
        seed: Seed of the random generator that drew them.
        settings: The other sampling settings (temperature, mask threshold, minimum tumour area).
    """

    images: np.ndarray
    masks: np.ndarray
    tumour_areas: np.ndarray
    seed: int
    settings: dict[str, float | int]


# ------------------------------------------------------------------------------------------------ input checks
def finite_number(value: object, name: str) -> float:
    """Return ``value`` as a finite ``float``, or refuse it (empty fields send ``None``, API callers may send text)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DemoInputError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise DemoInputError(f"{name} must be a finite number, got {value!r}.")
    return number


def whole_number(value: float | int | None, name: str, low: int, high: int) -> int:
    """Return ``value`` as an ``int`` in ``[low, high]`` (widgets send floats such as ``8.0``, API callers text such as
    ``"8.0"``), or refuse it."""
    number = finite_number(value, name)
    if number != int(number):
        raise DemoInputError(f"{name} must be a whole number, got {value!r}.")
    if not low <= int(number) <= high:
        raise DemoInputError(f"{name} must be between {low} and {high}, got {int(number)}.")
    return int(number)


def _check_temperature(temperature: float, smallest: float = 0.0) -> None:
    """Refuse a temperature outside ``[smallest, 2]`` or not above 0 (the pipeline's own limit)."""
    value = finite_number(temperature, "Temperature")
    if not (value > 0 and smallest <= value <= 2.0):
        raise DemoInputError(f"Temperature must be between {smallest:g} and 2, above 0; got {value:g}.")


def _check_mask_threshold(mask_threshold: float) -> None:
    if not 0.0 < finite_number(mask_threshold, "Mask threshold") < 1.0:
        raise DemoInputError(f"Mask threshold must be strictly between 0 and 1, got {mask_threshold:g}.")


def _generator(seed: float | int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(whole_number(seed, "Seed", 0, MAX_SEED))


# ------------------------------------------------------------------------------------------------ Sample tab
def default_min_tumour_area(sample_size: int) -> int:
    """The Sample tab's starting minimum tumour area: the paper's rule (> 200 px, so pairs without a real tumour are
    not shown) for models of the paper's 128 x 128 slices or larger; 0 (every sample) for smaller slices, where a
    200 px tumour is rare or impossible and the first click would only fail."""
    return PAPER_MIN_TUMOUR_AREA if sample_size >= PAPER_SAMPLE_SIZE else 0


def generate_samples(
    pipeline: HVAEPipeline,
    seed: float | int,
    num_samples: float | int,
    temperature: float,
    mask_threshold: float,
    min_tumour_area: float | int,
) -> SampleSet:
    """Draw paired samples from the prior.

    Args:
        pipeline: The loaded pipeline.
        seed: Seed of the random generator (same seed and settings, same samples).
        num_samples: Number of pairs, 1 to :data:`MAX_SAMPLES`.
        temperature: Scale of the prior's standard deviation, 0 to 2.
        mask_threshold: Probability above which a pixel is tumour, in ``(0, 1)``.
        min_tumour_area: Keep only masks with at least this many tumour pixels.

    Raises:
        DemoInputError: On a setting out of range, or when too few samples reach ``min_tumour_area``.
    """
    num_samples = whole_number(num_samples, "Number of samples", 1, MAX_SAMPLES)
    sample_size = pipeline.model.config.sample_size
    min_tumour_area = whole_number(min_tumour_area, "Minimum tumour area", 0, sample_size * sample_size)
    _check_temperature(temperature)
    _check_mask_threshold(mask_threshold)
    max_draws = DRAWS_PER_SAMPLE * num_samples
    try:
        output = pipeline(
            num_samples=num_samples,
            generator=_generator(seed),
            temperature=float(temperature),
            mask_threshold=float(mask_threshold),
            min_tumour_area=min_tumour_area,
            output_type="np",
            max_draws=max_draws,
        )
    except SamplingBudgetExceeded as error:
        raise DemoInputError(
            f"Fewer than {num_samples} of {max_draws} drawn samples had a tumour of at least {min_tumour_area} pixels: "
            "lower the minimum tumour area (or ask for fewer samples)."
        ) from error
    settings = {"temperature": float(temperature), "mask_threshold": float(mask_threshold),
                "min_tumour_area": min_tumour_area}
    seed = whole_number(seed, "Seed", 0, MAX_SEED)
    return SampleSet(output.images, output.masks, output.tumour_areas, seed, settings)


def pair_items(image: np.ndarray, mask: np.ndarray, title: str) -> GalleryItems:
    """Three gallery items for one pair: the slice, its mask and the overlay (tumour coloured over the slice).

    Args:
        image: ``(H, W, C)`` floats in ``[0, 1]`` (the first channel is shown).
        mask: ``(H, W)`` class ids.
        title: Start of the captions, e.g. ``"#3"``; the mask's caption adds its tumour area.
    """
    area = int((mask > 0).sum())
    return [
        (to_grey_uint8(image), f"{title} image"),
        (mask_to_uint8(mask), f"{title} mask · tumour area {area} px"),
        (overlay(image, mask), f"{title} overlay"),
    ]


def sample_gallery(samples: SampleSet) -> GalleryItems:
    """Image, mask and overlay of every sample, numbered from 1, the masks captioned with their tumour area."""
    return [
        item
        for index, (image, mask) in enumerate(zip(samples.images, samples.masks))
        for item in pair_items(image, mask, f"#{index + 1}")
    ]


# ------------------------------------------------------------------------------------------------ Explore tab
def interpolate_seeds(
    pipeline: HVAEPipeline,
    seed_a: float | int,
    seed_b: float | int,
    num_frames: float | int,
    temperature: float,
    mask_threshold: float,
) -> GalleryItems:
    """Frames along the great circle between the prior noise of two seeds (spherical interpolation), decoded through
    the pipeline's default prior.

    Args:
        pipeline: The loaded pipeline.
        seed_a: Seed of the first latent (first frame).
        seed_b: Seed of the second latent (last frame).
        num_frames: Frames, ends included, 2 to :data:`MAX_FRAMES`.
        temperature: Scale of the prior's standard deviation, above 0 (a zero latent has no direction to follow).
        mask_threshold: Probability above which a pixel is tumour, in ``(0, 1)``.

    Returns:
        Image, mask and overlay of every frame, captioned with the seed (ends) or the fraction of the way ``t``.
    """
    num_frames = whole_number(num_frames, "Number of frames", 2, MAX_FRAMES)
    _check_temperature(temperature, smallest=0.05)
    _check_mask_threshold(mask_threshold)
    # Interpolate the standard normal noise, then map it through the pipeline's prior: with a fitted prior the
    # latents are not centred at 0, and the great circle belongs to the noise.
    start = pipeline.prior_latents(1, _generator(seed_a), prior="standard")[0]
    end = pipeline.prior_latents(1, _generator(seed_b), prior="standard")[0]
    fractions = np.linspace(0.0, 1.0, num_frames)
    noise = torch.stack([spherical_interpolation(start, end, float(fraction)) for fraction in fractions])
    latents = pipeline.latents_from_noise(noise, float(temperature))
    images, masks = pipeline.decode_latents(latents, float(mask_threshold))
    images_np, masks_np = images.permute(0, 2, 3, 1).cpu().numpy(), masks.cpu().numpy()
    titles = {0: f"seed {whole_number(seed_a, 'Seed', 0, MAX_SEED)}",
              num_frames - 1: f"seed {whole_number(seed_b, 'Seed', 0, MAX_SEED)}"}
    return [
        item
        for index, (fraction, image, mask) in enumerate(zip(fractions, images_np, masks_np))
        for item in pair_items(image, mask, titles.get(index, f"t={fraction:.2f}"))
    ]


# ------------------------------------------------------------------------------------------------ Reconstruct tab
def reconstruct_upload(
    pipeline: HVAEPipeline,
    slice_path: str | None,
    slice_index: float | int,
    mask_path: str | None,
    num_samples: float | int,
    seed: float | int,
    mask_threshold: float,
) -> tuple[GalleryItems, str]:
    """Reconstruct an uploaded slice through the posterior, imputing its mask when none is given.

    Args:
        pipeline: The loaded pipeline.
        slice_path: The uploaded PNG/TIF slice or NIfTI volume.
        slice_index: Axial slice of a NIfTI upload (ignored for pictures).
        mask_path: The uploaded mask of the slice, or ``None`` to let the model impute it.
        num_samples: Reconstructions, 1 to :data:`MAX_POSTERIOR_SAMPLES`: the posterior mean, then random draws.
        seed: Seed of the posterior draws.
        mask_threshold: Probability above which a pixel is tumour, in ``(0, 1)``.

    Returns:
        ``(gallery, notes)``: the model's input then its reconstructions (image, mask, overlay each), and a
        Markdown list of what was done to the upload.
    """
    if not slice_path:
        raise DemoInputError("Upload a slice (PNG/TIF) or a NIfTI volume first.")
    num_samples = whole_number(num_samples, "Number of posterior samples", 1, MAX_POSTERIOR_SAMPLES)
    _check_mask_threshold(mask_threshold)
    config = pipeline.model.config
    index = whole_number(slice_index, "Slice index", 0, 100_000)
    prepared = prepare_slice(slice_path, index, config.image_channels, config.sample_size)
    notes = list(prepared.notes)
    image = prepared.image[0].permute(1, 2, 0).numpy()
    if mask_path:
        given = prepare_mask(mask_path, index, prepared.original_size, config.mask_channels, config.sample_size)
        notes += given.notes
        masks = given.mask
        gallery = pair_items(image, given.mask[0].numpy(), "input")
    else:
        masks = None
        notes.append("No mask was given: the model imputed it (encode/decode rounds from an empty mask).")
        gallery = [(to_grey_uint8(image), "input image (no mask given)")]
    images, decoded_masks = pipeline.reconstruct(
        prepared.image, masks, num_samples=num_samples, generator=_generator(seed), mask_threshold=mask_threshold
    )
    for draw in range(num_samples):
        title = "posterior mean" if draw == 0 else f"posterior sample {draw}"
        image_draw = images[0, draw].permute(1, 2, 0).cpu().numpy()
        gallery += pair_items(image_draw, decoded_masks[0, draw].cpu().numpy(), title)
    return gallery, "\n".join(f"- {note}" for note in notes)


# ------------------------------------------------------------------------------------------------ Download tab
def write_samples_zip(samples: SampleSet, model_description: str, folder: str | Path | None = None) -> Path:
    """Write the samples to a zip archive: PNG pairs, two NIfTI volumes and a manifest (CSV and JSON).

    The layout is :mod:`hvae_pipeline.outputs.export`'s zip: ``images/sample_00000.png`` (8-bit grey, or ``.npy`` floats for
    images with more than 3 channels), ``masks/sample_00000.png`` (class ids, 0/1 for binary masks),
    ``images.nii.gz`` (float32, x, y, sample, channel: sample ``i`` is slice ``i``) and ``masks.nii.gz`` (uint8, x, y,
    sample), ``manifest.csv`` and ``manifest.json`` (file names, NIfTI slice, seed, tumour area; the JSON adds the
    model and settings). The archive is staged and renamed when complete, so no reader sees half an archive.

    Args:
        samples: The samples of one Generate click.
        model_description: What model drew them, recorded in the manifest.
        folder: Where to create the archive's own new subfolder (default: the system's temporary folder).

    Returns:
        The path of the archive, ``hvae-samples-seed<seed>-n<count>.zip``.
    """
    target_folder = Path(tempfile.mkdtemp(prefix="hvae-samples-", dir=folder))  # one per click: sessions never clash
    header = {"model": model_description, "seed": samples.seed, "settings": samples.settings}
    return write_zip(target_folder, f"hvae-samples-seed{samples.seed}-n{len(samples.masks)}.zip", samples.images,
                     samples.masks, samples.tumour_areas, header, seed=samples.seed)


# ------------------------------------------------------------------------------------------------ Model info tab
def is_untrained(pipeline: HVAEPipeline) -> bool:
    """Whether the pipeline was built in memory (random weights) rather than loaded from saved weights."""
    return not pipeline.name_or_path


def model_info_markdown(pipeline: HVAEPipeline, description: str) -> str:
    """Markdown for the Model info tab: what was loaded, the model's configuration, training data and licence.

    Args:
        pipeline: The loaded pipeline.
        description: What :func:`hvae_pipeline.bundled_model.load_pipeline` says it loaded.
    """
    lines = [f"**Loaded:** {description}", ""]
    if is_untrained(pipeline):
        lines += [
            "> **This model is UNTRAINED**: its weights are random, so its samples are noise. "
            "Start the demo with `--model PATH_OR_REPO` to use a trained pipeline.",
            "",
        ]
    card_path = find_model_card(pipeline)
    if card_path is None:
        lines += ["**Model card:** none found (no README.md beside the model): training data and licence unknown.", ""]
    else:
        card = ModelCard.load(card_path)
        datasets = card.data.get("datasets") or []
        lines += [
            f"**Licence:** {card.data.get('license') or 'not stated in the model card'}",
            "",
            f"**Training data:** {', '.join(datasets) if datasets else 'see the model card below'}",
            "",
        ]
    if pipeline.resolve_prior() == "fitted":
        fitted_on = pipeline.latent_prior.config.num_slices
        lines += [f"**Sampling prior:** a Gaussian fitted to the model's latents of its {fitted_on} training slices "
                  "(tumours of realistic size); the paper samples N(0, I).", ""]
    else:
        lines += ["**Sampling prior:** N(0, I), as in the paper (this model has no fitted prior).", ""]
    config = {key: value for key, value in dict(pipeline.model.config).items() if not key.startswith("_")}
    lines += ["**Configuration** (`model.config`):", "", "```json", json.dumps(config, indent=2), "```", ""]
    if card_path is not None:
        lines += ["---", "### Model card", "", card.text.strip()]
    return "\n".join(lines)
