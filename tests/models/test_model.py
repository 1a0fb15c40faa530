"""HVAEModel: the ELBO, gradients through the flow, likelihood estimates, configuration and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import random_pairs

from hvae_pipeline import HVAEModel


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_vae_case_equals_textbook_elbo(tiny_config):
    torch.manual_seed(0)
    model = HVAEModel(**tiny_config, n_leapfrog=0, beta_zero=1.0).double()
    images, masks = random_pairs(3, 16)
    images = images.double()
    output = model(images, masks, generator=seeded(1))

    # Textbook single-sample VAE ELBO (Kingma & Welling, estimator B): log p(x|z) - KL(q || N(0, I)), same noise.
    posterior = model.encode(images, masks).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=seeded(1), dtype=torch.float64)
    z = posterior.mean + posterior.std * noise
    decoded = model.decode(z)
    log_likelihood = -F.binary_cross_entropy_with_logits(decoded.image_logits, images, reduction="none").sum((1, 2, 3))
    log_likelihood -= F.binary_cross_entropy_with_logits(
        decoded.mask_logits[:, 0], masks.double(), reduction="none"
    ).sum((1, 2))
    variance = posterior.std.pow(2)
    kl = 0.5 * (posterior.mean.pow(2) + variance - 1 - variance.log()).sum((1, 2, 3))
    assert torch.allclose(output.elbo, log_likelihood - kl, rtol=1e-12, atol=1e-9)
    assert torch.equal(output.flow_gain, torch.zeros(3, dtype=torch.float64))
    assert output.loss.item() == pytest.approx(-(log_likelihood - kl).mean().item(), rel=1e-12)


def test_elbo_decomposes_into_reported_terms(tiny_config):
    model = HVAEModel(**tiny_config)
    images, masks = random_pairs(4, 16)
    out = model(images, masks, generator=seeded())
    recomposed = out.image_log_likelihood + out.mask_log_likelihood - out.kl + out.flow_gain
    assert torch.allclose(out.elbo, recomposed)
    assert out.z.shape == (4, *model.latent_shape)
    assert torch.all(out.kl >= 0)
    assert out.flow_gain.abs().sum() > 0  # K = 3: the flow moves z and the momentum


def test_gradients_reach_decoder_through_the_flow(tiny_config):
    torch.manual_seed(0)
    exact = HVAEModel(**tiny_config, step_size=0.05)
    detached = HVAEModel(**tiny_config, step_size=0.05, flow_gradient="detached")
    detached.load_state_dict(exact.state_dict())
    images, masks = random_pairs(2, 16)
    decoder_weight = exact.decoder.conv_out.weight

    # z_K depends on the decoder only through grad U: exact keeps that path, detached cuts it.
    z_exact = exact(images, masks, generator=seeded()).z
    (path,) = torch.autograd.grad(z_exact.sum(), decoder_weight, allow_unused=True)
    assert path is not None and path.abs().sum() > 0
    z_detached = detached(images, masks, generator=seeded()).z
    (no_path,) = torch.autograd.grad(z_detached.sum(), detached.decoder.conv_out.weight, allow_unused=True)
    assert no_path is None or no_path.abs().sum() == 0
    assert torch.allclose(z_exact, z_detached)  # same forward maths, only the gradient differs

    exact(images, masks, generator=seeded()).loss.backward()
    detached(images, masks, generator=seeded()).loss.backward()
    difference = (exact.decoder.conv_out.weight.grad - detached.decoder.conv_out.weight.grad).abs().max()
    assert difference > 1e-6 * exact.decoder.conv_out.weight.grad.abs().max()


def _train_briefly(model: HVAEModel, images, masks, steps: int = 20) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(steps):
        optimiser.zero_grad()
        loss = model(images, masks, generator=seeded(step)).loss
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def test_importance_sampled_likelihood_is_at_least_the_elbo(tiny_config):
    torch.manual_seed(0)
    model = HVAEModel(**tiny_config, step_size=0.02)
    images, masks = random_pairs(4, 16, seed=3)
    losses = _train_briefly(model, images, masks)
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        elbos = torch.stack([model(images, masks, generator=seeded(100 + i)).elbo for i in range(16)]).mean(0)
    log_likelihood = model.estimate_log_likelihood(images, masks, n_samples=16, generator=seeded(7))
    assert log_likelihood.shape == (4,)
    assert log_likelihood.mean() >= elbos.mean()
    single = model.estimate_log_likelihood(images, masks, n_samples=1, generator=seeded(7))
    assert torch.all(torch.isfinite(single))


def test_learnable_step_size_and_beta_zero_stay_in_bounds_and_learn(tiny_config):
    model = HVAEModel(**tiny_config, learn_step_size=True, learn_beta_zero=True, step_size=0.01, beta_zero=0.5)
    assert model.leapfrog_step_size().shape == model.latent_shape
    assert torch.allclose(model.leapfrog_step_size(), torch.full(model.latent_shape, 0.01))
    assert model.temperature_schedule()[0].item() == pytest.approx(0.5)
    images, masks = random_pairs(2, 16)
    model(images, masks, generator=seeded()).loss.backward()
    assert model.step_size_logit.grad.abs().sum() > 0
    assert model.beta_zero_logit.grad.abs() > 0
    with torch.no_grad():
        model.step_size_logit.fill_(50.0)
    assert torch.all(model.leapfrog_step_size() <= model.config.max_step_size)
    assert torch.all(model.leapfrog_step_size() > 0)


def test_multiclass_and_gaussian_likelihoods(tiny_config):
    model = HVAEModel(**tiny_config, mask_channels=4, image_likelihood="gaussian")
    images, masks = random_pairs(2, 16, mask_channels=4)
    out = model(images, masks, generator=seeded())
    assert torch.isfinite(out.elbo).all()
    decoded = model.decode(out.z)
    assert decoded.mask_logits.shape == (2, 4, 16, 16)
    # Categorical term equals the hand-computed log-softmax of the true classes at z_K.
    log_probs = decoded.mask_logits.log_softmax(1).gather(1, masks.unsqueeze(1)).sum((1, 2, 3))
    assert torch.allclose(out.mask_log_likelihood, log_probs, atol=1e-3)
    out.loss.backward()
    assert model.image_log_scale.grad is not None


def test_seeded_forward_is_deterministic(tiny_config):
    model = HVAEModel(**tiny_config)
    images, masks = random_pairs(2, 16)
    first = model(images, masks, generator=seeded(5)).elbo
    second = model(images, masks, generator=seeded(5)).elbo
    third = model(images, masks, generator=seeded(6)).elbo
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_no_grad_evaluation_runs_the_flow(tiny_config):
    model = HVAEModel(**tiny_config).eval()
    images, masks = random_pairs(2, 16)
    with_grad = model(images, masks, generator=seeded()).elbo.detach()
    with torch.no_grad():
        without_grad = model(images, masks, generator=seeded()).elbo
    assert torch.allclose(with_grad, without_grad, atol=1e-4)


def test_bf16_autocast_keeps_the_flow_and_likelihood_in_float32(tiny_config):
    # Under bf16 autocast (GPU mixed precision) the networks run in bf16 but the latent arithmetic must not: a leapfrog
    # update eps * momentum (eps = 1e-3) is below bf16's resolution near |z| ~ 1 and would be rounded away.
    model = HVAEModel(**tiny_config, step_size=1e-3).eval()
    images, masks = random_pairs(4, 16)
    with torch.no_grad():
        reference = model(images, masks, generator=seeded())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images, masks, generator=seeded())
            decoded = model.decode(mixed.z)
            mixed_z0 = model.encode(images, masks).latent_dist.sample(seeded())  # the forward's first draw
        z0 = model.encode(images, masks).latent_dist.sample(seeded())
    assert mixed.z.dtype == mixed.elbo.dtype == decoded.mask_logits.dtype == mixed_z0.dtype == torch.float32
    reference_move, mixed_move = reference.z - z0, mixed.z - mixed_z0
    assert reference_move.abs().max() > 1e-4  # the flow moves z by ~K * eps
    # The networks' bf16 rounding changes grad U by a few per cent; the move itself must survive.
    assert torch.linalg.vector_norm(mixed_move - reference_move) < 0.1 * torch.linalg.vector_norm(reference_move)
    assert torch.allclose(mixed.elbo, reference.elbo, rtol=0.02)


def test_output_survives_accelerate_mixed_precision_conversion(tiny_config):
    # With mixed_precision="bf16", Accelerate wraps forward and rebuilds its output with convert_to_fp32, which calls
    # type(output)(dict): this broke the first GPU training run.
    from accelerate.utils.operations import convert_to_fp32

    output = HVAEModel(**tiny_config)(*random_pairs(2, 16), generator=seeded())
    half = type(output)(**{key: value.to(torch.bfloat16) for key, value in output.items()})
    converted = convert_to_fp32(half)
    assert type(converted) is type(output) and list(converted.keys()) == list(output.keys())
    for key, value in converted.items():
        assert value.dtype == torch.float32 and torch.allclose(value, output[key], rtol=1e-2, atol=1e-2), key


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda: (torch.rand(2, 2, 16, 16), torch.zeros(2, 16, 16)), "channels"),
        (lambda: (torch.rand(2, 1, 32, 32), torch.zeros(2, 32, 32)), "sample_size"),
        (lambda: (torch.rand(2, 1, 16, 16), torch.full((2, 16, 16), 2)), "masks"),
        (lambda: (torch.rand(2, 1, 16, 16), torch.full((2, 16, 16), 0.5)), "masks"),
        (lambda: (torch.full((2, 1, 16, 16), float("nan")), torch.zeros(2, 16, 16)), "NaN"),
        (lambda: (torch.rand(2, 1, 16, 16) * 3, torch.zeros(2, 16, 16)), r"\[0, 1\]"),
        (lambda: (torch.rand(2, 1, 16, 16), torch.zeros(3, 16, 16)), "batch size"),
        (lambda: (torch.randint(0, 2, (2, 1, 16, 16)), torch.zeros(2, 16, 16)), "float"),
    ],
)
def test_bad_input_raises_value_error(tiny_config, make_inputs, message):
    model = HVAEModel(**tiny_config)
    images, masks = make_inputs()
    with pytest.raises(ValueError, match=message):
        model(images, masks)


def test_masks_with_channel_axis_and_bool_dtype_are_accepted(tiny_config):
    model = HVAEModel(**tiny_config)
    images, masks = random_pairs(2, 16)
    reference = model(images, masks, generator=seeded()).elbo
    assert torch.equal(model(images, masks.unsqueeze(1).float(), generator=seeded()).elbo, reference)
    assert torch.equal(model(images, masks.bool(), generator=seeded()).elbo, reference)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_leapfrog=0), "beta_zero=1"),
        (dict(beta_zero=1.5), "beta_zero"),
        (dict(step_size=0.0), "step_size"),
        (dict(image_likelihood="poisson"), "image_likelihood"),
        (dict(flow_gradient="approximate"), "flow_gradient"),
        (dict(attention_levels=(False,)), "attention_levels"),
        (dict(sample_size=15), "sample_size"),
        (dict(learn_beta_zero=True, beta_zero=1.0), "learn_beta_zero"),
        (dict(decoder_block_out_channels=(16,)), "decoder_block_out_channels"),
    ],
)
def test_bad_configuration_raises_value_error(tiny_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        HVAEModel(**{**tiny_config, **overrides})


def test_a_wider_decoder_keeps_the_encoder_and_the_bound_and_survives_save_and_load(tiny_config, tmp_path):
    torch.manual_seed(0)
    mirrored = HVAEModel(**tiny_config, step_size=0.05)
    wider = HVAEModel(**tiny_config, step_size=0.05, decoder_block_out_channels=(16, 32))
    assert mirrored.config.decoder_block_out_channels is None
    # The encoder is the mirrored model's, weight for weight; the decoder's convolutions are twice as wide.
    assert {k: v.shape for k, v in wider.encoder.state_dict().items()} == {
        k: v.shape for k, v in mirrored.encoder.state_dict().items()}
    assert wider.decoder.conv_in.out_channels == 32 and wider.decoder.conv_out.in_channels == 16
    assert mirrored.decoder.conv_in.out_channels == 16 and mirrored.decoder.conv_out.in_channels == 8
    assert wider.latent_shape == mirrored.latent_shape

    images, masks = random_pairs(3, 16)
    out = wider(images, masks, generator=seeded())
    assert torch.allclose(out.elbo, out.image_log_likelihood + out.mask_log_likelihood - out.kl + out.flow_gain)
    out.loss.backward()  # the exact flow differentiates the wider decoder twice
    assert wider.decoder.conv_out.weight.grad.abs().sum() > 0
    assert wider.decode(out.z.detach()).mask_logits.shape == (3, 1, 16, 16)

    wider.save_pretrained(tmp_path / "model")
    loaded = HVAEModel.from_pretrained(tmp_path / "model")
    assert list(loaded.config.decoder_block_out_channels) == [16, 32]
    with torch.no_grad():
        reloaded_elbo = loaded(images, masks, generator=seeded()).elbo
        assert torch.equal(reloaded_elbo, wider(images, masks, generator=seeded()).elbo)


def test_decode_checks_latent_shape(tiny_config):
    model = HVAEModel(**tiny_config)
    with pytest.raises(ValueError, match="`z` must have shape"):
        model.decode(torch.zeros(1, 3, 4, 4))


def test_learnt_flow_survives_save_and_load_and_is_summarised(tiny_config, tmp_path):
    model = HVAEModel(**tiny_config, learn_step_size=True, learn_beta_zero=True, step_size=0.01, beta_zero=0.5)
    with torch.no_grad():
        model.step_size_logit.copy_(torch.randn(model.latent_shape, generator=seeded(3)) - 3.0)
        model.beta_zero_logit.fill_(-1.0)
    model.save_pretrained(tmp_path / "model")
    loaded = HVAEModel.from_pretrained(tmp_path / "model")
    assert torch.equal(loaded.leapfrog_step_size(), model.leapfrog_step_size())
    assert torch.equal(loaded.temperature_schedule(), model.temperature_schedule())
    steps = model.leapfrog_step_size().flatten()
    summary = loaded.flow_summary()
    assert summary["step_size_min"] == pytest.approx(steps.min().item())
    assert summary["step_size_median"] == pytest.approx(steps.median().item())
    assert summary["step_size_max"] == pytest.approx(steps.max().item())
    assert summary["beta_zero"] == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item())
    assert [p.shape for p in loaded.flow_parameters()] == [model.latent_shape, ()]
    fixed = HVAEModel(**tiny_config).flow_summary()
    assert fixed["step_size_min"] == fixed["step_size_max"] == pytest.approx(1e-3) and HVAEModel(
        **tiny_config).flow_parameters() == []


def test_learnt_flow_with_the_flow_off_is_exactly_the_vae_bound(tiny_config):
    learnt = HVAEModel(**tiny_config, learn_step_size=True, learn_beta_zero=True, step_size=0.05, beta_zero=0.4)
    vae = HVAEModel(**tiny_config, n_leapfrog=0, beta_zero=1.0)
    networks = {k: v for k, v in learnt.state_dict().items() if k not in ("step_size_logit", "beta_zero_logit")}
    vae.load_state_dict(networks)
    images, masks = random_pairs(3, 16)
    with torch.no_grad():
        off = learnt(images, masks, generator=seeded(5), n_leapfrog=0)
        reference = vae(images, masks, generator=seeded(5))
    assert torch.equal(off.elbo, reference.elbo) and torch.all(off.flow_gain == 0)
