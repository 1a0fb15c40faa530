"""Classic data augmentation of the U-Net's training batches: random transforms applied jointly to image and mask.

The baseline users already have: every training slice, real or synthetic alike, is transformed afresh each time a
batch holds it. The transforms and their parameters (:data:`CLASSIC_PARAMETERS`, recorded in the reports) are those
of MONAI's ``RandFlipd``, ``Rand2DElasticd``, ``RandAdjustContrastd``, ``RandScaleIntensityd`` and
``RandShiftIntensityd``:

- flips: left-right and up-down, each with probability 0.5;
- rotation, scaling and elastic deformation in one resampling, with probability 0.5: rotation uniform in +-15 degrees,
  scale factor uniform in [0.9, 1.1] per axis, and an elastic displacement whose control points lie 32 px apart, with
  offsets N(0, 1) times a magnitude uniform in [0, 3] px, interpolated bicubically (as ``Rand2DElastic``); images are
  resampled bilinearly, masks with nearest neighbours (they stay 0/1), both padded with zeros;
- intensity, images only: gamma uniform in [0.7, 1.5] with probability 0.3 (on the slice's own range, as
  ``RandAdjustContrast``), then a scale by ``1 + f`` with ``f`` uniform in +-0.1 and a shift uniform in +-0.1, each
  with probability 0.5, then clipped to [0, 1] (the real slices' range).

Why not MONAI's transforms themselves: they transform one slice at a time (~15 ms per 128 x 128 slice on one CPU
thread, ~0.5 s per batch of 32, as long as the U-Net's update), while the same operations on the whole batch, one
``grid_sample`` for all images and one for all masks, cost ~1 % of that.

Randomness comes from the augmentation's own ``torch.Generator`` seeded by the run seed, apart from the global one
that seeds the U-Net: the same seed gives the same transforms, and runs without augmentation draw nothing from it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "classic")
CLASSIC_PARAMETERS: dict[str, Any] = {
    "flip_probability": 0.5,
    "deform_probability": 0.5,
    "rotation_degrees": 15.0,
    "scale_range": 0.1,
    "elastic_spacing_px": 32,
    "elastic_magnitude_px": (0.0, 3.0),
    "gamma_probability": 0.3,
    "gamma_range": (0.7, 1.5),
    "intensity_probability": 0.5,
    "intensity_scale": 0.1,
    "intensity_shift": 0.1,
}


def check_augmentation(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`AUGMENTATIONS`."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r}: expected one of {AUGMENTATIONS}")


@functools.lru_cache(maxsize=8)
def _bicubic_weights(points: int, size: int) -> torch.Tensor:
    """``(size, points)`` weights of bicubic interpolation (corners aligned) from ``points`` values to ``size``."""
    identity = torch.eye(points).view(points, 1, points, 1)
    return F.interpolate(identity, size=(size, 1), mode="bicubic", align_corners=True).view(points, size).T


class ClassicAugmentation:
    """Joint random transforms of ``(image, mask)`` batches (see the module notes for what and how much).

    Args:
        seed: seeds the augmentation's generator (same seed and batches, same transforms).
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=self.generator)

    def _chosen(self, probability: float, count: int) -> torch.Tensor:
        return torch.rand(count, generator=self.generator) < probability

    def sampling_grid(self, count: int, height: int, width: int) -> torch.Tensor:
        """A random ``grid_sample`` grid ``(count, H, W, 2)`` per slice: flips, rotation, scaling, elastic offsets."""
        p = CLASSIC_PARAMETERS
        flips = torch.where(self._chosen(p["flip_probability"], 2 * count), -1.0, 1.0).view(count, 2)
        deformed = self._chosen(p["deform_probability"], count)
        angle = self._uniform(-1.0, 1.0, count) * math.radians(p["rotation_degrees"]) * deformed
        scale = torch.where(deformed[:, None], self._uniform(1 - p["scale_range"], 1 + p["scale_range"], count, 2), 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output -> input coordinates (normalised): flip, then rotate, then divide by the scale (a zoom in by it).
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        matrix = rotation * flips[:, None, :] / scale[:, :, None]
        theta = torch.cat([matrix, torch.zeros(count, 2, 1)], dim=2)
        grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
        spacing = p["elastic_spacing_px"]
        points = (math.ceil(height / spacing) + 1, math.ceil(width / spacing) + 1)
        magnitude = self._uniform(*p["elastic_magnitude_px"], count) * deformed
        offsets = torch.randn(count, 2, *points, generator=self.generator) * magnitude[:, None, None, None]
        # Bicubic interpolation is separable: two small matrix products (torch's bicubic upsampling kernel is slower).
        offsets = torch.einsum("hp,bcpq,wq->bchw", _bicubic_weights(points[0], height), offsets,
                               _bicubic_weights(points[1], width))
        # Pixels to normalised units: x offsets (channel 0) over the width, y offsets over the height.
        offsets = offsets * torch.tensor([2.0 / width, 2.0 / height])[None, :, None, None]
        return grid + offsets.permute(0, 2, 3, 1)

    def intensity(self, images: torch.Tensor) -> torch.Tensor:
        """Random gamma (on each slice's range), scale and shift of ``images`` ``(B, C, H, W)``, clipped to [0, 1]."""
        p = CLASSIC_PARAMETERS
        count = len(images)
        shape = (count, 1, 1, 1)
        gamma = torch.where(self._chosen(p["gamma_probability"], count), self._uniform(*p["gamma_range"], count), 1.0)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        span = images.amax(dim=(1, 2, 3), keepdim=True) - low
        images = ((images - low) / span.clamp_min(1e-7)).pow(gamma.view(shape)) * span + low
        factor = self._uniform(-p["intensity_scale"], p["intensity_scale"], count)
        factor = torch.where(self._chosen(p["intensity_probability"], count), factor, 0.0)
        shift = self._uniform(-p["intensity_shift"], p["intensity_shift"], count)
        shift = torch.where(self._chosen(p["intensity_probability"], count), shift, 0.0)
        return (images * (1 + factor.view(shape)) + shift.view(shape)).clamp(0.0, 1.0)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed copies of ``images`` float ``(B, C, H, W)`` in ``[0, 1]`` and their ``masks`` ``(B, H, W)``
        (same dtypes out as in), each slice with its own random transforms."""
        grid = self.sampling_grid(len(images), *images.shape[-2:])
        moved = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        moved_masks = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                                    align_corners=False)[:, 0]
        return self.intensity(moved).to(images.dtype), moved_masks.to(masks.dtype)
