"""Train the joint image + mask HVAE (or its VAE baseline) with Accelerate.

One process:    hvae-train --config cpu-128 [section.key=value ...]   (in a checkout: python training/train_hvae.py)
Several:        accelerate launch -m hvae_pipeline.training.train_hvae --config paper-128   (see README, "Training")
VAE baseline:   ... model.n_leapfrog=0 model.beta_zero=1

Writes into ``training.output_dir``: ``config.yaml`` (the resolved config), ``checkpoints/checkpoint-<step>/``
(``accelerator.save_state``; resume with ``--resume-from-checkpoint latest``), ``logs/metrics.csv`` (loss terms per
logged step), ``samples/step-<step>.png`` (image | mask | overlay grids), ``loss_curve.png`` and, at the end,
``pipeline/`` (``save_pretrained``, safetensors, with a model card ``README.md`` generated from the run, and a latent
prior fitted to the training slices unless ``training.fit_latent_prior=false``).

The folder is the run's own (``.hvae-run.json``): a new run needs an absent or empty folder (``--overwrite-run`` moves an
earlier run aside), only files the run wrote are ever replaced, Ctrl-C or SIGTERM save a checkpoint at the step
reached, and resume refuses another run's checkpoint; see docs/reliability.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from hvae_pipeline import HVAEModel, HVAEPipeline, fit_latent_prior
from hvae_pipeline.models.latent_prior import LATENT_SOURCES
from hvae_pipeline.training.config import ConfigError
from hvae_pipeline.training.command_line import command_line
from hvae_pipeline.training.trainer import TrainingRun


class HVAERun(TrainingRun):
    """The HVAE objective: minimise -ELBO, with an optional VAE warm start (flow off)."""

    kind = "hvae"
    unused_training_keys = ("discriminator_learning_rate", "discriminator_warmup_steps")

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        super().__init__(config)
        trainable = config["training"]["trainable_parameters"]
        source = config["training"]["latent_prior_source"]
        if source not in LATENT_SOURCES:
            raise ConfigError(f"training.latent_prior_source={source!r}: expected one of {LATENT_SOURCES}")
        if trainable not in ("all", "flow"):
            raise ConfigError(f"training.trainable_parameters={trainable!r}: expected 'all' or 'flow'")
        learnt_flow = config["model"].get("learn_step_size") or config["model"].get("learn_beta_zero")
        if trainable == "flow" and not learnt_flow:
            raise ConfigError("training.trainable_parameters=flow needs a learnt flow: set model.learn_step_size=true "
                              "and/or model.learn_beta_zero=true")

    def config_warnings(self) -> list[str]:
        """A run that ends inside the VAE warm-up trains a plain VAE: the flow is never switched on."""
        settings, n_leapfrog = self.config["training"], self.config["model"].get("n_leapfrog", 3)
        if n_leapfrog and settings["vae_warmup_steps"] >= settings["max_steps"]:
            return [f"training.max_steps={settings['max_steps']} ends inside the VAE warm-up "
                    f"(training.vae_warmup_steps={settings['vae_warmup_steps']}): the flow stays off, so this run "
                    "trains a plain VAE (a warm start; raise training.max_steps to train the flow)"]
        return []

    def build_model(self) -> HVAEModel:
        return HVAEModel(**self.model_arguments())

    def parameter_groups(self, model: HVAEModel) -> list[dict[str, Any]]:
        """The networks at ``training.learning_rate``; the flow's few parameters at ``training.flow_learning_rate``
        without weight decay. With ``training.trainable_parameters: flow`` the networks are frozen (only the flow's
        step sizes and ``beta_zero`` learn: a cheap stage between a VAE warm start and joint training)."""
        settings = self.config["training"]
        flow = model.flow_parameters()
        flow_ids = {id(parameter) for parameter in flow}
        networks = [parameter for parameter in model.parameters() if id(parameter) not in flow_ids]
        if settings["trainable_parameters"] == "flow":
            for parameter in networks:
                parameter.requires_grad_(False)
            networks = []
        groups = [{"params": networks}] if networks else []
        if flow:
            groups.append({"params": flow, "lr": settings["flow_learning_rate"] or settings["learning_rate"],
                           "weight_decay": 0.0})
        return groups

    def load_initial_weights(self, model: HVAEModel, weights: dict[str, torch.Tensor]) -> None:
        """A saved HVAE/VAE's weights; a learnt flow absent from them (a fixed-step warm start) keeps its
        initialisation from the config."""
        missing, unexpected = model.load_state_dict(weights, strict=False)
        flow_ids = {id(parameter) for parameter in model.flow_parameters()}
        flow_names = {name for name, parameter in model.named_parameters() if id(parameter) in flow_ids}
        if unexpected or set(missing) - flow_names:
            raise RuntimeError(f"missing tensors {sorted(set(missing) - flow_names)}, unexpected tensors "
                               f"{sorted(unexpected)}")

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
            **flow_terms(model),
        }

    @torch.no_grad()
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]:
        """The held-out ELBO and, for an HVAE, the flow's gain on it: the ELBO minus that of the same weights with
        the flow off (``n_leapfrog=0``), from the same draws of ``z_0``."""
        model = getattr(model, "module", model)  # unwrapped from DistributedDataParallel
        elbo, flow_off = model.elbo_with_and_without_flow(images, masks, generator)
        if model.config.n_leapfrog == 0:
            return {"val_elbo": elbo.mean().item()}
        return {"val_elbo": elbo.mean().item(), "val_flow_gain": (elbo - flow_off).mean().item()}

    def pipeline(self, model) -> HVAEPipeline:
        return HVAEPipeline(model)

    def final_pipeline(self, model, images: torch.Tensor, masks: torch.Tensor) -> HVAEPipeline:
        """With ``training.fit_latent_prior``, the pipeline carries a Gaussian fitted to the aggregate posterior of the
        training slices (see :mod:`hvae_pipeline.models.latent_prior`); sampling uses it by default."""
        settings = self.config["training"]
        if not settings["fit_latent_prior"]:
            return HVAEPipeline(model)
        generator = torch.Generator().manual_seed(settings["seed"])
        return HVAEPipeline(model, fit_latent_prior(model.eval(), images, masks, source=settings["latent_prior_source"],
                                                    generator=generator))


def flow_terms(model) -> dict[str, torch.Tensor]:
    """The learnt flow's step sizes (min / median / max over latent dimensions) and ``beta_zero``, to log."""
    model = getattr(model, "module", model)  # unwrapped from DistributedDataParallel
    if not model.flow_parameters():
        return {}
    return {name: torch.tensor(value) for name, value in model.flow_summary().items()}


def main(argv: Sequence[str] | None = None) -> int:
    return command_line(HVAERun, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
