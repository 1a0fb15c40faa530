"""The discriminative HVAE's loss terms (training/objectives.py) and their config section, on tiny data."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import TINY_CONFIG, random_pairs

from hvae_pipeline import HVAEModel
from hvae_pipeline.models.perceptual import PACKAGED_FEATURE_ENCODER, FeatureEncoder, load_feature_encoder
from hvae_pipeline.training.config import DEFAULTS, ConfigError, load_config
from hvae_pipeline.training.config_rules import OBJECTIVES_RULES
from hvae_pipeline.training.objectives import (
    MAX_ADAPTIVE_WEIGHT,
    DiscriminativeObjective,
    adaptive_weight,
    describe_objectives,
    hinge_discriminator_loss,
    hinge_generator_loss,
    l1_term,
    perceptual_term,
)

norms = st.floats(min_value=0.0, max_value=1e30, allow_nan=False, allow_infinity=False)


def tiny_encoder(seed: int = 0) -> FeatureEncoder:
    torch.manual_seed(seed)
    return FeatureEncoder(block_out_channels=(8, 8)).eval().requires_grad_(False)


def test_l1_is_zero_for_a_perfect_reconstruction_and_the_mean_pixel_sum_otherwise():
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert l1_term(images.clone(), images).item() == 0.0
    shifted = (images + 0.25).clamp(0, 1)
    expected = sum((shifted[i] - images[i]).abs().sum() for i in range(3)) / 3
    assert torch.allclose(l1_term(shifted, images), expected)
    assert torch.equal(l1_term(shifted, images), l1_term(images, shifted))


def test_perceptual_term_is_zero_for_identical_images_and_positive_otherwise():
    encoder = tiny_encoder()
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    assert perceptual_term(encoder, images, images.clone()).item() == pytest.approx(0.0, abs=1e-9)
    other = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    distance = perceptual_term(encoder, other, images)
    # Each of the two levels contributes at most 4 per pixel (unit vectors at most 2 apart).
    assert 0 < distance.item() <= 2 * 4 * 16 * 16


def test_perceptual_term_differentiates_through_the_reconstruction_only():
    encoder = tiny_encoder()
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    reconstructions = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    perceptual_term(encoder, reconstructions, images).backward()
    assert reconstructions.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in encoder.parameters())


def test_hinge_losses():
    confident = hinge_discriminator_loss(torch.full((2, 1, 3, 3), 1.5), torch.full((2, 1, 3, 3), -1.0))
    assert confident.item() == 0.0
    undecided = hinge_discriminator_loss(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    assert undecided.item() == 1.0
    logits = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hinge_generator_loss(logits), -logits.mean())


@given(reconstruction=norms, adversarial=norms)
@settings(max_examples=200, deadline=None)
def test_adaptive_weight_is_finite_and_bounded_for_any_norms(reconstruction, adversarial):
    weight = adaptive_weight(torch.tensor(reconstruction), torch.tensor(adversarial)).item()
    assert math.isfinite(weight) and 0.0 <= weight <= MAX_ADAPTIVE_WEIGHT


def test_adaptive_weight_with_zero_gradient_norms():
    assert adaptive_weight(torch.tensor(3.0), torch.tensor(0.0)).item() == MAX_ADAPTIVE_WEIGHT
    assert adaptive_weight(torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0
    assert adaptive_weight(torch.tensor(0.0), torch.tensor(2.0)).item() == 0.0
    assert adaptive_weight(torch.tensor(2.0), torch.tensor(1.0)).item() == pytest.approx(2.0 / 1.0001)


def test_every_objectives_key_has_a_rule_and_terms_are_off_by_default():
    assert set(OBJECTIVES_RULES) == set(DEFAULTS["objectives"])
    objectives = load_config("phantom-tiny")["objectives"]
    assert not (objectives["l1"] or objectives["perceptual"] or objectives["adversarial"])
    assert objectives["weight"] == 0.05


@pytest.mark.parametrize("override, message", [
    ("objectives.weight=1", "objectives.weight=1: expected a number in (0, 1)"),
    ("objectives.l1=yes please", "objectives.l1='yes please': expected true or false"),
    ("objectives.discriminator_channels=12", "objectives.discriminator_channels=12: expected a multiple of 8"),
    ("objectives.adversarial=true", "objectives.adversarial=True needs objectives.l1 or objectives.perceptual"),
    ("objectives.unknown=1", "unknown key objectives.unknown"),
])
def test_bad_objectives_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("phantom-tiny", [override])


def test_the_packaged_feature_network_is_small_and_loads_frozen():
    weights = PACKAGED_FEATURE_ENCODER / "diffusion_pytorch_model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 2 * 1024**2
    encoder = load_feature_encoder()
    assert not encoder.training and not any(parameter.requires_grad for parameter in encoder.parameters())
    features = encoder(torch.rand(1, 1, 32, 32))
    assert [tuple(level.shape) for level in features] == [(1, 16, 32, 32), (1, 32, 16, 16), (1, 64, 8, 8),
                                                          (1, 64, 4, 4)]


def test_a_missing_feature_network_says_how_to_rebuild_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_feature_network.py"):
        load_feature_encoder(tmp_path)


def objective_on_tiny_model(tmp_path, **overrides):
    """A DiscriminativeObjective with every term on, around a tiny HVAE, and that model."""
    from accelerate import Accelerator

    tiny_encoder().save_pretrained(tmp_path / "features")
    settings = dict(DEFAULTS["objectives"], l1=True, perceptual=True, adversarial=True, discriminator_channels=8,
                    discriminator_layers=1, feature_network=str(tmp_path / "features"), **overrides)
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(HVAEModel(**TINY_CONFIG, n_leapfrog=2, step_size=0.01))
    training = {"learning_rate": 1e-3, "adam_betas": [0.9, 0.999]}
    return DiscriminativeObjective(settings, training, accelerator, model), model


def terms_at(objective, model, step: int) -> dict[str, torch.Tensor]:
    images, masks = random_pairs(4, 16)
    output = model(images, masks, generator=torch.Generator().manual_seed(0))
    return objective.add_terms({"loss": output.loss}, images, masks, step)


def test_adversarial_term_is_exactly_zero_before_its_start_step(tmp_path):
    objective, model = objective_on_tiny_model(tmp_path, adversarial_start_step=3)
    before = {name: value.clone() for name, value in objective.discriminator.state_dict().items()}
    terms = terms_at(objective, model, step=2)
    assert terms["adversarial"].item() == 0.0 and terms["adaptive_weight"].item() == 0.0
    assert terms["discriminator_loss"].item() == 0.0
    assert all(torch.equal(value, objective.discriminator.state_dict()[name]) for name, value in before.items())
    expected = 0.95 * terms["hvae_loss"] + 0.05 * (terms["l1"] + terms["perceptual"])
    assert torch.equal(terms["loss"], expected)

    terms = terms_at(objective, model, step=3)
    assert terms["adversarial"].item() != 0.0 and terms["adaptive_weight"].item() > 0
    assert any(not torch.equal(value, objective.discriminator.state_dict()[name]) for name, value in before.items())
    expected = 0.95 * terms["hvae_loss"] + 0.05 * (terms["l1"] + terms["perceptual"]
                                                   + terms["adaptive_weight"] * terms["adversarial"])
    assert torch.allclose(terms["loss"], expected)


def test_the_mixed_loss_trains_the_decoder_and_not_the_discriminator(tmp_path):
    objective, model = objective_on_tiny_model(tmp_path)
    terms_at(objective, model, step=0)["loss"].backward()
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in objective.discriminator.parameters())


def test_the_adaptive_weight_balances_the_last_layer_gradients(tmp_path):
    objective, model = objective_on_tiny_model(tmp_path)
    images, masks = random_pairs(4, 16)
    model(images, masks, generator=torch.Generator().manual_seed(0))
    latents = objective._latents.detach()
    terms = objective.add_terms({"loss": torch.zeros(())}, images, masks, step=0)
    # Recompute both terms on a fresh decoding of the same latents, with the discriminator's updated weights.
    decoded, alias = objective.reconstruct(latents)
    encoder = objective.feature_encoder
    reconstruction = l1_term(decoded.images, images) + perceptual_term(encoder, decoded.images, images)
    pairs = torch.cat([decoded.images, torch.sigmoid(decoded.mask_logits)], dim=1)
    adversarial = hinge_generator_loss(objective.discriminator(pairs))
    (reconstruction_gradient,) = torch.autograd.grad(reconstruction, alias, retain_graph=True)
    (adversarial_gradient,) = torch.autograd.grad(adversarial, alias)
    assert terms["adaptive_weight"].item() == pytest.approx(
        (reconstruction_gradient.norm() / (adversarial_gradient.norm() + 1e-4)).item(), rel=1e-5)


def test_add_terms_needs_the_forward_pass_of_the_micro_batch(tmp_path):
    objective, model = objective_on_tiny_model(tmp_path)
    images, masks = random_pairs(4, 16)
    with pytest.raises(RuntimeError, match="forward pass"):
        objective.add_terms({"loss": torch.zeros(())}, images, masks, step=0)


def test_the_card_states_the_objectives_that_are_on_and_nothing_when_off():
    off = dict(DEFAULTS["objectives"])
    assert describe_objectives(off) == ""
    on = dict(off, l1=True, perceptual=True, adversarial=True, adversarial_start_step=50)
    text = describe_objectives(on)
    assert "(1 - 0.05) x HVAE + 0.05 x (L1 on the image + perceptual + adaptively weighted hinge GAN)" in text
    assert "not the Inception network" in text and "from step 50" in text
    assert "adaptively weighted" not in describe_objectives(dict(off, l1=True))
