"""Gradient modes of HVAEModel: gradient checkpointing leaves gradients unchanged; ``flow_gradient="detached"`` is the
stated biased estimator, recomputed here by hand from ``encode``/``decode`` and a hand-written leapfrog."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import random_pairs

from hvae_pipeline import HVAEModel
from hvae_pipeline.models.flow_checkpointing import choose_chunk_size

STEP_SIZE = 0.05  # large enough for the flow to move z measurably in a tiny float64 model
BETA_ZERO = 0.3


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def parameter_gradients(model: HVAEModel, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of ``loss`` w.r.t. every parameter, through ``backward`` as in training."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def max_relative_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    """Largest ``max |a - b| / max |a|`` over parameters (both dicts must name the same parameters)."""
    assert first.keys() == second.keys()
    return max(((first[k] - second[k]).abs().max() / first[k].abs().max().clamp_min(1e-300)).item() for k in first)


def count_calls(module: torch.nn.Module) -> list[int]:
    """A one-element counter of ``module``'s forward calls, recomputations in backward included.

    The instance's ``forward`` is wrapped rather than hooked: checkpoint recomputations do not fire forward hooks.
    """
    counter = [0]
    forward = module.forward

    def counted(*args: torch.Tensor) -> torch.Tensor:
        counter[0] += 1
        return forward(*args)

    module.forward = counted
    return counter


@pytest.mark.parametrize("n_leapfrog, beta_zero", [(3, BETA_ZERO), (0, 1.0)], ids=["exact-hvae-K3", "vae-K0"])
def test_gradient_checkpointing_leaves_gradients_unchanged(tiny_config, n_leapfrog, beta_zero):
    torch.manual_seed(0)
    model = HVAEModel(**tiny_config, n_leapfrog=n_leapfrog, beta_zero=beta_zero, step_size=STEP_SIZE).double()
    images, masks = random_pairs(3, 16)
    images = images.double()
    encoder_calls = count_calls(model.encoder.blocks[0])
    decoder_calls = count_calls(model.decoder.blocks[0])

    plain = parameter_gradients(model, model(images, masks, generator=seeded(1)).loss)
    plain_calls = (encoder_calls[0], decoder_calls[0])
    assert plain_calls == (1, n_leapfrog + 1)  # one encoder pass, K + 1 decoder passes, nothing recomputed

    model.enable_gradient_checkpointing()  # the diffusers switch, as training.gradient_checkpointing uses it
    assert model.is_gradient_checkpointing
    encoder_calls[0] = decoder_calls[0] = 0
    checkpointed = parameter_gradients(model, model(images, masks, generator=seeded(1)).loss)
    # Checkpointing really ran: activations were dropped and recomputed (more block calls), yet gradients agree.
    assert encoder_calls[0] == 2
    assert decoder_calls[0] > plain_calls[1]
    assert max_relative_difference(plain, checkpointed) <= 1e-6

    model.disable_gradient_checkpointing()
    encoder_calls[0] = decoder_calls[0] = 0
    again = parameter_gradients(model, model(images, masks, generator=seeded(1)).loss)
    assert (encoder_calls[0], decoder_calls[0]) == plain_calls
    assert max_relative_difference(plain, again) == 0.0


@pytest.mark.parametrize("chunk_size", [1, 2, None])
def test_chunked_flow_checkpointing_leaves_gradients_unchanged(tiny_config, chunk_size):
    torch.manual_seed(0)
    model = HVAEModel(**tiny_config, n_leapfrog=3, beta_zero=BETA_ZERO, step_size=STEP_SIZE).double()
    images, masks = random_pairs(3, 16)  # 3 samples: chunks of 2 leave an uneven last chunk
    images = images.double()
    plain = parameter_gradients(model, model(images, masks, generator=seeded(1)).loss)
    plain_elbo = model(images, masks, generator=seeded(1)).elbo.detach()

    model.enable_gradient_checkpointing()
    model.flow_checkpoint_chunk_size = chunk_size
    decoder_batches: list[int] = []
    handle = model.decoder.register_forward_pre_hook(lambda module, args: decoder_batches.append(args[0].shape[0]))
    output = model(images, masks, generator=seeded(1))
    handle.remove()
    chunked = parameter_gradients(model, output.loss)
    # Each of the K + 1 evaluations really ran chunk by chunk, and the result is the same function of the parameters.
    expected_chunks = [3] if chunk_size is None else [min(chunk_size, 3 - start) for start in range(0, 3, chunk_size)]
    assert decoder_batches == expected_chunks * 4
    assert torch.allclose(output.elbo.detach(), plain_elbo, rtol=1e-12)
    assert max_relative_difference(plain, chunked) <= 1e-6


def test_checkpointed_flow_recomputes_under_the_forward_autocast_state(tiny_config):
    # Mixed precision: the backward pass of a checkpointed evaluation must recompute in bf16 as the forward did,
    # otherwise its gradients would be those of a different (fp32) function. Autograd runs backward outside the
    # autocast context, so the state has to be carried over explicitly.
    model = HVAEModel(**tiny_config, n_leapfrog=3, beta_zero=BETA_ZERO, step_size=STEP_SIZE)
    model.enable_gradient_checkpointing()
    model.flow_checkpoint_chunk_size = 1
    images, masks = random_pairs(2, 16)
    autocast_states: list[bool] = []
    model.decoder.register_forward_pre_hook(lambda *_: autocast_states.append(torch.is_autocast_enabled("cpu")))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(images, masks, generator=seeded(1)).loss
    loss.backward()
    # 4 evaluations x 2 chunks in forward, and again in backward: every one of them under bf16 autocast.
    assert autocast_states == [True] * 16


def test_auto_chunk_size_suits_the_device():
    gigabyte = 1024**3
    # Free memory unknown: 4.
    assert choose_chunk_size("cpu", 16, 10**7, None) == 4
    # Known (CUDA, or a CPU's MemAvailable): the whole batch where it fits in half the free memory; else the largest chunk that does, at least 1.
    per_sample = 16 * 10**7  # bytes recomputed per sample for 1e7 activation elements
    assert choose_chunk_size("cuda", 16, 10**7, 100 * gigabyte) is None
    assert choose_chunk_size("cuda", 16, 10**7, 10 * per_sample) == 5
    assert choose_chunk_size("cuda", 16, 10**7, per_sample) == 1
    for free in (3 * per_sample, 17 * per_sample, 31 * per_sample, 33 * per_sample):
        chosen = choose_chunk_size("cuda", 16, 10**7, free)
        assert (16 if chosen is None else chosen) * per_sample <= free / 2 or chosen == 1


def test_auto_is_the_default_and_resolves_on_this_device(tiny_config):
    model = HVAEModel(**tiny_config)
    assert model.flow_checkpoint_chunk_size == "auto"
    # The tiny model's recomputation fits in half of this machine's free memory: the whole batch.
    assert model._resolved_chunk_size(torch.zeros(16, *model.latent_shape)) is None
    model.flow_checkpoint_chunk_size = 3
    assert model._resolved_chunk_size(torch.zeros(16, *model.latent_shape)) == 3
    model.flow_checkpoint_chunk_size = None
    assert model._resolved_chunk_size(torch.zeros(16, *model.latent_shape)) is None
    # The activation count that sizes GPU chunks: every leaf output of one decoder pass, the final 2-channel image
    # and the latent-sized first convolution's input side among them.
    assert model._count_decoder_activations() > 2 * tiny_config["sample_size"] ** 2


@pytest.mark.parametrize("chunk_size", [0, -2, 1.5, True, "whole"])
def test_flow_checkpoint_chunk_size_is_validated(tiny_config, chunk_size):
    with pytest.raises(ValueError, match="flow_checkpoint_chunk_size"):
        HVAEModel(**tiny_config).flow_checkpoint_chunk_size = chunk_size


def hand_written_hvae_loss(
    model: HVAEModel, images: torch.Tensor, masks: torch.Tensor, seed: int, n_leapfrog: int, exact: bool
) -> torch.Tensor:
    """The HVAE loss of Caterini et al. written out with ``encode``/``decode`` only (binary mask, Bernoulli image).

    ``exact=True`` keeps the graph of every ``grad U`` (create_graph=True); ``False`` takes ``grad U`` as a constant,
    computed on a detached copy of ``z`` with ``create_graph=False``: the ``"detached"`` estimator.
    """
    generator = seeded(seed)
    posterior = model.encode(images, masks).latent_dist
    z0 = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float64)
    gamma0 = torch.randn(z0.shape, generator=generator, dtype=torch.float64)

    def log_likelihood(z: torch.Tensor) -> torch.Tensor:
        decoded = model.decode(z)
        image = -F.binary_cross_entropy_with_logits(decoded.image_logits, images, reduction="none").sum((1, 2, 3))
        mask = -F.binary_cross_entropy_with_logits(decoded.mask_logits[:, 0], masks.double(), reduction="none")
        return image + mask.sum((1, 2))

    def log_normal(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.pow(2).sum((1, 2, 3)) - 0.5 * x[0].numel() * math.log(2 * math.pi)

    def grad_potential(z: torch.Tensor) -> torch.Tensor:
        point = z if exact else z.detach().requires_grad_(True)
        potential = -(log_likelihood(point) + log_normal(point)).sum()
        return torch.autograd.grad(potential, point, create_graph=exact)[0]

    # Quadratic tempering: T_0 = 1 / beta_0, T_k = (1 - T_0) k^2 / K^2 + T_0, beta_k = 1 / T_k.
    betas = [1.0 / ((1 - 1 / BETA_ZERO) * k**2 / n_leapfrog**2 + 1 / BETA_ZERO) for k in range(n_leapfrog + 1)]
    z, momentum = z0, gamma0 / math.sqrt(BETA_ZERO)
    for k in range(1, n_leapfrog + 1):
        half = momentum - 0.5 * STEP_SIZE * grad_potential(z)
        z = z + STEP_SIZE * half
        momentum = (half - 0.5 * STEP_SIZE * grad_potential(z)) * math.sqrt(betas[k - 1] / betas[k])
    variance = posterior.std.pow(2)
    kl = 0.5 * (posterior.mean.pow(2) + variance - 1 - variance.log()).sum((1, 2, 3))
    elbo = log_likelihood(z) - kl + log_normal(z) - log_normal(z0) + log_normal(momentum) - log_normal(gamma0)
    return -elbo.mean()


def test_detached_flow_gradient_is_the_hand_computed_biased_estimator(tiny_config):
    torch.manual_seed(0)
    exact = HVAEModel(**tiny_config, step_size=STEP_SIZE, beta_zero=BETA_ZERO).double()
    detached = HVAEModel(**tiny_config, step_size=STEP_SIZE, beta_zero=BETA_ZERO, flow_gradient="detached").double()
    detached.load_state_dict(exact.state_dict())
    images, masks = random_pairs(3, 16, seed=2)
    images = images.double()
    n_leapfrog = exact.config.n_leapfrog

    exact_model = parameter_gradients(exact, exact(images, masks, generator=seeded(4)).loss)
    detached_model = parameter_gradients(detached, detached(images, masks, generator=seeded(4)).loss)
    detached_hand = parameter_gradients(
        detached, hand_written_hvae_loss(detached, images, masks, seed=4, n_leapfrog=n_leapfrog, exact=False)
    )
    exact_hand = parameter_gradients(
        exact, hand_written_hvae_loss(exact, images, masks, seed=4, n_leapfrog=n_leapfrog, exact=True)
    )

    assert max_relative_difference(detached_hand, detached_model) <= 1e-6
    assert max_relative_difference(exact_hand, exact_model) <= 1e-6
    # Same forward maths, different gradients: the decoder's path through grad U is what "detached" drops.
    assert max_relative_difference(exact_model, detached_model) > 1e-3
