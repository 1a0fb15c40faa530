"""Peak signal-to-noise ratio between paired images."""

from __future__ import annotations

import torch

from ._validation import ArrayLike, as_image_batch, check_same_shape


def psnr(prediction: ArrayLike, target: ArrayLike, data_range: float = 1.0) -> torch.Tensor:
    """Per-pair PSNR in dB: ``10 * log10(data_range**2 / MSE)``, the MSE taken over all channels and pixels of a pair.

    This is the per-image value of ``torchmetrics``' PSNR and MONAI's ``PSNRMetric``. Identical images give ``inf``.

    Args:
        prediction: Images ``(N, H, W)`` or ``(N, C, H, W)`` with values in ``[0, data_range]`` (e.g. reconstructions).
        target: Reference images of the same shape (e.g. the inputs that were reconstructed).
        data_range: Largest possible pixel value, 1.0 for images in ``[0, 1]``.

    Returns:
        ``float64`` tensor ``(N,)``: the PSNR of ``prediction[i]`` against ``target[i]``.
    """
    prediction = as_image_batch(prediction, "prediction", data_range)
    target = as_image_batch(target, "target", data_range)
    check_same_shape(prediction, target, "prediction", "target")
    # float64 so that small errors between near-identical images are not lost to float32 round-off.
    squared_error = (prediction.to(torch.float64) - target.to(torch.float64)).square()
    mean_squared_error = squared_error.flatten(1).mean(dim=1)
    # A zero MSE divides to inf on purpose: identical images have an infinite PSNR.
    return 10.0 * torch.log10(data_range**2 / mean_squared_error)
