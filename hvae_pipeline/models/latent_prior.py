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
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from tqdm.auto import tqdm

from .generator import PairAutoencoder, require_encoder

class GaussianLatentPrior(ModelMixin, ConfigMixin):
    r"""``N(mean, scale_tril scale_tril^T)`` over flattened latents of shape ``latent_shape``.

    Args:
        latent_shape: ``(channels, height, width)`` of the latents of the model it belongs to.
        num_slices: Training slices it was fitted on (provenance, shown in model cards).
        source: The latents it describes: ``"posterior"`` (the encoder's ``z_0``) or ``"flow"`` (the flow's ``z_K``).
    """

    @register_to_config
    def __init__(self, latent_shape: tuple[int, int, int] = (3, 16, 16), num_slices: int = 0,
                 source: str = "posterior") -> None:
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


LATENT_SOURCES = ("posterior", "flow")  # which latents a prior describes: the encoder's z_0 or the flow's z_K


@torch.no_grad()
def fit_latent_prior(
    model: PairAutoencoder,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int = 64,
    progress: bool = True,
    source: str = "posterior",
    samples_per_slice: int = 4,
    generator: torch.Generator | None = None,
) -> GaussianLatentPrior:
    """Fit a Gaussian with the mean and covariance of a trained model's latents on its training data.

    ``source="posterior"``: the aggregate posterior ``(1/N) sum_i N(mu_i, diag(sigma_i^2))`` of the encoder's ``z_0``,
    whose mean ``mean(mu)`` and covariance ``cov(mu) + diag(mean(sigma^2))`` (population covariance) are computed
    exactly, in float64, from one encoder pass. ``source="flow"``: the distribution of the flow's ``z_K``, the
    latents an HVAE's decoder is trained on, estimated by Monte Carlo from ``samples_per_slice`` runs of the flow per
    slice (each costs ``K + 1`` decoder gradients). With the paper's step 1e-3 the two coincide (the flow moves z by
    ~3e-3 against posterior standard deviations of ~0.9); with learnt steps they may not (RESULTS.md compares them).

    Args:
        model: A trained :class:`~hvae_pipeline.models.HVAEModel` (any :class:`PairAutoencoder`).
        images: ``(N, image_channels, H, W)`` training images in ``[0, 1]``.
        masks: ``(N, H, W)`` their masks.
        batch_size: Slices per encoder pass.
        progress: Show a progress bar.
        source: ``"posterior"`` (``z_0``, exact) or ``"flow"`` (``z_K``, Monte Carlo).
        samples_per_slice: Flow runs per slice with ``source="flow"``.
        generator: Random generator of the flow's draws.

    Raises:
        ValueError: On empty or mismatched inputs, an unknown ``source``, or a model without an encoder (the LSGAN).
    """
    require_encoder(model, "fitting a latent prior to the posterior")
    if images.shape[0] == 0 or images.shape[0] != masks.shape[0]:
        raise ValueError(f"expected as many masks as images (at least one), got {images.shape[0]} images and "
                         f"{masks.shape[0]} masks")
    if source not in LATENT_SOURCES:
        raise ValueError(f"`source` must be one of {LATENT_SOURCES}, got {source!r}")
    if samples_per_slice < 1:
        raise ValueError(f"`samples_per_slice` must be >= 1, got {samples_per_slice}")
    dimension = math.prod(model.latent_shape)
    device = next(model.parameters()).device
    mean_sum = torch.zeros(dimension, dtype=torch.float64, device=device)
    product_sum = torch.zeros(dimension, dimension, dtype=torch.float64, device=device)
    variance_sum = torch.zeros(dimension, dtype=torch.float64, device=device)
    count = 0
    for start in tqdm(range(0, images.shape[0], batch_size), desc=f"fitting the latent prior ({source})",
                      unit="batch", disable=not progress):
        batch_images = images[start : start + batch_size].to(device)
        batch_masks = masks[start : start + batch_size].to(device)
        if source == "posterior":
            posterior = model.encode(batch_images, batch_masks).latent_dist
            draws = [(posterior.mean.flatten(1).double(), posterior.var.flatten(1).double())]
        else:  # point draws of z_K: no within-draw variance
            draws = [(model(batch_images, batch_masks, generator=generator).z.flatten(1).double(), None)
                     for _ in range(samples_per_slice)]
        for points, variances in draws:
            mean_sum += points.sum(0)
            product_sum += points.T @ points
            if variances is not None:
                variance_sum += variances.sum(0)
            count += points.shape[0]
    mean = mean_sum / count
    covariance = product_sum / count - torch.outer(mean, mean) + torch.diag(variance_sum / count)
    prior = GaussianLatentPrior(latent_shape=tuple(model.latent_shape), num_slices=images.shape[0], source=source)
    prior = prior.to(device)
    prior.set_moments(mean.float(), covariance)
    return prior
