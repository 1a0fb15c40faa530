"""Input checks shared by the model and the pipeline: bad input fails early with a message naming the argument."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

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


class ConfigValueError(ValueError):
    """A model constructor argument (a saved ``config.json`` entry) of the wrong type or range.

    Attributes:
        key: the argument's name; value: the value given; expected: the accepted values in words.
    """

    def __init__(self, key: str, value: Any, expected: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}`{key}`={value!r}: expected {expected}")
        self.key, self.value, self.expected = key, value, expected


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


def _is_number(value: Any) -> bool:
    return (_is_integer(value) or isinstance(value, float)) and math.isfinite(value)


# What each kind of constructor argument accepts: (test, the accepted values in words).
CONFIG_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
    "count or zero": (lambda v: _is_integer(v) and v >= 0, "an integer >= 0"),
    "number": (_is_number, "a finite number"),
    "number >= 0": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "counts": (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_integer(x) and x >= 1 for x in v),
               "a non-empty list of integers >= 1"),
    "counts or none": (lambda v: v is None or CONFIG_KINDS["counts"][0](v),
                       "null or a non-empty list of integers >= 1"),
    "flags": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, bool) for x in v),
              "a list of true/false"),
}


# The constructor arguments the HVAE and the LSGAN share (their U-Net-style networks), by kind.
NETWORK_CONFIG_KINDS = {
    "image_channels": "count", "mask_channels": "count", "sample_size": "count", "block_out_channels": "counts",
    "layers_per_block": "count", "attention_levels": "flags", "latent_channels": "count",
    "num_attention_heads": "count", "attention_head_dim": "count", "norm_num_groups": "count",
}


def check_config_types(values: dict[str, Any], kinds: dict[str, str]) -> None:
    """Raise :class:`ConfigValueError` for the first of ``values`` that is not of its kind.

    Args:
        values: constructor arguments by name.
        kinds: the kind of each checked argument, a key of :data:`CONFIG_KINDS` (``"count"``, ``"number"``...).
    """
    for key, kind in kinds.items():
        accepts, expected = CONFIG_KINDS[kind]
        if not accepts(values[key]):
            raise ConfigValueError(key, values[key], expected)


def check_count(value: Any, name: str, low: int = 1) -> None:
    """Raise ``ValueError`` naming the argument ``name`` unless ``value`` is an integer >= ``low`` (``1.5`` steps or
    samples do not exist; ``range`` and the flow would otherwise fail far from the call, or give NaN)."""
    if not _is_integer(value) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")


class ConfigFileChecked:
    """Mixin of the models: ``from_pretrained`` of a folder whose ``config.json`` holds a bad value fails with one
    :class:`ConfigValueError` naming the key and the file (the constructor's checks find it)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except ConfigValueError as error:
            source = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "", "config.json")
            raise ConfigValueError(error.key, error.value, error.expected, source) from None
