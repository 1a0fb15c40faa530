"""The Hamiltonian flow of a Hamiltonian VAE, as pure functions.

Reference: A. L. Caterini, A. Doucet, D. Sejdinovic, "Hamiltonian Variational Auto-Encoder", NeurIPS 2018.

A latent sample ``z_0 ~ q(z | x)`` and an auxiliary momentum ``rho_0 = gamma_0 / sqrt(beta_0)``, ``gamma_0 ~ N(0, I)``,
are moved by ``K`` leapfrog steps on the potential energy ``U(z) = -log p(x, z)``; after each step the momentum is
tempered, ``rho_k = sqrt(beta_{k-1} / beta_k) * rho'_k``, along a quadratic schedule that ends at ``beta_K = 1``.
Leapfrog maps preserve volume and the tempering Jacobians multiply to ``beta_0 ** (D / 2)``, which cancels the
``beta_0`` factor of the momentum's initial density, so the evidence lower bound is

    ELBO = E[ log p(x, z_K) + log N(rho_K; 0, I) - log q(z_0 | x) - log N(gamma_0; 0, I) ].

Every function here is independent of any network: the potential is a callable, so the maths can be checked on
toy potentials (see ``tests/models/test_hamiltonian.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch

# A potential returns (U(z) per sample with shape (B,), auxiliary values computed alongside U). The auxiliary value
# lets a caller keep, e.g., the likelihood terms of the final decoder pass instead of decoding z_K once more.
PotentialFn = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]

# A memory-saving replacement of ``potential_and_gradient(potential_fn, z, create_graph=True)``: ``(potential_fn, z) ->
# (U, grad U, aux)`` with the same values and gradients that keeps no graph between forward and backward, such as
# :func:`hvae_pipeline.models.flow_checkpointing.checkpointed_potential_and_gradient` (gradient checkpointing of the exact flow).
CheckpointFn = Callable[[PotentialFn, torch.Tensor], tuple[torch.Tensor, torch.Tensor, Any]]


class FlowOutput(NamedTuple):
    """End state of the flow.

    Attributes:
        z: The latent after ``K`` steps, ``z_K``.
        momentum: The tempered momentum after ``K`` steps, ``rho_K``.
        potential: ``U(z_K)`` per sample, shape ``(B,)``, with its graph (it serves the ELBO).
        aux: The auxiliary value the potential returned at ``z_K``.
    """

    z: torch.Tensor
    momentum: torch.Tensor
    potential: torch.Tensor
    aux: Any


def standard_normal_log_density(x: torch.Tensor) -> torch.Tensor:
    """Log density of ``N(0, I)`` at each sample of ``x`` (first axis = batch), summed over the other axes."""
    flat = x.flatten(1)
    return -0.5 * flat.pow(2).sum(dim=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def diagonal_gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log density of ``N(mean, diag(std^2))`` at each sample of ``x``, summed over all but the batch axis."""
    standardised = (x - mean) / std
    return standard_normal_log_density(standardised) - torch.log(std).flatten(1).sum(dim=1)


def quadratic_temperature_schedule(beta_zero: torch.Tensor | float, n_leapfrog: int) -> torch.Tensor:
    """Inverse temperatures ``beta_0, ..., beta_K`` of the quadratic tempering schedule.

    With ``T_0 = 1 / beta_zero``, ``T_k = (1 - T_0) k^2 / K^2 + T_0``, so ``T_K = 1``: the flow starts hot and ends at
    the target temperature. Differentiable in ``beta_zero`` (for a learnable ``beta_zero``).

    Args:
        beta_zero: Initial inverse temperature, in ``(0, 1]``.
        n_leapfrog: Number of leapfrog steps ``K`` (>= 0). With ``K = 0`` the schedule is ``[beta_zero]``.

    Returns:
        A tensor of shape ``(K + 1,)``.
    """
    if n_leapfrog < 0:
        raise ValueError(f"n_leapfrog must be >= 0, got {n_leapfrog}")
    if not torch.is_tensor(beta_zero):
        beta_zero = torch.tensor(float(beta_zero))
    if n_leapfrog == 0:
        return beta_zero.reshape(1)
    steps = torch.arange(n_leapfrog + 1, dtype=beta_zero.dtype, device=beta_zero.device)
    initial_temperature = 1.0 / beta_zero
    temperatures = (1.0 - initial_temperature) * steps.pow(2) / n_leapfrog**2 + initial_temperature
    return 1.0 / temperatures


def temper_momentum(momentum: torch.Tensor, beta_previous: torch.Tensor, beta_next: torch.Tensor) -> torch.Tensor:
    """Cool the momentum from inverse temperature ``beta_previous`` to ``beta_next``: ``rho * sqrt(b_prev / b_next)``."""
    return momentum * torch.sqrt(beta_previous / beta_next)


def potential_and_gradient(
    potential_fn: PotentialFn, z: torch.Tensor, create_graph: bool, checkpoint_fn: CheckpointFn | None = None
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Evaluate ``U(z)`` and ``grad_z U(z)`` for the whole batch in one backward call.

    Samples are independent (no batch statistics in the networks), so the gradient of the summed energy is the
    per-sample gradient.

    Args:
        potential_fn: ``z -> (U(z) of shape (B,), aux)``.
        z: Latent batch. If it does not require grad (sampling, evaluation), a detached leaf is used.
        create_graph: Keep the graph of the gradient so that a loss can be differentiated *through* it (exact HVAE
            training). ``False`` gives a constant gradient (cheaper, biased training; fine for evaluation).
        checkpoint_fn: When given (with ``create_graph=True``), it computes the whole evaluation instead, so that
            neither the activations nor the second-order graph of ``grad U`` stay in memory between the forward and
            the backward pass; both are recomputed in backward. Gradients are unchanged.

    Returns:
        ``(U(z), grad U(z), aux)``; ``U(z)`` keeps its graph.
    """
    if checkpoint_fn is not None and create_graph:
        return checkpoint_fn(potential_fn, z)
    with torch.enable_grad():
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        energy, aux = potential_fn(z)
        # retain_graph: U at the final point also enters the ELBO and is differentiated again later.
        (gradient,) = torch.autograd.grad(energy.sum(), z, create_graph=create_graph, retain_graph=True)
    return energy, gradient, aux


def leapfrog_step(
    z: torch.Tensor,
    momentum: torch.Tensor,
    gradient: torch.Tensor,
    potential_fn: PotentialFn,
    step_size: torch.Tensor | float,
    create_graph: bool = True,
    checkpoint_fn: CheckpointFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """One leapfrog step of Hamiltonian dynamics with unit mass.

    ``rho_half = rho - (eps / 2) grad U(z)``; ``z' = z + eps * rho_half`` (the *half-step* momentum moves ``z``);
    ``rho' = rho_half - (eps / 2) grad U(z')``. The map is volume-preserving and reversible.

    Args:
        z: Position, shape ``(B, ...)``.
        momentum: Momentum, same shape as ``z``.
        gradient: ``grad U(z)``, reused from the previous step so that ``K`` steps cost ``K + 1`` gradients.
        potential_fn: ``z -> (U(z), aux)``.
        step_size: ``eps``, a scalar or a tensor broadcastable to one sample (one step size per latent dimension).
        create_graph: See :func:`potential_and_gradient`.
        checkpoint_fn: See :func:`potential_and_gradient`.

    Returns:
        ``(z', rho', U(z'), grad U(z'), aux at z')``.
    """
    momentum_half = momentum - 0.5 * step_size * gradient
    z_next = z + step_size * momentum_half
    energy_next, gradient_next, aux_next = potential_and_gradient(potential_fn, z_next, create_graph, checkpoint_fn)
    momentum_next = momentum_half - 0.5 * step_size * gradient_next
    return z_next, momentum_next, energy_next, gradient_next, aux_next


def hamiltonian_flow(
    z: torch.Tensor,
    momentum: torch.Tensor,
    potential_fn: PotentialFn,
    step_size: torch.Tensor | float,
    betas: torch.Tensor,
    create_graph: bool = True,
    checkpoint_fn: CheckpointFn | None = None,
) -> FlowOutput:
    """Run ``K = len(betas) - 1`` tempered leapfrog steps from ``(z_0, rho_0)``.

    Args:
        z: Initial latent ``z_0``, shape ``(B, ...)``.
        momentum: Initial momentum ``rho_0 = gamma_0 / sqrt(beta_0)``.
        potential_fn: ``z -> (U(z) of shape (B,), aux)`` with ``U(z) = -log p(x, z)``.
        step_size: Leapfrog step size (scalar or per latent dimension).
        betas: Inverse temperatures ``beta_0 .. beta_K`` (see :func:`quadratic_temperature_schedule`).
        create_graph: Keep second-order graphs so the decoder is trained through the flow (exact gradients).
        checkpoint_fn: Gradient checkpointing of each potential-and-gradient evaluation (see
            :func:`potential_and_gradient`): peak memory of one evaluation instead of ``K + 1``, for about one more
            potential forward and first backward per evaluation.

    Returns:
        :class:`FlowOutput` at step ``K``. With ``K = 0`` the flow is the identity and ``U(z_0)`` is evaluated
        without any gradient computation (the VAE case costs one decoder pass).
    """
    n_leapfrog = betas.shape[0] - 1
    if n_leapfrog == 0:
        energy, aux = potential_fn(z)
        return FlowOutput(z, momentum, energy, aux)
    energy, gradient, aux = potential_and_gradient(potential_fn, z, create_graph, checkpoint_fn)
    for k in range(1, n_leapfrog + 1):
        z, momentum, energy, gradient, aux = leapfrog_step(
            z, momentum, gradient, potential_fn, step_size, create_graph, checkpoint_fn
        )
        momentum = temper_momentum(momentum, betas[k - 1], betas[k])
    return FlowOutput(z, momentum, energy, aux)
