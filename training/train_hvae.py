"""Train the joint image + mask HVAE (or its VAE baseline) with Accelerate.

One process:    python training/train_hvae.py --config cpu-128 [section.key=value ...]
Several:        accelerate launch training/train_hvae.py --config paper-128   (see README, "Training")
VAE baseline:   ... model.n_leapfrog=0 model.beta_zero=1

Writes into ``training.output_dir``: ``checkpoints/checkpoint-<step>/`` (``accelerator.save_state``; resume with
``--resume-from-checkpoint latest``), ``logs/metrics.csv`` (loss terms per logged step), ``samples/step-<step>.png``
(image | mask | overlay grids), ``loss_curve.png`` and, at the end, ``pipeline/`` (``save_pretrained``, safetensors,
with a model card ``README.md`` generated from the run, and a latent prior fitted to the training slices unless
``training.fit_latent_prior=false``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python training/train_hvae.py` from a checkout

import torch  # noqa: E402

from hvae_pipeline import HVAEModel, HVAEPipeline, fit_latent_prior  # noqa: E402
from training.loop import TrainingRun, command_line  # noqa: E402


class HVAERun(TrainingRun):
    """The HVAE objective: minimise -ELBO, with an optional VAE warm start (flow off)."""

    kind = "hvae"
    unused_training_keys = ("discriminator_learning_rate", "discriminator_warmup_steps")

    def build_model(self) -> HVAEModel:
        return HVAEModel(**self.model_arguments())

    def loss_terms(self, model, images, masks, generator, step) -> dict[str, torch.Tensor]:
        warmup = step < self.config["training"]["vae_warmup_steps"]
        output = model(images, masks, generator=generator, n_leapfrog=0 if warmup else None)
        return {
            "loss": output.loss,
            "elbo": output.elbo.mean(),
            "image_log_likelihood": output.image_log_likelihood.mean(),
            "mask_log_likelihood": output.mask_log_likelihood.mean(),
            "kl": output.kl.mean(),
            "flow_gain": output.flow_gain.mean(),
        }

    @torch.no_grad()
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]:
        return {"val_elbo": model(images, masks, generator=generator).elbo.mean().item()}

    def pipeline(self, model) -> HVAEPipeline:
        return HVAEPipeline(model)

    def final_pipeline(self, model, images: torch.Tensor, masks: torch.Tensor) -> HVAEPipeline:
        """With ``training.fit_latent_prior``, the pipeline carries a Gaussian fitted to the aggregate posterior of the
        training slices (see :mod:`hvae_pipeline.models.latent_prior`); sampling uses it by default."""
        if not self.config["training"]["fit_latent_prior"]:
            return HVAEPipeline(model)
        return HVAEPipeline(model, fit_latent_prior(model, images, masks))


def main(argv: Sequence[str] | None = None) -> int:
    return command_line(HVAERun, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
