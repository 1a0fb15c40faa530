"""``HVAEPipeline``: paired (image, tumour mask) sampling from a trained generator, the diffusers way.

The pipeline is written against a small generator interface (:class:`~hvae_pipeline.models.PairGenerator`) so that
the HVAE, its VAE baseline and the LSGAN baseline are sampled, saved and evaluated alike: ``model.latent_shape``,
``model.config`` (``image_channels``, ``mask_channels``, ``sample_size``) and ``model.decode(z)`` returning ``images``
in ``[0, 1]`` and ``mask_logits``. Reconstruction also needs ``model.encode`` (:class:`PairAutoencoder`).

Saving, loading and pushing (a folder's ``pipeline.py`` for diffusers' generic loader, checks of loaded weights, the
model card of a push) live in :mod:`hvae_pipeline.hub.pipeline_files`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .hub.pipeline_files import PipelineFilesMixin
from .hub.weights_check import non_finite_tensors
from .models.generator import PairGenerator, check_pair_generator, require_encoder
from .models.inputs import as_class_ids, check_images, name_list
from .models.latent_prior import GaussianLatentPrior
from .outputs.visualization import image_to_uint8

OUTPUT_TYPES = ("pil", "np", "pt")
# "standard": N(0, I), the paper's protocol; "fitted": the pipeline's GaussianLatentPrior; "auto": fitted when the
# pipeline has one, else standard.
PRIORS = ("auto", "standard", "fitted")
# The paper keeps the synthetic pairs whose mask has more than 200 tumour pixels (at 128 x 128); sampling keeps the
# areas >= min_tumour_area, so the paper's rule is min_tumour_area=201.
PAPER_MIN_TUMOUR_AREA = 201
# Keywords renamed in the Python API: the old name keeps working, with a FutureWarning, until the version given.
RENAMED_KEYWORDS = {"min_mask_area": ("min_tumour_area", "0.2.0")}


@dataclass
class HVAEPipelineOutput(BaseOutput):
    """Paired samples.

    Args:
        images: ``output_type="pil"``: list of PIL images (mode ``L`` for one channel, ``RGB`` for three);
            ``"np"``: float32 ``(N, H, W, C)`` in ``[0, 1]``; ``"pt"``: float ``(N, C, H, W)`` in ``[0, 1]``.
        masks: ``"pil"``: list of mode-``L`` images (binary masks as 0/255, class ids scaled to 0..255 for viewing);
            ``"np"``: uint8 ``(N, H, W)`` of 0/1 or class ids; ``"pt"``: uint8 tensor ``(N, H, W)``.
        tumour_areas: ``(N,)`` int64 numbers of tumour (non-background) pixels per mask.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    masks: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    tumour_areas: np.ndarray


class SamplingBudgetExceeded(RuntimeError):
    """Raised when ``min_tumour_area`` rejects so many samples that the draw budget runs out."""


def spherical_interpolation(start: torch.Tensor, end: torch.Tensor, fraction: float) -> torch.Tensor:
    """Slerp between two latents; keeps the norm typical of Gaussian samples (linear blends shrink towards 0)."""
    start_flat, end_flat = start.flatten(), end.flatten()
    cosine = torch.dot(start_flat, end_flat) / (start_flat.norm() * end_flat.norm())
    angle = torch.arccos(cosine.clamp(-1.0, 1.0))
    if angle.abs() < 1e-6:
        return (1 - fraction) * start + fraction * end
    return (torch.sin((1 - fraction) * angle) * start + torch.sin(fraction * angle) * end) / torch.sin(angle)


class HVAEPipeline(PipelineFilesMixin, DiffusionPipeline):
    r"""Pipeline for paired image + tumour-mask generation.

    Args:
        model: A :class:`~hvae_pipeline.models.PairGenerator`: an :class:`~hvae_pipeline.models.HVAEModel` (its VAE
            baseline included) or the :class:`~hvae_pipeline.models.LSGANModel` baseline, which has no encoder
            (:meth:`reconstruct` then refuses).
        latent_prior: Optional :class:`~hvae_pipeline.models.GaussianLatentPrior` fitted to the model's aggregate
            posterior (``fit_latent_prior``); sampling uses it by default when present (see ``prior``).

    Raises:
        TypeError: ``model`` is not a pair generator.
        ValueError: ``latent_prior`` is for latents of another shape.
    """

    model_cpu_offload_seq = "model"
    _optional_components = ["latent_prior"]
    # Small and used before the model (no forward hook): kept on the execution device under CPU offload.
    _exclude_from_cpu_offload = ["latent_prior"]

    def __init__(self, model: PairGenerator, latent_prior: GaussianLatentPrior | None = None) -> None:
        super().__init__()
        check_pair_generator(model)
        if latent_prior is not None and tuple(latent_prior.latent_shape) != tuple(model.latent_shape):
            raise ValueError(f"the latent prior's latent_shape {tuple(latent_prior.latent_shape)} differs from the "
                             f"model's {tuple(model.latent_shape)}")
        self.register_modules(model=model, latent_prior=latent_prior)

    def prior_latents(self, num_samples: int, generator: torch.Generator | None = None, temperature: float = 1.0,
                      prior: str = "auto") -> torch.Tensor:
        """Draw ``num_samples`` latents from the prior (``temperature``, ``prior``: see :meth:`latents_from_noise`)."""
        shape = (num_samples, *self.model.latent_shape)
        # The execution device: where `enable_model_cpu_offload()` runs the model, which itself waits on the CPU.
        noise = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.model.dtype)
        return self.latents_from_noise(noise, temperature, prior)

    def latents_from_noise(self, noise: torch.Tensor, temperature: float = 1.0, prior: str = "auto") -> torch.Tensor:
        """Map standard normal ``noise`` ``(N, *latent_shape)`` to latents of the chosen prior: ``temperature``
        scales the prior's spread (standard: ``N(0, t^2 I)``; fitted: ``mean + t L noise``); ``prior`` is
        :meth:`__call__`'s (an unknown one, or ``"fitted"`` without a fitted prior, raises ``ValueError``)."""
        if self.resolve_prior(prior) == "fitted":
            return self.latent_prior.from_standard_normal(temperature * noise)  # in the noise's dtype
        return temperature * noise

    def resolve_prior(self, prior: str = "auto") -> str:
        """The prior that ``prior`` selects for this pipeline, ``"fitted"`` or ``"standard"``; ``ValueError`` for an
        unknown ``prior``, or ``"fitted"`` for a pipeline without a fitted prior."""
        if prior not in PRIORS:
            raise ValueError(f"`prior` must be one of {PRIORS}, got {prior!r}")
        has_fitted = self.latent_prior is not None  # registered as None when the pipeline has none
        if prior == "fitted" and not has_fitted:
            raise ValueError("prior='fitted' but this pipeline has no fitted latent prior; fit one with "
                             "`hvae-fit-prior --pipeline FOLDER --config CONFIG`, or use prior='standard'")
        return "fitted" if prior == "fitted" or (prior == "auto" and has_fitted) else "standard"

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, mask_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode latents into images ``(N, C, H, W)`` in ``[0, 1]`` and uint8 masks ``(N, H, W)`` (binary:
        ``sigmoid(logit) > mask_threshold``; multi-class: the most probable class).

        Raises:
            ValueError: The decoder returned NaN or infinite values (they would be written as black images with empty
                masks); the message says why (non-finite weights or latents, or latents too large).
        """
        decoded = self.model.decode(latents)
        if not (torch.isfinite(decoded.images).all() and torch.isfinite(decoded.mask_logits).all()):
            raise ValueError(f"sampling produced NaN or infinite values: {_non_finite_cause(self.model, latents)}")
        return decoded.images.float(), _masks_from_logits(decoded.mask_logits, mask_threshold)

    @torch.inference_mode()
    def __call__(
        self, num_samples: int = 1, generator: torch.Generator | None = None, temperature: float = 1.0,
        mask_threshold: float = 0.5, min_tumour_area: int = 0, batch_size: int = 32, output_type: str = "pil",
        return_dict: bool = True, max_draws: int | None = None, prior: str = "auto", **kwargs: Any,
    ) -> HVAEPipelineOutput | tuple:
        """Sample (image, mask) pairs from the prior.

        Args:
            num_samples: Number of pairs to return (>= 1).
            generator: Random generator; the same seed, ``batch_size`` and settings give the same samples.
            temperature: Scale of the prior's standard deviation (< 1 trades diversity for typicality).
            mask_threshold: Probability above which a pixel of a binary mask is tumour (ignored for multi-class).
            min_tumour_area: Reject samples with fewer tumour pixels than this (0 keeps every sample; the paper's rule,
                masks > 200 px, is :data:`PAPER_MIN_TUMOUR_AREA` = 201).
            batch_size: Latents decoded per forward pass.
            output_type: ``"pil"``, ``"np"`` or ``"pt"`` (see :class:`HVAEPipelineOutput`).
            return_dict: Return an :class:`HVAEPipelineOutput` rather than ``(images, masks)``.
            max_draws: Bound on latents drawn when ``min_tumour_area`` rejects samples (default
                ``max(20 * num_samples, 1000)``).
            prior: Where latents come from: ``"standard"`` ``N(0, I)`` (the paper's protocol), ``"fitted"`` (the
                pipeline's fitted Gaussian, which draws tumours of realistic size from small-data models) or
                ``"auto"`` (fitted when the pipeline has one).
            **kwargs: Deprecated spellings, with a ``FutureWarning`` until their removal: ``min_mask_area``
                (``min_tumour_area``; removed in 0.2.0).

        Raises:
            ValueError: On an invalid argument, or when decoding gives NaN or infinite values.
            TypeError: An unknown keyword argument.
            SamplingBudgetExceeded: When fewer than ``num_samples`` pairs passed ``min_tumour_area`` within
                ``max_draws``.
        """
        min_tumour_area = _take_renamed_keywords(kwargs, {"min_tumour_area": min_tumour_area})["min_tumour_area"]
        _check_output_type(output_type)
        batches = list(self.sample_batches(num_samples, generator, temperature, mask_threshold, min_tumour_area,
                                           batch_size, "pt", max_draws, prior))
        images, masks = torch.cat([b.images for b in batches]), torch.cat([b.masks for b in batches])
        images_out, masks_out = _format(images, masks, output_type, self.model.config.mask_channels)
        if not return_dict:
            return images_out, masks_out
        return HVAEPipelineOutput(images=images_out, masks=masks_out, tumour_areas=tumour_area(masks).numpy())

    @torch.inference_mode()
    def sample_batches(
        self, num_samples: int = 1, generator: torch.Generator | None = None, temperature: float = 1.0,
        mask_threshold: float = 0.5, min_tumour_area: int = 0, batch_size: int = 32, output_type: str = "np",
        max_draws: int | None = None, prior: str = "auto",
    ) -> Iterator[HVAEPipelineOutput]:
        """Sample like :meth:`__call__`, yielding the kept pairs of each decoded batch as soon as it is decoded.

        Writing each batch before drawing the next keeps memory independent of ``num_samples``; the pairs and their
        order are those of :meth:`__call__` with the same arguments. The arguments are :meth:`__call__`'s; the checks
        run at the first ``next()``. Batches with no kept pair are not yielded.
        """
        self.check_sampling_arguments(num_samples, generator, temperature, mask_threshold, min_tumour_area, batch_size,
                                      max_draws, prior)
        _check_output_type(output_type)
        max_draws = max(20 * num_samples, 1000) if max_draws is None else max_draws
        accepted = drawn = 0
        with self.progress_bar(total=num_samples) as progress:
            while accepted < num_samples:
                if drawn >= max_draws:
                    raise SamplingBudgetExceeded(
                        f"only {accepted} of {num_samples} samples had a tumour area >= min_tumour_area="
                        f"{min_tumour_area} px after {drawn} draws (max_draws={max_draws}); lower `min_tumour_area` "
                        "or raise `max_draws`")
                # Without rejection every draw is kept: draw only the missing pairs, not a surplus to throw away.
                wanted = batch_size if min_tumour_area > 0 else num_samples - accepted
                count = min(batch_size, wanted, max_draws - drawn)
                latents = self.prior_latents(count, generator, temperature, prior)
                drawn += count
                images, masks = self.decode_latents(latents, mask_threshold)
                keep = tumour_area(masks) >= min_tumour_area
                keep[torch.cumsum(keep, 0) > num_samples - accepted] = False
                kept = int(keep.sum())
                accepted += kept
                # While rejection throws draws away the count of kept pairs stands still: show the draws as well.
                progress.set_postfix(drawn=drawn, refresh=False)
                progress.update(kept)
                if kept:
                    images, masks = images[keep].cpu(), masks[keep].cpu()
                    images_out, masks_out = _format(images, masks, output_type, self.model.config.mask_channels)
                    yield HVAEPipelineOutput(images_out, masks_out, tumour_areas=tumour_area(masks).numpy())
        self.maybe_free_model_hooks()  # under model CPU offload: back to the CPU, hooks ready for the next call

    def check_sampling_arguments(
        self, num_samples: int = 1, generator: torch.Generator | list[torch.Generator] | None = None,
        temperature: float = 1.0, mask_threshold: float = 0.5, min_tumour_area: int = 0, batch_size: int = 32,
        max_draws: int | None = None, prior: str = "auto",
    ) -> None:
        """Refuse invalid sampling arguments of :meth:`__call__` (same meanings) before any drawing (as
        ``hvae-generate`` does, after loading the model and before writing anything).

        Raises:
            ValueError: naming the first invalid argument and its value.
            SamplingBudgetExceeded: ``min_tumour_area`` exceeds a whole mask, so no draw can pass (said at once, rather
                than after spending ``max_draws``).
        """
        _check_call_arguments(num_samples, temperature, mask_threshold, min_tumour_area, batch_size, max_draws,
                              self.model.config.sample_size)
        _check_generator(generator, self._execution_device)
        self.resolve_prior(prior)  # a bad `prior` fails before any drawing

    @torch.inference_mode()
    def reconstruct(
        self, images: torch.Tensor, masks: torch.Tensor | None = None, num_samples: int = 1,
        generator: torch.Generator | None = None, mask_threshold: float = 0.5, imputation_steps: int = 5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct slices through the posterior, optionally without their masks.

        Args:
            images: ``(B, image_channels, H, W)`` in ``[0, 1]``.
            masks: ``(B, H, W)`` masks, or ``None`` to impute them: start from an empty mask and alternate
                encode (posterior mean) / decode ``imputation_steps`` times, keeping the decoded mask.
            num_samples: Posterior samples per slice; the first is the posterior mean, the others random draws.
            generator: Random generator for the posterior draws.
            mask_threshold: Threshold of binary masks.
            imputation_steps: Encode/decode rounds used to impute missing masks.

        Returns:
            ``(images, masks)`` of shapes ``(B, num_samples, C, H, W)`` (float in ``[0, 1]``) and
            ``(B, num_samples, H, W)`` (uint8).

        Raises:
            ValueError: Invalid images, masks or counts, or a generator without an encoder (the LSGAN baseline).
        """
        model = require_encoder(self.model, "reconstruct")
        config = model.config
        check_images(images, config.image_channels, config.sample_size)
        _check_count("num_samples", num_samples, minimum=1)
        _check_count("imputation_steps", imputation_steps, minimum=0)  # a negative count would skip it like 0 does
        device = self._execution_device
        images = images.to(device, model.dtype)
        if masks is None:
            masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long, device=device)
            for _ in range(imputation_steps):
                posterior = model.encode(images, masks).latent_dist
                masks = self.decode_latents(posterior.mean, mask_threshold)[1].long()
        else:
            masks = as_class_ids(masks, config.mask_channels, images.shape[0], config.sample_size).to(device)
        posterior = model.encode(images, masks).latent_dist
        latents = [posterior.mean] + [posterior.sample(generator) for _ in range(num_samples - 1)]
        decoded = [self.decode_latents(latent, mask_threshold) for latent in latents]
        self.maybe_free_model_hooks()
        return torch.stack([d[0] for d in decoded], dim=1), torch.stack([d[1] for d in decoded], dim=1)


def tumour_area(masks: torch.Tensor) -> torch.Tensor:
    """Number of non-background pixels of each mask ``(N, H, W)``, as int64 ``(N,)``."""
    return (masks > 0).flatten(1).sum(dim=1)


def _is_count(value: Any) -> bool:
    """Whether ``value`` is an integer count; bools are ints to Python, and a float count would fail deep in torch."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _check_count(name: str, value: Any, minimum: int) -> None:
    if not _is_count(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


def _check_call_arguments(num_samples: int, temperature: float, mask_threshold: float, min_tumour_area: int,
                          batch_size: int, max_draws: int | None, sample_size: int) -> None:
    """The checks of :meth:`HVAEPipeline.check_sampling_arguments` that need neither the device nor the prior."""
    _check_count("num_samples", num_samples, minimum=1)
    # 0 would give every sample the same latent (the prior's mean).
    if not (_is_number(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a finite number > 0 (1 samples the prior's own spread), "
                         f"got {temperature!r}")
    if not (_is_number(mask_threshold) and 0.0 < mask_threshold < 1.0):
        raise ValueError(f"`mask_threshold` must be a number in (0, 1), got {mask_threshold!r}")
    if not (_is_number(min_tumour_area) and min_tumour_area >= 0):
        raise ValueError(f"`min_tumour_area` must be a number >= 0 pixels, got {min_tumour_area!r}")
    _check_count("batch_size", batch_size, minimum=1)
    if min_tumour_area > sample_size * sample_size:
        raise SamplingBudgetExceeded(
            f"only 0 of {num_samples} samples can have a tumour area >= min_tumour_area={min_tumour_area} px: a "
            f"{sample_size}x{sample_size} mask has {sample_size * sample_size} px; pass a smaller min_tumour_area")
    if max_draws is not None and not (_is_count(max_draws) and max_draws >= num_samples):
        raise ValueError(f"`max_draws` must be an integer >= num_samples={num_samples} (or None), got {max_draws!r}")


def _take_renamed_keywords(kwargs: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (keyword: value) with each deprecated spelling in ``kwargs`` taken under its new name.

    Each old spelling warns (``FutureWarning``, pointed at the caller of ``HVAEPipeline.__call__``); a keyword that is
    no old spelling is refused as Python refuses one (``TypeError``).
    """
    for old in list(kwargs):
        if old not in RENAMED_KEYWORDS:
            raise TypeError(f"HVAEPipeline.__call__() got an unexpected keyword argument {old!r}")
        new, removal = RENAMED_KEYWORDS[old]
        # Frames: this function, __call__, torch.inference_mode's wrapper, the caller.
        warnings.warn(f"`{old}` is deprecated and will be removed in hvae-pipeline {removal}; use `{new}`",
                      FutureWarning, stacklevel=4)
        values[new] = kwargs.pop(old)
    return values


def _masks_from_logits(mask_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """uint8 masks ``(N, H, W)``: ``sigmoid(logit) > threshold`` of one channel, else the most probable class."""
    masks = torch.sigmoid(mask_logits[:, 0]) > threshold if mask_logits.shape[1] == 1 else mask_logits.argmax(dim=1)
    return masks.to(torch.uint8)


def _check_generator(generator: Any, device: torch.device) -> None:
    """Refuse what ``randn_tensor`` would fail on with an unrelated message: a non-generator, or one on a device
    that draws no numbers (``meta``) or other than the CPU and the pipeline's own."""
    generators = generator if isinstance(generator, list) else [generator]
    for one in generators:
        if one is None:
            continue
        if not isinstance(one, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator (or a list of them), got {type(one).__name__}")
        if one.device.type not in ("cpu", device.type):
            raise ValueError(f"`generator` is on the {one.device.type!r} device but the pipeline samples on "
                             f"{device.type!r}; pass torch.Generator(device='cpu') or one on {device.type!r}")


def _check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")


def _non_finite_cause(model: torch.nn.Module, latents: torch.Tensor) -> str:
    """Why ``model`` decoded ``latents`` into NaN or infinite values, and what to do about it."""
    broken = non_finite_tensors(model)
    if broken:
        return (f"the model's weights hold NaN or infinite values ({name_list(broken)}): training diverged or the "
                "weights were altered; load a healthy checkpoint")
    if not torch.isfinite(latents).all():
        return ("the latents are not finite: the temperature or the fitted latent prior's moments overflow; sample "
                "with a temperature near 1 or refit the prior")
    return (f"the latents reach |z| = {latents.abs().max().item():.3g}, too large for the decoder: lower the "
            "temperature (1 is the prior's own spread)")


def _format(images: torch.Tensor, masks: torch.Tensor, output_type: str, mask_channels: int) -> tuple[Any, Any]:
    if output_type == "pt":
        return images, masks
    images_np = images.permute(0, 2, 3, 1).numpy().astype(np.float32)
    masks_np = masks.numpy().astype(np.uint8)
    if output_type == "np":
        return images_np, masks_np
    if images_np.shape[-1] not in (1, 3):
        raise ValueError(f"output_type='pil' needs 1 or 3 image channels, got {images_np.shape[-1]}; use 'np' or 'pt'")
    pil_images = [PIL.Image.fromarray(pixels) for pixels in image_to_uint8(images_np)]
    scale = 255 // max(mask_channels - 1, 1)
    pil_masks = [PIL.Image.fromarray((m * scale).astype(np.uint8)) for m in masks_np]
    return pil_images, pil_masks
