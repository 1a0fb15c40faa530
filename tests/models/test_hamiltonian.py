"""Property tests of the Hamiltonian flow maths on toy potentials (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hvae_pipeline.models.hamiltonian import (
    hamiltonian_flow,
    leapfrog_step,
    potential_and_gradient,
    quadratic_temperature_schedule,
    standard_normal_log_density,
    temper_momentum,
)



@pytest.fixture(autouse=True)
def float64_by_default():
    # Exactness checks (1e-10) need double precision; restore the default for the other test modules.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def anharmonic_potential(z: torch.Tensor):
    """A non-quadratic, coupled potential: the leapfrog map is genuinely nonlinear."""
    flat = z.flatten(1)
    coupling = flat[:, :-1] * flat[:, 1:]
    return 0.25 * flat.pow(4).sum(1) + 0.5 * flat.pow(2).sum(1) + 0.3 * coupling.sum(1), None


def hamiltonian(z: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    return anharmonic_potential(z)[0] + 0.5 * momentum.flatten(1).pow(2).sum(1)


def run_leapfrog(z, momentum, steps, step_size):
    _, gradient, _ = potential_and_gradient(anharmonic_potential, z, create_graph=False)
    for _ in range(steps):
        z, momentum, _, gradient, _ = leapfrog_step(z, momentum, gradient, anharmonic_potential, step_size, False)
    return z.detach(), momentum.detach()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 8), step_size=st.floats(0.01, 0.3))
def test_leapfrog_is_reversible(seed, steps, step_size):
    generator = torch.Generator().manual_seed(seed)
    z0 = torch.randn(3, 5, generator=generator)
    momentum0 = torch.randn(3, 5, generator=generator)
    z, momentum = run_leapfrog(z0, momentum0, steps, step_size)
    z_back, momentum_back = run_leapfrog(z, -momentum, steps, step_size)
    assert torch.allclose(z_back, z0, atol=1e-10)
    assert torch.allclose(-momentum_back, momentum0, atol=1e-10)
    assert not torch.allclose(z, z0, atol=1e-3)  # it did move


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), step_size=st.floats(0.01, 0.5))
def test_leapfrog_preserves_volume(seed, step_size):
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn(8, generator=generator)  # (z, rho) of a 4-dimensional latent

    def leapfrog_map(flat_state):
        z, momentum = flat_state[:4].unsqueeze(0), flat_state[4:].unsqueeze(0)
        _, gradient, _ = potential_and_gradient(anharmonic_potential, z, create_graph=True)
        z_next, momentum_next, _, _, _ = leapfrog_step(z, momentum, gradient, anharmonic_potential, step_size, True)
        return torch.cat([z_next[0], momentum_next[0]])

    jacobian = torch.autograd.functional.jacobian(leapfrog_map, state, create_graph=False)
    assert not torch.allclose(jacobian, torch.eye(8), atol=1e-4)  # a non-trivial map
    assert torch.linalg.det(jacobian).item() == pytest.approx(1.0, abs=1e-10)


def test_tempering_multiplies_momentum_by_schedule_ratios():
    beta_zero, steps = 0.3, 3
    betas = quadratic_temperature_schedule(beta_zero, steps)
    temperatures = 1 / betas
    expected = torch.tensor([(1 - 1 / beta_zero) * k**2 / steps**2 + 1 / beta_zero for k in range(steps + 1)])
    assert torch.allclose(temperatures, expected)
    assert betas[0].item() == pytest.approx(beta_zero) and betas[-1].item() == pytest.approx(1.0)
    assert torch.all(betas[1:] > betas[:-1])  # monotone cooling
    momentum = torch.randn(2, 6)
    tempered = temper_momentum(momentum, betas[0], betas[1])
    assert torch.allclose(tempered, momentum * math.sqrt(betas[0].item() / betas[1].item()))

    # On a flat potential the leapfrog leaves the momentum alone, so the flow only tempers it:
    # rho_K = rho_0 * prod sqrt(beta_{k-1} / beta_k) = rho_0 * sqrt(beta_0), and z moves by eps * sum of momenta.
    def flat(z):
        return 0.0 * z.flatten(1).sum(1), None

    z0, momentum0 = torch.randn(2, 6), torch.randn(2, 6)
    flow = hamiltonian_flow(z0, momentum0, flat, 0.1, betas, create_graph=False)
    assert torch.allclose(flow.momentum, momentum0 * math.sqrt(beta_zero))
    factors = torch.sqrt(betas[:-1] / betas[1:])
    partial = torch.cumprod(torch.cat([torch.ones(1), factors[:-1]]), 0)  # momentum used in step k
    assert torch.allclose(flow.z, z0 + 0.1 * momentum0 * partial.sum())


def test_hamiltonian_nearly_conserved_with_tiny_steps_and_no_tempering():
    generator = torch.Generator().manual_seed(0)
    z0, momentum0 = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    betas = torch.ones(21)  # 20 steps at beta = 1: no tempering
    flow = hamiltonian_flow(z0, momentum0, anharmonic_potential, 1e-3, betas, create_graph=False)
    drift = (hamiltonian(flow.z, flow.momentum) - hamiltonian(z0, momentum0)).abs()
    assert drift.max().item() < 1e-5
    coarse = hamiltonian_flow(z0, momentum0, anharmonic_potential, 0.2, betas, create_graph=False)
    assert (hamiltonian(coarse.z, coarse.momentum) - hamiltonian(z0, momentum0)).abs().max() > drift.max()


def test_extended_space_importance_weights_are_unbiased_for_the_evidence():
    """On a linear-Gaussian model with a known evidence p(x), E[w] = p(x) and E[log w] <= log p(x).

    This is the HVAE's central claim: volume-preserving leapfrog plus tempering whose Jacobian cancels the momentum's
    beta_0 factor give an exact extended-space density, hence an unbiased weight and a valid lower bound.
    """
    generator = torch.Generator().manual_seed(0)
    dimension, noise_std = 2, 0.7
    weights = torch.tensor([[1.0, 0.4], [-0.3, 0.8], [0.5, 0.5]])
    x = torch.tensor([0.9, -0.4, 0.6])
    covariance = weights @ weights.T + noise_std**2 * torch.eye(3)
    log_evidence = torch.distributions.MultivariateNormal(torch.zeros(3), covariance).log_prob(x)

    def potential(z):  # -log p(x, z)
        residual = x - z @ weights.T
        log_likelihood = -0.5 * (residual / noise_std).pow(2).sum(1) - 3 * math.log(noise_std * math.sqrt(2 * math.pi))
        return -(log_likelihood + standard_normal_log_density(z)), log_likelihood

    samples = 200_000
    q_mean, q_std = torch.tensor([0.3, 0.0]), torch.tensor([0.9, 0.8])  # a deliberately imperfect posterior
    z0 = q_mean + q_std * torch.randn(samples, dimension, generator=generator)
    gamma0 = torch.randn(samples, dimension, generator=generator)
    betas = quadratic_temperature_schedule(0.5, 3)
    flow = hamiltonian_flow(z0, gamma0 / betas[0].sqrt(), potential, 0.3, betas, create_graph=False)
    log_q = torch.distributions.Normal(q_mean, q_std).log_prob(z0).sum(1)
    log_weights = (
        -flow.potential + standard_normal_log_density(flow.momentum) - log_q - standard_normal_log_density(gamma0)
    ).detach()
    estimate = torch.logsumexp(log_weights, 0) - math.log(samples)
    assert estimate.item() == pytest.approx(log_evidence.item(), abs=0.01)
    elbo = log_weights.mean()
    standard_error = log_weights.std() / math.sqrt(samples)
    assert elbo.item() <= log_evidence.item() + 3 * standard_error.item()
    assert elbo.item() < log_evidence.item() - 0.01  # the bound is not tight for this q


def test_temperature_schedule_rejects_negative_steps():
    with pytest.raises(ValueError, match="n_leapfrog"):
        quadratic_temperature_schedule(0.5, -1)
