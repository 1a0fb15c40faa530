"""Structural similarity (SSIM) and multi-scale SSIM between paired images, computed with MONAI.

Both use a Gaussian window (sigma 1.5), stability constants ``k1 = 0.01`` and ``k2 = 0.03`` and only the window
positions that lie fully inside the image, the same definition as ``torchmetrics`` (which the paper used).
"""

from __future__ import annotations

import torch

from ._optional import import_optional
from ._validation import ArrayLike, as_image_batch, check_positive_int, check_same_shape

# MS-SSIM weights of Wang et al. (2003), one per scale; each further scale halves the image.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _checked_pair(
    prediction: ArrayLike, target: ArrayLike, data_range: float, kernel_size: int, kernel_sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    check_positive_int(kernel_size, "kernel_size")
    if kernel_sigma <= 0:
        raise ValueError(f"`kernel_sigma` must be positive, got {kernel_sigma}")
    prediction = as_image_batch(prediction, "prediction", data_range)
    target = as_image_batch(target, "target", data_range)
    check_same_shape(prediction, target, "prediction", "target")
    return prediction, target


def ssim(
    prediction: ArrayLike,
    target: ArrayLike,
    data_range: float = 1.0,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
) -> torch.Tensor:
    """Per-pair SSIM: the mean of the local SSIM map over all channels and window positions of a pair.

    Symmetric in its two arguments; 1 for identical images, below 1 otherwise. Needs the ``eval`` extra (MONAI).

    Args:
        prediction: Images ``(N, H, W)`` or ``(N, C, H, W)`` with values in ``[0, data_range]``.
        target: Reference images of the same shape.
        data_range: Largest possible pixel value, 1.0 for images in ``[0, 1]``.
        kernel_size: Side of the Gaussian window, at most ``min(H, W)``.
        kernel_sigma: Standard deviation of the Gaussian window in pixels.

    Returns:
        ``float32`` tensor ``(N,)``: the SSIM of ``prediction[i]`` against ``target[i]``.
    """
    prediction, target = _checked_pair(prediction, target, data_range, kernel_size, kernel_sigma)
    if min(prediction.shape[-2:]) < kernel_size:
        raise ValueError(
            f"images of size {tuple(prediction.shape[-2:])} are smaller than `kernel_size`={kernel_size}; "
            "pass a smaller kernel_size"
        )
    regression = import_optional("monai.metrics.regression", "SSIM")
    ssim_map, _ = regression.compute_ssim_and_cs(
        prediction,
        target,
        spatial_dims=2,
        kernel_size=(kernel_size, kernel_size),
        kernel_sigma=(kernel_sigma, kernel_sigma),
        data_range=data_range,
    )
    return ssim_map.flatten(1).mean(dim=1)


def ms_ssim(
    prediction: ArrayLike,
    target: ArrayLike,
    data_range: float = 1.0,
    kernel_size: int = 7,
    kernel_sigma: float = 1.5,
) -> torch.Tensor:
    """Per-pair multi-scale SSIM over 5 scales with the standard weights :data:`MS_SSIM_WEIGHTS`.

    The image is halved four times (2x2 average pooling), so the coarsest scale is ``H / 16``, and MONAI requires
    ``H // 16 > kernel_size - 1`` (same for ``W``). The usual 11-pixel window would need more than 160 pixels a
    side, so the default window is 7 pixels (sigma 1.5, about +-2 sigma), which fits 128 x 128 slices; use
    ``kernel_size=4`` for 64 x 64. Negative contrast terms are clipped to 0 before the weighted product (MONAI).
    Needs the ``eval`` extra (MONAI).

    Args:
        prediction: Images ``(N, H, W)`` or ``(N, C, H, W)`` with values in ``[0, data_range]``.
        target: Reference images of the same shape.
        data_range: Largest possible pixel value, 1.0 for images in ``[0, 1]``.
        kernel_size: Side of the Gaussian window at every scale.
        kernel_sigma: Standard deviation of the Gaussian window in pixels.

    Returns:
        ``float32`` tensor ``(N,)``: the MS-SSIM of ``prediction[i]`` against ``target[i]``, in ``[0, 1]``.
    """
    prediction, target = _checked_pair(prediction, target, data_range, kernel_size, kernel_sigma)
    coarsest_scale = 2 ** (len(MS_SSIM_WEIGHTS) - 1)
    if min(prediction.shape[-2:]) // coarsest_scale < kernel_size:
        largest_kernel = min(prediction.shape[-2:]) // coarsest_scale
        raise ValueError(
            f"MS-SSIM over {len(MS_SSIM_WEIGHTS)} scales with `kernel_size`={kernel_size} needs images of at least "
            f"{coarsest_scale * kernel_size} pixels a side, got {tuple(prediction.shape[-2:])}; "
            f"use kernel_size <= {largest_kernel}"
        )
    regression = import_optional("monai.metrics.regression", "MS-SSIM")
    per_pair = regression.compute_ms_ssim(
        prediction,
        target,
        spatial_dims=2,
        data_range=data_range,
        kernel_size=kernel_size,
        kernel_sigma=kernel_sigma,
        weights=MS_SSIM_WEIGHTS,
    )
    return per_pair.flatten()
