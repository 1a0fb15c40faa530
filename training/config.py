"""Training configuration: YAML files under ``training/configs/`` plus ``--section.key=value`` overrides."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from hvae_pipeline.training.config_rules import (TRAINING_RULES, ConfigError, check_tracker, validate_data,
                                                 validate_objectives, validate_section)

CONFIG_DIR = Path(__file__).parent / "configs"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's floats: ``1e-4`` is a number, not the string ``"1e-4"`` that PyYAML would give."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


# Every key a config may hold, with its default. Unknown keys are errors (a typo must not be silently ignored).
DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {},  # HVAEModel constructor arguments (LSGAN: LSGANModel arguments)
    "data": {
        "kind": "brats",  # brats | hecktor | pairs | phantom | disk
        "root": None,
        "image_glob": None,
        "label_glob": None,
        "mask_glob": None,
        "channels": None,  # pairs: picture channels to keep, e.g. [1] (None: all); one data.modalities name each
        "modalities": ["flair"],
        "label": "whole_tumor",
        "patients": None,  # training patients (None: all)
        "val_patients": None,  # held-out patients for the validation ELBO
        "size": 128,
        "depth": 64,
        "min_tumour_area": 1,
        "balance": False,
        "num_phantom_slices": 256,
        "num_proc": 1,
        "licence": None,  # recorded in the model card
        "description": None,
    },
    "training": {
        "output_dir": "runs/hvae",
        "seed": 0,
        "batch_size": 16,
        "max_steps": 1000,
        "learning_rate": 4.5e-5,
        "weight_decay": 1e-8,
        "adam_betas": [0.5, 0.9],
        "lr_scheduler": "constant",  # constant | cosine | linear | constant_with_warmup
        "lr_warmup_steps": 0,
        "gradient_accumulation_steps": 1,
        "max_grad_norm": 1.0,
        # no | bf16 | fp16 (GPU only; CPUs stay in fp32). null: what `accelerate launch --mixed_precision` or
        # `accelerate config` chose, else no.
        "mixed_precision": None,
        "ema_decay": None,  # e.g. 0.999; None disables EMA weights
        "vae_warmup_steps": 0,  # first steps with the flow off (n_leapfrog=0): a cheap warm start
        "flow_learning_rate": None,  # HVAE: learning rate of the learnt step sizes and beta_zero (None: learning_rate)
        "trainable_parameters": "all",  # HVAE: all | flow (networks frozen: only the flow's parameters learn)
        "discriminator_learning_rate": None,  # LSGAN: the discriminator's own rate (TTUR); None: learning_rate
        "discriminator_warmup_steps": 0,  # LSGAN: first steps train the discriminator only (generator frozen)
        "fit_latent_prior": True,  # HVAE/VAE: ship a Gaussian fitted to the aggregate posterior (sampling default)
        "latent_prior_source": "posterior",  # HVAE: fit it to the encoder's z_0 (posterior) or the flow's z_K (flow)
        "init_from": None,  # a saved pipeline folder whose weights start this run (e.g. a VAE warm-start run)
        "gradient_checkpointing": False,
        # With gradient_checkpointing: samples per recomputed chunk of the flow; auto: 4 on CPU, the whole batch on a
        # GPU where it fits in half the free memory (null: always the whole batch).
        "flow_checkpoint_chunk_size": "auto",
        "checkpointing_steps": 200,
        "checkpoints_total_limit": 3,
        "sample_steps": 200,
        "log_steps": 10,
        "report_to": "csv",  # csv, or an installed Accelerate tracker: tensorboard, wandb... (the CSV log is always written)
        "num_threads": None,  # torch CPU threads (None: torch's default)
        "dataloader_workers": 0,
    },
    # HVAE only: training terms beyond the ELBO, the discriminative HVAE (training/objectives.py); all off by default.
    "objectives": {
        "l1": False,  # L1 reconstruction of the image channels
        "perceptual": False,  # LPIPS-style distance in the feature network's features (hvae_pipeline.models.perceptual)
        "adversarial": False,  # hinge GAN term of a PatchGAN discriminator judging reconstructions
        "weight": 0.05,  # w: loss = (1 - w) * HVAE + w * (L1 + perceptual + adaptive weight * GAN)
        "feature_network": None,  # a FeatureEncoder folder (null: the packaged one)
        "adversarial_start_step": 0,  # before it the GAN term is 0 and the discriminator does not train
        "adversarial_weight": 1.0,  # factor of the adaptive weight
        "discriminator_channels": 64,
        "discriminator_layers": 3,
        "discriminator_learning_rate": None,  # null: training.learning_rate
    },
}


def dump_config(config: dict[str, dict[str, Any]]) -> str:
    """A resolved config as YAML that :func:`load_config` reads back to the same dict (a run's ``config.yaml``).

    Args:
        config: as returned by :func:`load_config`.
    """
    return ("# Resolved training config (defaults, config file and overrides); rerun it with --config <this file>.\n"
            + yaml.safe_dump(config, sort_keys=False))


def flat_config(config: dict[str, dict[str, Any]]) -> dict[str, bool | int | float | str]:
    """A resolved config as ``{"section.key": value}`` for experiment trackers, which take scalars only: null, lists
    and mappings become their JSON text."""
    return {f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for section, settings in config.items() for key, value in settings.items()}


def _merge(base: dict, update: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in merged and where != "model":
            raise ConfigError(f"unknown config key {where + '.' if where else ''}{key}")
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, key if not where else f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value read as YAML: numbers, lists, null...)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. training.max_steps=100")
    path, raw = text.split("=", 1)
    keys = path.lstrip("-").split(".")
    if len(keys) != 2:
        raise ConfigError(f"override {text!r}: the key must be section.key (section one of {sorted(DEFAULTS)})")
    try:
        return keys, _load_yaml(raw)
    except yaml.YAMLError as error:  # e.g. an unquoted pattern: YAML reads "{case}/..." as the start of a mapping
        problem = str(error).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem}); quote text that starts with "
                          f"{{ or [, e.g. {path}=\"{{case}}/{{case}}_{{index}}.png\"") from None


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Load a YAML config (a path, or a name under ``training/configs/``), apply overrides and validate the
    ``training``, ``data`` and ``objectives`` sections (:mod:`hvae_pipeline.training.config_rules`).

    Args:
        path: YAML file, config name such as ``"cpu-128"``, or ``None`` for the defaults.
        overrides: ``section.key=value`` strings, applied in order.
    """
    loaded: dict = {}
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            candidate = CONFIG_DIR / f"{path}.yaml"
        if not candidate.is_file():
            available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise ConfigError(f"config {path!r} not found (neither a file nor one of: {available})")
        try:
            loaded = _load_yaml(candidate.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {candidate} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {candidate} must hold a mapping of sections, got {type(loaded).__name__}")
    config = _merge(DEFAULTS, loaded, "")
    for override in overrides:
        (section, key), value = parse_override(override)
        if section not in config:
            raise ConfigError(f"override {override!r}: unknown section {section!r} (one of {sorted(config)})")
        if section != "model" and key not in config[section]:
            raise ConfigError(f"override {override!r}: unknown key {section}.{key}")
        config[section][key] = value
    # Before any data is loaded: a bad value must not cost the user a dataset preparation first.
    config["training"] = validate_section("training", config["training"], TRAINING_RULES)
    check_tracker(config["training"]["report_to"])
    config["data"] = validate_data(config["data"])
    config["objectives"] = validate_objectives(config["objectives"])
    return config
