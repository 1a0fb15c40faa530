"""Input checks shared by the model and the pipeline: bad input fails early with a message naming the argument."""

from __future__ import annotations

from typing import Sequence

import torch

LISTED_NAMES = 5  # names a message quotes before "and N more"
# torch.Generator.manual_seed takes seeds below 2**64 and wraps negative ones; larger ones fail deep in torch.
MAX_SEED = 2**63 - 1


def name_list(names: Sequence[str]) -> str:
    """``"a, b, c, d, e and 3 more"``: the first names of a list, for a message that stays one line."""
    more = f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else ""
    return ", ".join(names[:LISTED_NAMES]) + more


def check_images(images: torch.Tensor, image_channels: int, sample_size: int, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a finite float tensor ``(B, image_channels, S, S)`` in ``[0, 1]``."""
    if not torch.is_tensor(images):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"`{name}` must be a float tensor with values in [0, 1], got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"`{name}` must have shape (B, {image_channels}, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch (shape {tuple(images.shape)}); pass at least one slice")
    if images.shape[1] != image_channels:
        raise ValueError(
            f"`{name}` has {images.shape[1]} channels but the model expects image_channels={image_channels}"
        )
    if images.shape[-2:] != (sample_size, sample_size):
        raise ValueError(
            f"`{name}` is {images.shape[-2]}x{images.shape[-1]} but the model expects "
            f"sample_size={sample_size} ({sample_size}x{sample_size}); resize or resample the slices first"
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    low, high = images.min().item(), images.max().item()
    if low < 0.0 or high > 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1] (min-max normalise each slice), got range [{low:.4g}, {high:.4g}]")


def as_class_ids(masks: torch.Tensor, mask_channels: int, batch_size: int, sample_size: int) -> torch.Tensor:
    """Check ``masks`` and return them as ``long`` class ids of shape ``(B, S, S)``.

    Args:
        masks: ``(B, S, S)`` or ``(B, 1, S, S)``, values in ``{0, 1}`` (``mask_channels == 1``, binary) or integer class
            ids in ``[0, mask_channels)`` (multi-class). Float tensors are accepted when their values are integers.
        mask_channels: 1 for a binary mask, ``C > 1`` for ``C`` classes (background included).
        batch_size: Expected batch size (that of the images).
        sample_size: Expected height and width.
    """
    if not torch.is_tensor(masks):
        raise ValueError(f"`masks` must be a torch.Tensor, got {type(masks).__name__}")
    if masks.is_complex():
        raise ValueError(f"`masks` must hold class ids as an integer, bool or float tensor, got dtype {masks.dtype}")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"`masks` must have shape (B, H, W) or (B, 1, H, W), got {tuple(masks.shape)}")
    if masks.shape[0] != batch_size:
        raise ValueError(f"`masks` has batch size {masks.shape[0]} but `images` has {batch_size}")
    if masks.shape[-2:] != (sample_size, sample_size):
        raise ValueError(f"`masks` is {masks.shape[-2]}x{masks.shape[-1]}, expected {sample_size}x{sample_size}")
    if masks.is_floating_point():
        if not torch.isfinite(masks).all() or not torch.equal(masks, masks.round()):
            raise ValueError("`masks` must hold integer values (0/1 or class ids), got non-integer floats")
    elif masks.dtype == torch.bool:
        masks = masks.to(torch.uint8)
    number_of_values = 2 if mask_channels == 1 else mask_channels
    low, high = masks.min().item(), masks.max().item()
    if low < 0 or high >= number_of_values:
        allowed = "{0, 1} (binary mask, mask_channels=1)" if mask_channels == 1 else f"[0, {mask_channels})"
        raise ValueError(f"`masks` values must be in {allowed}, got range [{low:g}, {high:g}]")
    return masks.long()


def pair_to_channels(
    images: torch.Tensor, masks: torch.Tensor, image_channels: int, mask_channels: int, sample_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check an (image, mask) batch and stack it as channels: the networks' joint input.

    Returns:
        ``(inputs, class_ids)``: ``inputs`` is ``(B, image_channels + mask_channels, S, S)`` in the images' dtype, the
        mask as one 0/1 plane (binary) or one-hot planes (multi-class); ``class_ids`` is ``(B, S, S)`` long.
    """
    check_images(images, image_channels, sample_size)
    class_ids = as_class_ids(masks, mask_channels, images.shape[0], sample_size).to(images.device)
    if mask_channels == 1:
        mask_planes = class_ids.unsqueeze(1)
    else:
        mask_planes = torch.nn.functional.one_hot(class_ids, mask_channels).permute(0, 3, 1, 2)
    return torch.cat([images, mask_planes.to(images.dtype)], dim=1), class_ids
