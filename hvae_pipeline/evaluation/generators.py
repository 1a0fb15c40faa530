"""The generators under comparison: ``NAME=PATH`` arguments, loading, and a content fingerprint of each model."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..hub.bundled_checkpoint import BUNDLED_CHECKPOINT, has_bundled_checkpoint
from ..pipeline import HVAEPipeline

BUNDLED = "bundled"
# Names become file names and table rows; "real-only" labels the runs without synthetic data, and
# "real-only-equal-updates" the real-only runs trained for as many optimiser updates as a run with N synthetic pairs.
REAL_ONLY = "real-only"
EQUAL_UPDATES = "real-only-equal-updates"
RESERVED_NAMES = (REAL_ONLY, EQUAL_UPDATES)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# Files that define a saved pipeline's behaviour (the model card and preview images do not).
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin")


@dataclass(frozen=True)
class GeneratorSpec:
    """A named generator.

    Args:
        name: label in tables, plots and file names (letters, digits, ``_ . + -``).
        path: folder written by ``HVAEPipeline.save_pretrained`` (HVAE, VAE or LSGAN alike).
    """

    name: str
    path: Path


def parse_generator(text: str) -> GeneratorSpec:
    """Parse ``NAME=PATH`` (``PATH`` a saved pipeline folder or ``bundled`` for the packaged default model).

    Raises:
        ValueError: malformed text, a bad name, a missing folder, or ``bundled`` while no model is bundled.
    """
    name, separator, location = text.partition("=")
    if not separator or not name or not location:
        raise ValueError(f"generator {text!r}: expected NAME=PATH, e.g. HVAE=runs/cpu-128/pipeline")
    if not _NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
        reserved = " or ".join(map(repr, RESERVED_NAMES))
        raise ValueError(f"generator name {name!r}: use letters, digits and _ . + - (and not {reserved})")
    if location == BUNDLED:
        if not has_bundled_checkpoint():
            raise ValueError(f"generator {name}: no bundled model exists yet at {BUNDLED_CHECKPOINT}; give a folder")
        return GeneratorSpec(name, BUNDLED_CHECKPOINT)
    path = Path(location).expanduser()
    if not (path / "model_index.json").is_file():
        what = "does not exist" if not path.exists() else "has no model_index.json (not a saved pipeline)"
        raise ValueError(f"generator {name}: {path} {what}; give a folder written by save_pretrained or 'bundled'")
    return GeneratorSpec(name, path)


def check_distinct_names(generators: list[GeneratorSpec]) -> None:
    """Raise ``ValueError`` when two generators share a name (their results would overwrite each other)."""
    names = [spec.name for spec in generators]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"generator names given more than once: {repeated}")


def model_fingerprint(path: Path) -> str:
    """SHA-256 (hex, 16 digits) of a saved pipeline's configs and weights: a changed model gets a new fingerprint.

    Stored with every result and cached sample so that a name pointing at another model is never mixed with
    results of the old one.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_generator(spec: GeneratorSpec) -> HVAEPipeline:
    """Load a generator's pipeline in evaluation mode, with its own progress bar off (the caller shows one)."""
    pipeline = HVAEPipeline.from_pretrained(str(spec.path))
    pipeline.model.eval()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generator_image_shape(spec: GeneratorSpec) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images a saved generator makes, read from its config without loading the weights."""
    config = json.loads((spec.path / "model" / "config.json").read_text())
    side = int(config["sample_size"])
    return int(config["image_channels"]), side, side


def check_image_shape(spec: GeneratorSpec, real_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless the generator makes images of the real slices' ``(C, H, W)``."""
    made = generator_image_shape(spec)
    if made != tuple(real_shape):
        raise ValueError(
            f"generator {spec.name} makes images of shape {made} (C, H, W) but the real slices are "
            f"{tuple(real_shape)}; "
            "load the real data at the generator's size (--size) and modalities"
        )


def check_generators(generators: list[GeneratorSpec], image_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless there is at least one generator, names are distinct and every generator makes
    images of ``image_shape`` ``(C, H, W)``."""
    if not generators:
        raise ValueError("give at least one generator (--generator NAME=PATH)")
    check_distinct_names(generators)
    for generator in generators:
        check_image_shape(generator, image_shape)


# The trainer's model card states its training patients in one sentence: "... Patients: BRATS_001, BRATS_002."
_CARD_PATIENTS = re.compile(r"\bPatients: ([^,.\n]+(?:, [^,.\n]+)*)\.")


def training_patients(spec: GeneratorSpec) -> tuple[str, ...] | None:
    """The patients a generator was trained on: as its model card (``README.md``) states them, else as the training
    run's ``config.yaml`` beside its pipeline folder lists them (``data.patients``); ``None`` when neither says."""
    card = spec.path / "README.md"
    if card.is_file():
        found = _CARD_PATIENTS.search(card.read_text(errors="replace"))
        if found:
            return tuple(found.group(1).split(", "))
    config = spec.path.parent / "config.yaml"
    if config.is_file():
        import yaml

        try:
            patients = (yaml.safe_load(config.read_text()) or {}).get("data", {}).get("patients")
        except yaml.YAMLError:
            return None
        if isinstance(patients, list) and patients:
            return tuple(map(str, patients))
    return None


def patients_seen_in_training(generators: list[GeneratorSpec], test_patients: tuple[str, ...],
                              allow: bool) -> dict[str, list[str]]:
    """Per generator, the test patients it was trained on (generators without any are left out).

    Args:
        generators: the generators scored.
        test_patients: the patients the scores are measured on.
        allow: score them anyway (the reports then say which scores are not held-out) instead of refusing.

    Raises:
        ValueError: a generator was trained on a test patient and ``allow`` is false.
    """
    seen = {}
    for generator in generators:
        overlap = sorted(set(training_patients(generator) or ()) & set(test_patients))
        if overlap:
            seen[generator.name] = overlap
    if seen and not allow:
        named = "; ".join(f"generator {name} on {patients}" for name, patients in seen.items())
        raise ValueError(f"test patients were used to train the generators ({named}, as their model cards or run "
                         "configs list them): scores on them would not be held-out. Pass other --test-patients, or "
                         "--allow-training-patients to score them anyway, labelled as not held-out")
    return seen
