"""What differs between trainers (the HVAE/VAE of ``train_hvae.py``, the LSGAN of ``train_lsgan.py``): the model,
its loss terms and its sampling pipeline. The shared loop (:mod:`hvae_pipeline.training.loop`) drives a subclass."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from hvae_pipeline.training.config import DEFAULTS, ConfigError


class TrainingRun(ABC):
    """What differs between trainers: the model, its loss terms, and its sampling pipeline."""

    kind = "generator"
    command = "hvae-train"  # the console command that runs this trainer (named in the resume hint)
    # Keys of the shared `training` section that this trainer does not use: a non-default value is an error.
    unused_training_keys: tuple[str, ...] = ()

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        for key in self.unused_training_keys:
            if config["training"][key] != DEFAULTS["training"][key]:
                raise ConfigError(f"training.{key}={config['training'][key]!r} does not apply to the {self.kind} "
                                  "trainer: remove it")
        self.config = config

    def config_warnings(self) -> list[str]:
        """One-line warnings about a config that runs but likely not as meant (printed before the data load)."""
        return []

    def model_arguments(self) -> dict[str, Any]:
        """The config's model arguments, with the slice size, channel count and mask classes taken from the data."""
        data = self.config["data"]
        arguments = dict(self.config["model"])
        arguments.setdefault("sample_size", data["size"])
        arguments.setdefault("image_channels", len(data["modalities"]))
        if data["label"] == "multiclass":
            arguments.setdefault("mask_channels", 4)
        return arguments

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups; a group without ``"lr"`` uses ``training.learning_rate``."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def load_initial_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Load ``training.init_from``'s weights into ``model``; by default the same architecture, every tensor."""
        model.load_state_dict(weights)

    @abstractmethod
    def loss_terms(self, model, images, masks, generator, step) -> dict[str, torch.Tensor]:
        """Return at least ``{"loss": scalar}``; the other scalars are logged."""

    @abstractmethod
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]: ...

    @abstractmethod
    def pipeline(self, model): ...

    def final_pipeline(self, model, images: torch.Tensor, masks: torch.Tensor):
        """The pipeline exported at the end, given the training slices; by default the one sampled during training."""
        return self.pipeline(model)
