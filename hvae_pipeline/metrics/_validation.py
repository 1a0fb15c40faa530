"""Input checks shared by the metrics: bad input fails early with a ``ValueError`` naming the argument.

Every metric accepts numpy arrays or torch tensors; these helpers turn them into checked torch tensors.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"`{name}` must be a numpy array or a torch tensor, got {type(values).__name__}") from error


def as_image_batch(images: ArrayLike, name: str, data_range: float = 1.0) -> torch.Tensor:
    """Check a batch of images and return it as a float tensor ``(N, C, H, W)``.

    Args:
        images: ``(N, H, W)`` (one channel) or ``(N, C, H, W)``, finite values in ``[0, data_range]``.
        name: Argument name used in error messages.
        data_range: Largest admissible pixel value (1.0 for images in ``[0, 1]``).
    """
    if data_range <= 0:
        raise ValueError(f"`data_range` must be positive, got {data_range}")
    tensor = _as_tensor(images, name)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4:
        raise ValueError(f"`{name}` must have shape (N, H, W) or (N, C, H, W), got {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(tensor.shape)}): at least one non-empty image is needed")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0.0 or high > data_range:
        raise ValueError(f"`{name}` must lie in [0, {data_range:g}], got values in [{low:.4g}, {high:.4g}]")
    return tensor


def check_same_image_size(first: torch.Tensor, second: torch.Tensor, first_name: str, second_name: str) -> None:
    """Raise ``ValueError`` unless two ``(N, C, H, W)`` batches have the same ``(C, H, W)``."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(
            f"`{first_name}` and `{second_name}` must have the same (C, H, W), "
            f"got {tuple(first.shape[1:])} and {tuple(second.shape[1:])}"
        )


def check_same_shape(first: torch.Tensor, second: torch.Tensor, first_name: str, second_name: str) -> None:
    """Raise ``ValueError`` unless two batches have exactly the same shape (paired metrics)."""
    if first.shape != second.shape:
        raise ValueError(
            f"`{first_name}` and `{second_name}` must have the same shape, "
            f"got {tuple(first.shape)} and {tuple(second.shape)}"
        )


def as_label_maps(labels: ArrayLike, name: str, num_labels: int) -> torch.Tensor:
    """Check a batch of masks and return it as a ``long`` tensor ``(N, H, W)`` of labels in ``[0, num_labels)``.

    Args:
        labels: ``(N, H, W)`` or ``(N, 1, H, W)``, bool, integer, or float holding integer values.
        name: Argument name used in error messages.
        num_labels: Number of admissible labels, background 0 included (2 for a binary mask).
    """
    tensor = _as_tensor(labels, name)
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.ndim != 3:
        raise ValueError(f"`{name}` must have shape (N, H, W) or (N, 1, H, W), got {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(tensor.shape)}): at least one non-empty mask is needed")
    if tensor.is_floating_point() and not (torch.isfinite(tensor).all() and torch.equal(tensor, tensor.round())):
        raise ValueError(f"`{name}` must hold integer labels; threshold probability maps first (e.g. `mask > 0.5`)")
    tensor = tensor.to(torch.long)
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0 or high >= num_labels:
        allowed = "{0, 1}" if num_labels == 2 else f"[0, {num_labels})"
        raise ValueError(f"`{name}` must hold labels in {allowed}, got values in [{low}, {high}]")
    return tensor


def check_positive_int(value: int | None, name: str, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
