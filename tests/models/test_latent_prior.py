"""GaussianLatentPrior and fit_latent_prior: the maths of the fit, and sampling through HVAEPipeline with it."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import random_pairs

from hvae_pipeline import GaussianLatentPrior, HVAEModel, HVAEPipeline, LSGANModel, fit_latent_prior


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_model(config: dict, **overrides) -> HVAEModel:
    torch.manual_seed(0)
    return HVAEModel(**config, **overrides).eval()


def random_prior(latent_shape: tuple[int, int, int], seed: int = 0) -> GaussianLatentPrior:
    """A prior with a random mean and a random (well-conditioned) covariance."""
    generator = seeded(seed)
    dimension = math.prod(latent_shape)
    factor = torch.randn(dimension, dimension, generator=generator) / math.sqrt(dimension)
    prior = GaussianLatentPrior(latent_shape)
    prior.set_moments(torch.randn(dimension, generator=generator), factor @ factor.T + 0.5 * torch.eye(dimension))
    return prior


def test_draws_have_the_prior_moments():
    latent_shape = (2, 2, 2)
    prior = random_prior(latent_shape)
    covariance = prior.scale_tril @ prior.scale_tril.T
    noise = torch.randn(200_000, *latent_shape, generator=seeded(1))
    draws = prior.from_standard_normal(noise).flatten(1)
    assert torch.allclose(draws.mean(0), prior.mean, atol=0.02)
    assert torch.allclose(torch.cov(draws.T), covariance, atol=0.03)
    # Temperature scales the spread around the mean, not the mean.
    cooled = prior.from_standard_normal(0.5 * noise).flatten(1)
    assert torch.allclose(torch.cov(cooled.T), 0.25 * covariance, atol=0.01)
    assert torch.allclose(cooled.mean(0), prior.mean, atol=0.01)


def test_fit_has_the_exact_moments_of_the_aggregate_posterior(tiny_config):
    """The fit is N(mean(mu), cov(mu) + diag(mean(sigma^2))), and those are the moments of the mixture of posteriors:
    latents drawn by picking a slice at random, then z ~ q(z | slice), have them."""
    model = tiny_model(tiny_config, n_leapfrog=0, beta_zero=1.0)
    images, masks = random_pairs(8, 16, seed=4)
    prior = fit_latent_prior(model, images, masks, batch_size=3, progress=False)  # batches must not matter
    with torch.no_grad():
        posterior = model.encode(images, masks).latent_dist
    means, stds = posterior.mean.flatten(1).double(), posterior.std.flatten(1).double()
    formula = torch.cov(means.T, correction=0) + torch.diag((stds**2).mean(0))
    fitted = prior.scale_tril.double() @ prior.scale_tril.double().T
    assert torch.allclose(prior.mean.double(), means.mean(0), atol=1e-6)
    assert torch.allclose(fitted, formula, atol=1e-5)
    generator = seeded(5)
    picks = torch.randint(0, 8, (400_000,), generator=generator)
    draws = means[picks] + stds[picks] * torch.randn(400_000, means.shape[1], generator=generator, dtype=torch.float64)
    assert torch.allclose(draws.mean(0), means.mean(0), atol=0.01)
    assert (torch.cov(draws.T) - formula).abs().max() < 0.02
    # The dimensions are correlated in the aggregate posterior though each posterior is diagonal: that is what a
    # full covariance keeps and N(0, I) loses.
    assert (formula - torch.diag(formula.diagonal())).abs().max() > 0.1
    assert prior.config.num_slices == 8


def test_fit_to_the_flow_has_the_moments_of_its_z_k_draws(tiny_config):
    """source="flow" describes the latents the decoder is trained on: the population mean and covariance of
    ``samples_per_slice`` draws of the flow's z_K per slice, whatever the batching."""
    model = tiny_model(tiny_config, step_size=0.2)
    images, masks = random_pairs(8, 16, seed=4)
    prior = fit_latent_prior(model, images, masks, batch_size=8, progress=False, source="flow", samples_per_slice=40,
                             generator=seeded(2))
    generator = seeded(2)
    with torch.no_grad():
        draws = torch.cat([model(images, masks, generator=generator).z.flatten(1) for _ in range(40)]).double()
    fitted = prior.scale_tril.double() @ prior.scale_tril.double().T
    assert torch.allclose(prior.mean.double(), draws.mean(0), atol=1e-5)
    assert torch.allclose(fitted, torch.cov(draws.T, correction=0), atol=1e-4)
    assert prior.config.source == "flow" and prior.config.num_slices == 8
    with torch.no_grad():
        z0 = model.encode(images, masks).latent_dist.mean
    assert (draws.mean(0) - z0.flatten(1).double().mean(0)).abs().max() > 1e-3  # the flow moved z
    with pytest.raises(ValueError, match="`source` must be one of"):
        fit_latent_prior(model, images, masks, progress=False, source="z_K")


def test_fit_refuses_bad_inputs(tiny_config):
    model = tiny_model(tiny_config)
    images, masks = random_pairs(4, 16)
    with pytest.raises(ValueError, match="as many masks as images"):
        fit_latent_prior(model, images, masks[:3], progress=False)
    with pytest.raises(ValueError, match="has no encoder"):
        fit_latent_prior(LSGANModel(**tiny_config), images, masks, progress=False)
    prior = fit_latent_prior(model, images[:1], masks[:1], progress=False)  # one slice: its own posterior
    with torch.no_grad():
        posterior = model.encode(images[:1], masks[:1]).latent_dist
    assert torch.allclose(prior.scale_tril.diagonal(), posterior.std.flatten(), atol=1e-5)


def test_pipeline_samples_from_the_fitted_prior(tiny_config):
    model = tiny_model(tiny_config)
    prior = random_prior(model.latent_shape)
    pipeline = HVAEPipeline(model, prior)
    pipeline.set_progress_bar_config(disable=True)
    noise = torch.randn(4, *model.latent_shape, generator=seeded(2))
    assert torch.equal(pipeline.prior_latents(4, seeded(2), prior="standard"), noise)
    assert torch.allclose(pipeline.prior_latents(4, seeded(2)), prior.from_standard_normal(noise))
    assert torch.allclose(pipeline.prior_latents(4, seeded(2), 0.5, prior="fitted"), prior.from_standard_normal(0.5 * noise))
    fitted = pipeline(num_samples=3, generator=seeded(2), output_type="pt")
    expected_images, expected_masks = pipeline.decode_latents(prior.from_standard_normal(noise[:3]))
    assert torch.allclose(fitted.images, expected_images) and torch.equal(fitted.masks, expected_masks)
    standard = pipeline(num_samples=3, generator=seeded(2), output_type="pt", prior="standard")
    assert not torch.allclose(standard.images, fitted.images)


def test_identity_prior_samples_like_the_standard_normal(tiny_config):
    model = tiny_model(tiny_config)
    with_prior = HVAEPipeline(model, GaussianLatentPrior(model.latent_shape))  # mean 0, covariance I
    without = HVAEPipeline(model)
    for pipeline in (with_prior, without):
        pipeline.set_progress_bar_config(disable=True)
    first = with_prior(num_samples=3, generator=seeded(), output_type="pt")
    second = without(num_samples=3, generator=seeded(), output_type="pt")
    assert torch.allclose(first.images, second.images) and torch.equal(first.masks, second.masks)


def test_prior_errors(tiny_config):
    model = tiny_model(tiny_config)
    without = HVAEPipeline(model)
    with pytest.raises(ValueError, match="no fitted latent prior"):
        without(num_samples=1, prior="fitted")
    with pytest.raises(ValueError, match="`prior` must be one of"):
        without(num_samples=1, prior="posterior")
    with pytest.raises(ValueError, match="latent_shape"):
        HVAEPipeline(model, GaussianLatentPrior((1, 2, 2)))
    with pytest.raises(ValueError, match="`noise` must have shape"):
        GaussianLatentPrior((1, 2, 2)).from_standard_normal(torch.zeros(3, 1, 2, 3))
    with pytest.raises(ValueError, match="expected a mean of shape"):
        GaussianLatentPrior((1, 2, 2)).set_moments(torch.zeros(3), torch.eye(3))


def test_save_and_reload_keep_the_prior(tiny_config, tmp_path):
    model = tiny_model(tiny_config)
    prior = random_prior(model.latent_shape)
    HVAEPipeline(model, prior).save_pretrained(tmp_path / "fitted")
    reloaded = HVAEPipeline.from_pretrained(str(tmp_path / "fitted"))
    assert torch.equal(reloaded.latent_prior.mean, prior.mean)
    assert torch.equal(reloaded.latent_prior.scale_tril, prior.scale_tril)
    assert (tmp_path / "fitted" / "latent_prior" / "diffusion_pytorch_model.safetensors").is_file()
    # A pipeline saved without a prior (every pipeline saved before priors existed) loads with none.
    HVAEPipeline(model).save_pretrained(tmp_path / "plain")
    assert HVAEPipeline.from_pretrained(str(tmp_path / "plain")).latent_prior is None
