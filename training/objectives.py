"""Training objectives beyond the ELBO: the discriminative HVAE's L1, perceptual and adversarial terms (issue 25).

With any of the config's ``objectives.l1``, ``objectives.perceptual`` or ``objectives.adversarial`` on, an HVAE step
minimises::

    (1 - w) * HVAE + w * (L1 + perceptual + adaptive_weight * GAN)        w = objectives.weight (0.05)

where HVAE is the usual ``-ELBO`` and the other terms judge the *reconstruction* ``decode(z_K)`` of each training pair
(Kebaili et al., arXiv 2406.11659; the adaptive weight as in Esser et al., "Taming Transformers", CVPR 2021):

- L1 (:func:`l1_term`): ``|x_hat - x|`` over the image channels, summed over pixels like the ELBO's nats per slice,
  so that ``w`` mixes terms of one scale;
- perceptual (:func:`perceptual_term`): the LPIPS-style distance in the features of
  :class:`~hvae_pipeline.models.perceptual.FeatureEncoder` (why that network: its module), also per pixel;
- GAN (:func:`hinge_generator_loss`): ``-D(pair_hat)`` of a PatchGAN
  (:class:`~hvae_pipeline.models.discriminator.PatchDiscriminator`) trained with the hinge loss to tell real pairs
  from reconstructed ones; exactly 0 before ``objectives.adversarial_start_step`` (the discriminator does not train
  before either), then scaled by :func:`adaptive_weight` so that its gradient on the decoder's last layer is as large
  as that of L1 + perceptual (times ``objectives.adversarial_weight``).

:class:`DiscriminativeObjective` owns the discriminator, its optimiser and the feature network; the training loop
calls :meth:`DiscriminativeObjective.add_terms` after the HVAE's loss terms of each micro-batch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from hvae_pipeline.models.discriminator import PatchDiscriminator
from hvae_pipeline.models.hvae import HVAEDecoderOutput, split_decoder_logits
from hvae_pipeline.models.inputs import pair_to_channels
from hvae_pipeline.models.perceptual import FeatureEncoder, load_feature_encoder, perceptual_distance
from hvae_pipeline.training.config import ConfigError

# Bounds of the adaptive weight: the epsilon keeps it finite when the GAN term's gradient norm is 0, the cap keeps a
# vanishing GAN gradient from being blown up without limit (the values of Taming Transformers).
ADAPTIVE_EPSILON = 1e-4
MAX_ADAPTIVE_WEIGHT = 1e4


def l1_term(reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``sum |reconstructions - images|`` over each slice's pixels and image channels; 0 for
    a perfect reconstruction.

    Args:
        reconstructions: ``(B, C, H, W)`` decoded images in ``[0, 1]``.
        images: ``(B, C, H, W)`` real images in ``[0, 1]``.
    """
    if reconstructions.shape != images.shape:
        raise ValueError(f"reconstructions {tuple(reconstructions.shape)} and images {tuple(images.shape)} differ")
    return (reconstructions - images).abs().flatten(1).sum(dim=1).mean()


def perceptual_term(encoder: FeatureEncoder, reconstructions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the perceptual distance of each slice times its pixel count (the distance is a mean
    over pixels; as a sum it has the ELBO's and L1's scale). Each image channel is compared on its own.

    Args:
        encoder: The feature network, ``in_channels=1``.
        reconstructions: ``(B, C, H, W)`` decoded images in ``[0, 1]``.
        images: ``(B, C, H, W)`` real images in ``[0, 1]``.
    """
    batch, channels, height, width = images.shape
    fold = (batch * channels, 1, height, width)
    distance = perceptual_distance(encoder, reconstructions.reshape(fold), images.reshape(fold))
    return distance.reshape(batch, channels).sum(dim=1).mean() * height * width


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 * (E[relu(1 - D(real))] + E[relu(1 + D(fake))])``: 0 once real patches score >= 1 and fake ones <= -1."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-E[D(fake)]``: lower when the discriminator scores the reconstructions as more real."""
    return -fake_logits.mean()


def adaptive_weight(reconstruction_norm: torch.Tensor, adversarial_norm: torch.Tensor) -> torch.Tensor:
    """``reconstruction_norm / (adversarial_norm + 1e-4)`` clipped to ``[0, 1e4]``, detached: the GAN term's weight
    that gives its gradient the size of the reconstruction terms' gradient. Finite for any finite norms, 0 included.

    Args:
        reconstruction_norm: Norm of the gradient of L1 + perceptual on the decoder's last layer.
        adversarial_norm: Norm of the gradient of the GAN term on the same layer.
    """
    return (reconstruction_norm / (adversarial_norm + ADAPTIVE_EPSILON)).clamp(0.0, MAX_ADAPTIVE_WEIGHT).detach()


def enabled(objectives: dict[str, Any]) -> bool:
    """Whether a config's ``objectives`` section turns on any term beyond the ELBO."""
    return bool(objectives["l1"] or objectives["perceptual"] or objectives["adversarial"])


class DiscriminativeObjective:
    """The terms of the ``objectives`` config section for one HVAE training run, and what they need: the frozen
    feature network and the discriminator with its AdamW optimiser, both prepared with (and so checkpointed and
    resumed by) the run's ``Accelerator``; neither is part of the exported pipeline.

    The HVAE's ``z_K`` is taken from its forward pass by a forward hook, so that the trainer's own loss terms stay
    as they are; the reconstruction decodes it once more, with the decoder's last weight seen through an alias so
    that the adaptive weight measures the gradients of this decoding alone (not of the flow's evaluations).

    Args:
        objectives: The validated ``objectives`` config section (at least one term on).
        training: The ``training`` config section (``learning_rate``, ``adam_betas`` for the discriminator).
        accelerator: The run's ``Accelerator``, the HVAE model already prepared.
        model: The prepared HVAE model (possibly wrapped for data parallelism).
    """

    def __init__(self, objectives: dict[str, Any], training: dict[str, Any], accelerator, model) -> None:
        self.settings, self.accelerator = objectives, accelerator
        self.model = accelerator.unwrap_model(model)
        self.feature_encoder = None
        if objectives["perceptual"]:
            self.feature_encoder = load_feature_encoder(objectives["feature_network"]).to(accelerator.device)
        self.discriminator = self.discriminator_optimizer = None
        if objectives["adversarial"]:
            config = self.model.config
            discriminator = PatchDiscriminator(in_channels=config.image_channels + config.mask_channels,
                                               base_channels=objectives["discriminator_channels"],
                                               num_layers=objectives["discriminator_layers"])
            optimiser = torch.optim.AdamW(discriminator.parameters(),
                                          lr=objectives["discriminator_learning_rate"] or training["learning_rate"],
                                          betas=tuple(training["adam_betas"]), weight_decay=0.0)
            # Prepared after the HVAE: checkpoints hold it as model_1 / optimizer_1, restored by load_state.
            self.discriminator, self.discriminator_optimizer = accelerator.prepare(discriminator, optimiser)
        self._latents: torch.Tensor | None = None
        self.model.register_forward_hook(self._remember_latents)

    def _remember_latents(self, module, inputs, output) -> None:
        """Forward hook of the HVAE: keep the ``z_K`` of its last training forward pass."""
        if torch.is_grad_enabled():
            self._latents = output.z if hasattr(output, "z") else output[-1]

    def reconstruct(self, latents: torch.Tensor) -> tuple[HVAEDecoderOutput, torch.Tensor]:
        """``decode(latents)`` with the decoder's last weight replaced by an alias of it; returns the decoding and
        the alias (gradients with respect to it are those of this decoding only)."""
        last_weight = self.model.decoder.conv_out.weight
        alias = last_weight.view_as(last_weight)
        logits = functional_call(self.model.decoder, {"conv_out.weight": alias}, (latents.to(self.model.dtype),))
        return split_decoder_logits(logits, self.model.config.image_channels), alias

    def add_terms(self, terms: dict[str, torch.Tensor], images: torch.Tensor, masks: torch.Tensor,
                  step: int) -> dict[str, torch.Tensor]:
        """The trainer's loss terms of one micro-batch with the objectives added: ``loss`` becomes the mixed loss,
        the HVAE's own is kept as ``hvae_loss``, and each enabled term is logged (``adversarial``,
        ``adaptive_weight`` and ``discriminator_loss`` are 0 before ``objectives.adversarial_start_step``). On and
        after that step the discriminator takes its own optimiser step here, on this micro-batch (detached
        reconstructions), before the GAN term is computed with its updated weights.

        Args:
            terms: The trainer's terms; ``terms["loss"]`` is the HVAE loss of the forward pass that just ran.
            images: ``(B, C, H, W)`` the micro-batch's images.
            masks: The micro-batch's masks.
            step: Optimiser steps taken before this one.

        Raises:
            RuntimeError: the HVAE's forward pass did not run with gradients since the last call.
        """
        if self._latents is None:
            raise RuntimeError("add_terms needs the HVAE's forward pass of this micro-batch, run with gradients")
        latents, self._latents = self._latents, None
        settings, weight = self.settings, self.settings["weight"]
        decoded, alias = self.reconstruct(latents)
        images = images.to(decoded.images.dtype)
        zero = decoded.images.new_zeros(())
        added = {"hvae_loss": terms["loss"]}
        if settings["l1"]:
            added["l1"] = l1_term(decoded.images, images)
        if settings["perceptual"]:
            added["perceptual"] = perceptual_term(self.feature_encoder, decoded.images, images)
        reconstruction = sum(added[name] for name in ("l1", "perceptual") if name in added)
        extra = reconstruction
        if settings["adversarial"]:
            adversarial = discriminator_loss = adaptive = zero
            if step >= settings["adversarial_start_step"]:
                reconstructed_pairs = torch.cat([decoded.images, self._mask_probabilities(decoded)], dim=1)
                discriminator_loss = self._train_discriminator(images, masks, reconstructed_pairs.detach())
                adversarial = hinge_generator_loss(self._judge_without_training(reconstructed_pairs))
                (reconstruction_gradient,) = torch.autograd.grad(reconstruction, alias, retain_graph=True)
                (adversarial_gradient,) = torch.autograd.grad(adversarial, alias, retain_graph=True)
                adaptive = settings["adversarial_weight"] * adaptive_weight(reconstruction_gradient.norm(),
                                                                            adversarial_gradient.norm())
                extra = reconstruction + adaptive * adversarial
            added.update(adversarial=adversarial, adaptive_weight=adaptive, discriminator_loss=discriminator_loss)
        return {**terms, **added, "loss": (1.0 - weight) * terms["loss"] + weight * extra}

    def _mask_probabilities(self, decoded: HVAEDecoderOutput) -> torch.Tensor:
        """The reconstructed mask as the discriminator sees masks: a probability plane (binary) or class
        probabilities (multi-class), as the real pairs' 0/1 planes."""
        if self.model.config.mask_channels == 1:
            return torch.sigmoid(decoded.mask_logits)
        return torch.softmax(decoded.mask_logits, dim=1)

    def _train_discriminator(self, images: torch.Tensor, masks: torch.Tensor,
                             reconstructed_pairs: torch.Tensor) -> torch.Tensor:
        """One hinge-loss step of the discriminator on real and (detached) reconstructed pairs; returns its loss.
        Under gradient accumulation the step is taken once gradients are synchronised, as the HVAE's."""
        config = self.model.config
        real_pairs, _ = pair_to_channels(images, masks, config.image_channels, config.mask_channels,
                                         config.sample_size)
        accelerator = self.accelerator
        synchronising = contextlib.nullcontext() if accelerator.sync_gradients else accelerator.no_sync(
            self.discriminator)
        with synchronising:
            logits = self.discriminator(torch.cat([real_pairs.to(reconstructed_pairs.dtype), reconstructed_pairs]))
            real_logits, fake_logits = logits.chunk(2)
            loss = hinge_discriminator_loss(real_logits, fake_logits)
            accelerator.backward(loss)
        self.discriminator_optimizer.step()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _judge_without_training(self, pairs: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits for ``pairs``, differentiable with respect to ``pairs`` only."""
        discriminator = self.accelerator.unwrap_model(self.discriminator)
        frozen = {name: parameter.detach() for name, parameter in discriminator.named_parameters()}
        return functional_call(discriminator, frozen, (pairs,))


def make_objective(run, accelerator, model) -> DiscriminativeObjective | None:
    """The run's :class:`DiscriminativeObjective`, or ``None`` when its config's ``objectives`` turn nothing on.

    Call it after ``accelerator.prepare`` of the HVAE and before ``load_state``, so that a resumed run restores the
    discriminator and its optimiser too.

    Raises:
        ConfigError: an ``objectives`` term on for another trainer than the HVAE's.
    """
    objectives = run.config["objectives"]
    if not enabled(objectives):
        return None
    if run.kind != "hvae":
        raise ConfigError(f"objectives.* terms apply to the HVAE trainer, not the {run.kind} trainer: remove them")
    return DiscriminativeObjective(objectives, run.config["training"], accelerator, model)


def describe_objectives(objectives: dict[str, Any]) -> str:
    """What a model card says of the terms beyond the ELBO that ``objectives`` turns on ("" when none is on).

    Args:
        objectives: The run's resolved ``objectives`` config section.
    """
    if not enabled(objectives):
        return ""
    terms = [name for name, on in (("L1 on the image", objectives["l1"]), ("perceptual", objectives["perceptual"]),
                                   ("adaptively weighted hinge GAN", objectives["adversarial"])) if on]
    text = (f" Discriminative terms (dHVAE, arXiv 2406.11659): (1 - {objectives['weight']}) x HVAE + "
            f"{objectives['weight']} x ({' + '.join(terms)}), on reconstructions decode(z_K).")
    if objectives["perceptual"]:
        network = objectives["feature_network"] or "the packaged FeatureEncoder"
        text += (f" Perceptual features: {network}, the encoder of a small U-Net trained to segment tumours on the "
                 "training patients only (not the Inception network that computes FID).")
    if objectives["adversarial"]:
        text += (f" PatchGAN discriminator on reconstructed pairs from step {objectives['adversarial_start_step']} "
                 "(not part of the exported pipeline).")
    return text
