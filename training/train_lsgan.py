"""Train the LSGAN baseline of the paper (least-squares GAN emitting image + mask pairs) with Accelerate.

    hvae-train-lsgan --config lsgan-cpu-128 [section.key=value ...]   (in a checkout: python training/train_lsgan.py)

Same data, outputs, checkpoints, resume and Hub export as ``hvae-train``; the exported pipeline is an
``HVAEPipeline`` around an ``LSGANModel``, so evaluation samples HVAE, VAE and LSGAN alike.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.models.lsgan import LSGANModel
from hvae_pipeline.training.command_line import command_line
from hvae_pipeline.training.trainer import TrainingRun


class LSGANRun(TrainingRun):
    """Simultaneous least-squares updates of generator and discriminator with one optimiser."""

    kind = "lsgan"
    command = "hvae-train-lsgan"
    unused_training_keys = ("vae_warmup_steps", "flow_checkpoint_chunk_size", "fit_latent_prior", "flow_learning_rate",
                            "trainable_parameters", "latent_prior_source")

    def build_model(self) -> LSGANModel:
        return LSGANModel(**self.model_arguments())

    def load_initial_weights(self, model: LSGANModel, weights: dict[str, torch.Tensor]) -> None:
        """An LSGAN pipeline's weights, or an HVAE/VAE pipeline's decoder as the generator (discriminator fresh).

        Starting the generator from the decoder of the VAE warm start that the HVAE and the VAE also start from makes
        the three baselines differ only by their last stage's objective.
        """
        decoder = {name.removeprefix("decoder."): tensor for name, tensor in weights.items()
                   if name.startswith("decoder.")}
        if decoder:
            model.generator.load_state_dict(decoder)
        else:
            model.load_state_dict(weights)

    def parameter_groups(self, model: LSGANModel) -> list[dict[str, Any]]:
        """Generator at ``training.learning_rate``, discriminator at ``training.discriminator_learning_rate``."""
        discriminator_rate = self.config["training"]["discriminator_learning_rate"]
        discriminator = {"params": list(model.discriminator.parameters())}
        if discriminator_rate is not None:
            discriminator["lr"] = discriminator_rate
        return [{"params": list(model.generator.parameters())}, discriminator]

    def loss_terms(self, model, images, masks, generator, step) -> dict[str, torch.Tensor]:
        output = model(images, masks, generator=generator)
        generator_weight = 0.0 if step < self.config["training"]["discriminator_warmup_steps"] else 1.0
        return {
            # During the discriminator's warm-up the generator's loss is multiplied by 0 rather than dropped, so
            # that every parameter still receives a (zero) gradient, as DDP requires.
            "loss": generator_weight * output.generator_loss + output.discriminator_loss,
            "generator_loss": output.generator_loss,
            "discriminator_loss": output.discriminator_loss,
            "real_score": output.real_score,
            "fake_score": output.fake_score,
        }

    @torch.no_grad()
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]:
        output = model(images, masks, generator=generator)
        return {"val_real_score": output.real_score.item(), "val_fake_score": output.fake_score.item()}

    def pipeline(self, model) -> HVAEPipeline:
        return HVAEPipeline(model)


def main(argv: Sequence[str] | None = None) -> int:
    return command_line(LSGANRun, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
