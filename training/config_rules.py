"""What each key of a training config accepts: one rule per key, checked with one-line errors naming the key."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from hvae_pipeline.training.data import DATA_KINDS


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key or file."""


@dataclass(frozen=True)
class Rule:
    """What one ``training`` key accepts.

    Attributes:
        expected: the accepted values in words, for the error message (e.g. ``"an integer >= 1"``).
        accepts: whether a value (as read from YAML) is acceptable.
        convert: maps an accepted value to the one the trainer uses (default: unchanged).
    """

    expected: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda value: value


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # YAML's true/false are ints to Python


def _is_number(value: Any) -> bool:
    return (_is_integer(value) or isinstance(value, float)) and math.isfinite(value)


def _integer_at_least(low: int) -> Rule:
    return Rule(f"an integer >= {low}", lambda v: _is_integer(v) and v >= low)


def _number_above(low: float) -> Rule:
    return Rule(f"a number > {low:g}", lambda v: _is_number(v) and v > low)


def _number_at_least(low: float) -> Rule:
    return Rule(f"a number >= {low:g}", lambda v: _is_number(v) and v >= low)


def _either(choices: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``."""
    quoted = [repr(choice) for choice in choices]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _one_of(*choices: str) -> Rule:
    return Rule(_either(choices), lambda v: v in choices)


def _or_null(rule: Rule) -> Rule:
    return Rule(f"{rule.expected} or null", lambda v: v is None or rule.accepts(v),
                lambda v: None if v is None else rule.convert(v))


_BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
_PATH = Rule("a folder path", lambda v: isinstance(v, str) and v.strip() != "")
# YAML 1.1 reads an unquoted `no` as false: take it for the "no" it was meant to be.
_MIXED_PRECISION = Rule(_either(("no", "bf16", "fp16")), lambda v: v in ("no", "bf16", "fp16", False),
                        lambda v: "no" if v is False else v)
_BETAS = Rule("two numbers in [0, 1), e.g. [0.9, 0.999]",
              lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v))

# One rule per key of DEFAULTS["training"] (a test checks that none is missing).
TRAINING_RULES: dict[str, Rule] = {
    "output_dir": _PATH,
    # numpy's seed (set by accelerate's set_seed) must fit in 32 bits.
    "seed": Rule("an integer in [0, 2**32)", lambda v: _is_integer(v) and 0 <= v < 2**32),
    "batch_size": _integer_at_least(1),
    "max_steps": _integer_at_least(1),
    "learning_rate": _number_above(0),
    "weight_decay": _number_at_least(0),
    "adam_betas": _BETAS,
    # The diffusers schedules that need no further arguments.
    "lr_scheduler": _one_of("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"),
    "lr_warmup_steps": _integer_at_least(0),
    "gradient_accumulation_steps": _integer_at_least(1),
    "max_grad_norm": _or_null(_number_at_least(0)),  # null or 0: no clipping
    "mixed_precision": _or_null(_MIXED_PRECISION),
    "ema_decay": _or_null(Rule("a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1)),
    "vae_warmup_steps": _integer_at_least(0),
    "flow_learning_rate": _or_null(_number_above(0)),
    "trainable_parameters": _one_of("all", "flow"),
    "discriminator_learning_rate": _or_null(_number_above(0)),
    "discriminator_warmup_steps": _integer_at_least(0),
    "fit_latent_prior": _BOOLEAN,
    "latent_prior_source": _one_of("posterior", "flow"),
    "init_from": _or_null(_PATH),
    "gradient_checkpointing": _BOOLEAN,
    "flow_checkpoint_chunk_size": Rule("'auto', null or an integer >= 1",
                                       lambda v: v is None or v == "auto" or (_is_integer(v) and v >= 1)),
    "checkpointing_steps": _integer_at_least(1),
    "checkpoints_total_limit": _or_null(_integer_at_least(0)),  # null or 0: keep every checkpoint
    "sample_steps": _integer_at_least(1),
    "log_steps": _integer_at_least(1),
    # Whether that tracker is installed is checked by check_tracker, which names the ones that are.
    "report_to": Rule("'csv' or the name of an Accelerate tracker, e.g. 'tensorboard'",
                      lambda v: isinstance(v, str) and v.strip() != ""),
    "num_threads": _or_null(_integer_at_least(1)),
    "dataloader_workers": _integer_at_least(0),
}


def _names(allow_null: bool) -> Rule:
    """A non-empty list of strings (patient ids, modalities), or also null."""
    rule = Rule("a non-empty list of names", lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) for n in v))
    return _or_null(rule) if allow_null else rule


_TEXT = Rule("a string", lambda v: isinstance(v, str) and v.strip() != "")

# One rule per key of DEFAULTS["data"] (a test checks that none is missing); the loaders check the rest (layouts,
# label names) once they read the folder.
DATA_RULES: dict[str, Rule] = {
    "kind": _one_of(*DATA_KINDS),
    "root": _or_null(_PATH),
    "image_glob": _or_null(_TEXT),
    "label_glob": _or_null(_TEXT),
    "mask_glob": _or_null(_TEXT),
    "channels": _or_null(Rule("a non-empty list of channel numbers >= 0, e.g. [1]", lambda v: isinstance(v, list)
                              and bool(v) and all(_is_integer(c) and c >= 0 for c in v))),
    "modalities": _names(allow_null=False),
    "label": _TEXT,
    "patients": _names(allow_null=True),
    "val_patients": _names(allow_null=True),
    "size": _integer_at_least(8),  # the smallest slice the loaders and phantoms make
    "depth": _integer_at_least(1),
    "min_tumour_area": _integer_at_least(0),
    "balance": _BOOLEAN,
    "num_phantom_slices": _integer_at_least(1),
    "num_proc": _integer_at_least(1),
    "licence": _or_null(_TEXT),
    "description": _or_null(_TEXT),
}


# One rule per key of DEFAULTS["objectives"] (a test checks that none is missing).
OBJECTIVES_RULES: dict[str, Rule] = {
    "l1": _BOOLEAN,
    "perceptual": _BOOLEAN,
    "adversarial": _BOOLEAN,
    "weight": Rule("a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1),
    "feature_network": _or_null(_PATH),
    "adversarial_start_step": _integer_at_least(0),
    "adversarial_weight": _number_above(0),
    # The discriminator's GroupNorms have 8 groups.
    "discriminator_channels": Rule("a multiple of 8, e.g. 64", lambda v: _is_integer(v) and v >= 8 and v % 8 == 0),
    "discriminator_layers": _integer_at_least(1),
    "discriminator_learning_rate": _or_null(_number_above(0)),
}


def validate_objectives(objectives: dict[str, Any]) -> dict[str, Any]:
    """:func:`validate_section` of ``objectives``; the adversarial term also needs L1 or the perceptual term, whose
    gradient sets its adaptive weight."""
    checked = validate_section("objectives", objectives, OBJECTIVES_RULES)
    if checked["adversarial"] and not (checked["l1"] or checked["perceptual"]):
        raise ConfigError("objectives.adversarial=True needs objectives.l1 or objectives.perceptual: the adversarial "
                          "term's adaptive weight matches its gradient to theirs")
    return checked


def validate_section(section: str, settings: dict[str, Any], rules: dict[str, Rule]) -> dict[str, Any]:
    """Check every key of one config section against its ``rules``; return the settings with converted values.

    Raises:
        ConfigError: one line naming the first bad key, its value and what it accepts.
    """
    checked = dict(settings)
    for key, rule in rules.items():
        value = settings[key]
        if not rule.accepts(value):
            raise ConfigError(f"{section}.{key}={value!r}: expected {rule.expected}")
        checked[key] = rule.convert(value)
    return checked


def validate_data(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`validate_section` of ``data``, and a folder for every kind but the generated phantoms."""
    checked = validate_section("data", data, DATA_RULES)
    if checked["kind"] != "phantom" and checked["root"] is None:
        raise ConfigError(f"data.root=None: data.kind={checked['kind']!r} reads a folder; set data.root")
    if checked["kind"] == "pairs" and not (checked["image_glob"] and checked["mask_glob"]):
        raise ConfigError("data.kind='pairs' needs data.image_glob and data.mask_glob, e.g. "
                          "'{case}/{case}_{index}.tif' and '{case}/{case}_{index}_mask.tif'")
    return checked


def check_tracker(report_to: str) -> None:
    """Check that ``training.report_to`` is ``"csv"`` (the CSV log only) or an Accelerate tracker installed here.

    Raises:
        ConfigError: naming the key, its value and the trackers that are installed.
    """
    if report_to == "csv":
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    installed = sorted(str(tracker.value) for tracker in get_available_trackers())
    if report_to not in LOGGER_TYPE_TO_CLASS:
        raise ConfigError(f"training.report_to={report_to!r}: expected 'csv' or one of Accelerate's trackers "
                          f"({_either(sorted(LOGGER_TYPE_TO_CLASS))}); installed here: {_either(['csv', *installed])}")
    if report_to not in installed:
        raise ConfigError(f"training.report_to={report_to!r}: the {report_to} tracker is not installed (installed "
                          f"here: {_either(['csv', *installed])}); install it (pip install {report_to}) or choose an "
                          "installed one")
