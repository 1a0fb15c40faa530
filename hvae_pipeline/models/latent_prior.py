"""A Gaussian fitted to the aggregate posterior: an optional sampling prior for a trained HVAE or VAE.

A VAE is trained to make the aggregate posterior ``q(z) = E_x q(z | x)`` close to ``N(0, I)``, but with few training
slices the two stay apart: on BraTS the bundled model's posterior latents reconstruct tumours of the real median size
(~450 px) while its ``N(0, I)`` samples draw tumours of ~20 px, because the latent dimensions that carry a tumour are
correlated in ``q(z)`` and independent under ``N(0, I)``. Sampling from a full-covariance Gaussian fitted to ``q(z)``
("ex-post density estimation": Ghosh et al., ICLR 2020; the second stage of Dai & Wipf, ICLR 2019) keeps those
correlations. The model's weights and its training objective are unchanged; only where the latents come from.
The model's bounds and likelihood estimates (``forward``, ``estimate_log_likelihood``) still refer to its N(0, I) prior.

This module's path is recorded in saved pipelines (``model_index.json``): do not move the class.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from tqdm.auto import tqdm

class GaussianLatentPrior(ModelMixin, ConfigMixin):
    r"""``N(mean, scale_tril scale_tril^T)`` over flattened latents of shape ``latent_shape``.

    Args:
        latent_shape: ``(channels, height, width)`` of the latents of the model it belongs to.
        num_slices: Training slices it was fitted on (provenance, shown in model cards).
    """

    @register_to_config
    def __init__(self, latent_shape: tuple[int, int, int] = (3, 16, 16), num_slices: int = 0) -> None:
        super().__init__()
        dimension = math.prod(latent_shape)
        self.register_buffer("mean", torch.zeros(dimension))
        self.register_buffer("scale_tril", torch.eye(dimension))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.latent_shape)

    def from_standard_normal(self, noise: torch.Tensor) -> torch.Tensor:
        """Map ``noise`` ``(N, *latent_shape)`` drawn from ``N(0, I)`` to latents of this prior: ``mean + L noise``.

        Scaling ``noise`` by a temperature scales the prior's spread around its mean.
        """
        if noise.ndim != 4 or tuple(noise.shape[1:]) != self.latent_shape:
            raise ValueError(f"`noise` must have shape (N, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(noise.shape)}")
        flat = noise.flatten(1).to(self.mean.dtype)
        return (self.mean + flat @ self.scale_tril.T).view(noise.shape).to(noise.dtype)

    def set_moments(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        """Set the prior from a mean ``(D,)`` and a symmetric positive-definite covariance ``(D, D)``."""
        dimension = self.mean.numel()
        if mean.shape != (dimension,) or covariance.shape != (dimension, dimension):
            raise ValueError(f"expected a mean of shape ({dimension},) and a covariance of shape "
                             f"({dimension}, {dimension}), got {tuple(mean.shape)} and {tuple(covariance.shape)}")
        self.mean.copy_(mean)
        self.scale_tril.copy_(torch.linalg.cholesky(covariance.double()).to(self.scale_tril.dtype))


@torch.no_grad()
def fit_latent_prior(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 64, progress: bool = True
) -> GaussianLatentPrior:
    """Fit a Gaussian with the exact mean and covariance of a trained model's aggregate posterior on its training data.

    The aggregate posterior ``(1/N) sum_i N(mu_i, diag(sigma_i^2))`` has mean ``mean(mu)`` and covariance
    ``cov(mu) + diag(mean(sigma^2))`` (population covariance), computed here in float64 from one encoder pass: no
    Monte Carlo noise. For an HVAE this is the distribution of ``z_0``; the decoder is trained on ``z_K``, which the flow
    moves by about ``n_leapfrog x step_size`` (3e-3 for the shipped configs, against posterior standard deviations of
    ~0.9): a Monte Carlo fit to ``z_K`` of the bundled model drew tumours of the same sizes and took 15 min instead
    of seconds.

    Args:
        model: A trained :class:`~hvae_pipeline.models.HVAEModel` (anything with ``encode`` and ``latent_shape``).
        images: ``(N, image_channels, H, W)`` training images in ``[0, 1]``.
        masks: ``(N, H, W)`` their masks.
        batch_size: Slices per encoder pass.
        progress: Show a progress bar.

    Raises:
        ValueError: On empty or mismatched inputs, or a model without an encoder (the LSGAN).
    """
    if not hasattr(model, "encode"):
        raise ValueError(f"{type(model).__name__} has no encoder, so it has no posterior to fit a prior to")
    if images.shape[0] == 0 or images.shape[0] != masks.shape[0]:
        raise ValueError(f"expected as many masks as images (at least one), got {images.shape[0]} images and "
                         f"{masks.shape[0]} masks")
    dimension = math.prod(model.latent_shape)
    device = next(model.parameters()).device
    mean_sum = torch.zeros(dimension, dtype=torch.float64, device=device)
    product_sum = torch.zeros(dimension, dimension, dtype=torch.float64, device=device)
    variance_sum = torch.zeros(dimension, dtype=torch.float64, device=device)
    for start in tqdm(range(0, images.shape[0], batch_size), desc="fitting the latent prior", unit="batch",
                      disable=not progress):
        rows = slice(start, start + batch_size)
        posterior = model.encode(images[rows].to(device), masks[rows].to(device)).latent_dist
        means = posterior.mean.flatten(1).double()
        mean_sum += means.sum(0)
        product_sum += means.T @ means
        variance_sum += posterior.var.flatten(1).double().sum(0)
    count = images.shape[0]
    mean = mean_sum / count
    covariance = product_sum / count - torch.outer(mean, mean) + torch.diag(variance_sum / count)
    prior = GaussianLatentPrior(latent_shape=tuple(model.latent_shape), num_slices=count).to(device)
    prior.set_moments(mean.float(), covariance)
    return prior
