"""Held-out likelihood of HVAE and VAE generators: importance-sampled ``log p(x, m)`` and the ELBO on real test slices.

Both come from the model itself (:meth:`HVAEModel.estimate_log_likelihood`, :meth:`HVAEModel.forward`), so an HVAE and
its VAE baseline (``n_leapfrog=0``) are compared on the same footing. The LSGAN has no encoder and no likelihood.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..models.hvae import HVAEModel
from .generators import (GeneratorSpec, check_generators, load_generator, model_fingerprint,
                         patients_seen_in_training)
from .real_data import RealDataSpec, RealSplit
from ..storage.atomic_write import write_json_atomically, write_text_atomically
from .records import RecordStore
from .reporting import likelihood_markdown


@dataclass(frozen=True)
class LikelihoodSettings:
    """How the likelihood is estimated.

    Args:
        num_importance_samples: importance samples per slice for ``log p(x, m)`` (the estimate tightens as it grows).
        seed: seed of the posterior and momentum draws.
        batch_size: test slices per model call.
        importance_slices: score ``log p(x, m)`` on this many evenly spaced test slices only (``None``: all). Each
            importance sample of an HVAE runs its flow (K + 1 decoder gradients), so on a CPU a few dozen slices
            with >= 128 samples is what fits; the ELBOs still cover every slice.
        elbo_draws: single-draw ELBOs averaged per slice, with the flow on and off (a lower-variance flow gain).
    """

    num_importance_samples: int = 64
    seed: int = 0
    batch_size: int = 16
    importance_slices: int | None = None
    elbo_draws: int = 1

    def __post_init__(self) -> None:
        for name in ("num_importance_samples", "batch_size", "elbo_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.importance_slices is not None and self.importance_slices < 2:
            raise ValueError(f"importance_slices must be >= 2 (or None for all), got {self.importance_slices}")


@dataclass(frozen=True)
class LikelihoodOutcome:
    """What :func:`run_likelihood` did: the summary it wrote, generators scored now and found finished."""

    summary: dict[str, Any]
    scored_generators: int
    skipped_generators: int
    files: dict[str, Path]


def evenly_spaced(count: int, total: int | None) -> torch.Tensor:
    """Indices of ``total`` evenly spaced items out of ``count`` (all of them when ``total`` is None or larger)."""
    if total is None or total >= count:
        return torch.arange(count)
    return torch.linspace(0, count - 1, total).round().long()


def _batched(function, images: torch.Tensor, masks: torch.Tensor, batch_size: int, progress: bool, what: str):
    """``function(images, masks)`` batch by batch, concatenated."""
    pieces = []
    for start in tqdm(range(0, len(images), batch_size), desc=what, unit="batch", leave=False, disable=not progress):
        pieces.append(function(images[start : start + batch_size], masks[start : start + batch_size].long()))
    return torch.cat(pieces).double()


def _mean_and_spread(values: torch.Tensor) -> dict[str, float | None]:
    several = len(values) > 1
    return {"mean": values.mean().item(), "std": values.std().item() if several else None,
            "standard_error": (values.std() / len(values) ** 0.5).item() if several else None}


def score_likelihood(model: HVAEModel, images: torch.Tensor, masks: torch.Tensor, settings: LikelihoodSettings,
                     progress: bool = False) -> dict[str, Any]:
    """Per-slice ``log p(x, m)`` estimates and ELBOs (nats) of ``model`` on ``(images, masks)``.

    For an HVAE the ELBO is also taken with its flow off (``n_leapfrog=0``: the VAE bound of the same weights) from the
    same posterior draws; ``flow_gain`` is the paired difference, what the flow adds on held-out slices.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    chosen = evenly_spaced(len(images), settings.importance_slices)
    log_likelihood = _batched(
        lambda x, m: model.estimate_log_likelihood(x, m, settings.num_importance_samples, generator=generator),
        images[chosen], masks[chosen], settings.batch_size, progress, "log p(x, m)")
    has_flow = model.config.n_leapfrog > 0

    def elbos(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B, 2): the ELBO with the flow on and off, each averaged over ``elbo_draws`` paired draws."""
        draws = [torch.stack(model.elbo_with_and_without_flow(x, m, generator), dim=1)
                 for _ in range(settings.elbo_draws)]
        return torch.stack(draws).mean(0)

    elbo, elbo_flow_off = _batched(elbos, images, masks, settings.batch_size, progress, "ELBO").unbind(1)
    pixels = images[0].numel()  # image pixels per slice (the mask's pixels are the same positions)
    flow_gain = _mean_and_spread(elbo - elbo_flow_off)
    return {
        "num_slices": len(images),
        "importance_slices": len(chosen),
        "log_likelihood_mean": log_likelihood.mean().item(),
        "log_likelihood_std": log_likelihood.std().item() if len(chosen) > 1 else None,
        "elbo_mean": elbo.mean().item(),
        "elbo_std": elbo.std().item() if len(images) > 1 else None,
        "elbo_flow_off_mean": elbo_flow_off.mean().item(),
        "flow_gain_mean": flow_gain["mean"],
        "flow_gain_standard_error": flow_gain["standard_error"],
        "log_likelihood_per_pixel": log_likelihood.mean().item() / pixels,
        "n_leapfrog": int(model.config.n_leapfrog),
        **({"flow": model.flow_summary()} if has_flow else {}),
        "per_slice_log_likelihood": log_likelihood.tolist(),
    }


def paired_differences(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``log p`` of each generator minus the first one's, slice by slice: mean and standard error (nats/slice)."""
    names = list(records)
    if len(names) < 2:
        return {}
    reference = torch.tensor(records[names[0]]["per_slice_log_likelihood"], dtype=torch.float64)
    differences = {}
    for name in names[1:]:
        difference = torch.tensor(records[name]["per_slice_log_likelihood"], dtype=torch.float64) - reference
        standard_error = (difference.std() / len(difference) ** 0.5).item() if len(difference) > 1 else None
        differences[f"{name} - {names[0]}"] = {"mean": difference.mean().item(), "standard_error": standard_error}
    return differences


def run_likelihood(
    real: RealSplit,
    data_spec: RealDataSpec,
    generators: list[GeneratorSpec],
    out_dir: Path,
    settings: LikelihoodSettings = LikelihoodSettings(),
    progress: bool = True,
    allow_training_patients: bool = False,
) -> LikelihoodOutcome:
    """Score every HVAE/VAE generator on the real test slices (or reuse its finished record); write
    ``likelihood.json`` and ``likelihood.md``.

    ``allow_training_patients`` scores generators trained on some of the test patients (their model cards or run
    configs say so) instead of refusing them; the reports then say the scores are not held-out.

    Raises:
        ValueError: no generator, repeated names, a shape mismatch, a generator without a likelihood (LSGAN), or one
            trained on a test patient (without ``allow_training_patients``).
        SettingsMismatch: ``out_dir`` holds a finished record made with other settings.
    """
    check_generators(generators, tuple(real.test_images.shape[1:]))
    seen = patients_seen_in_training(generators, data_spec.test_patients, allow_training_patients)
    out_dir = Path(out_dir)
    store = RecordStore(out_dir / "runs")
    records: dict[str, dict[str, Any]] = {}
    scored = 0
    for spec in tqdm(generators, desc="likelihood", unit="generator", disable=not progress):
        key = f"likelihood__{spec.name}"
        run_settings = {"data": data_spec.identity(), "likelihood": asdict(settings),
                        "generator_fingerprint": model_fingerprint(spec.path)}
        record = store.finished(key, run_settings)
        if record is None:
            model = load_generator(spec).model
            if not isinstance(model, HVAEModel):
                raise ValueError(f"generator {spec.name} ({type(model).__name__}) has no encoder, hence no "
                                 "likelihood; only HVAE and VAE generators can be scored")
            scores = score_likelihood(model, real.test_images, real.test_masks, settings, progress)
            record = store.save(key, run_settings, {"generator": spec.name, **scores})
            scored += 1
        records[spec.name] = record
    summary = {
        "experiment": ("log-likelihood of (image, mask) pairs of test patients, NOT held-out for some generators"
                       if seen else "held-out log-likelihood of (image, mask) pairs"),
        "seen_in_training": seen,
        "paired_differences": paired_differences(records),
        "data": real.description,
        "settings": asdict(settings),
        "generators": {g.name: {"path": str(g.path)} for g in generators},
        "results": {name: {k: v for k, v in record.items() if k not in ("key", "settings", "per_slice_log_likelihood")}
                    for name, record in records.items()},
    }
    files = {"json": out_dir / "likelihood.json", "markdown": out_dir / "likelihood.md"}
    write_json_atomically(files["json"], summary)
    write_text_atomically(files["markdown"], likelihood_markdown(summary))
    return LikelihoodOutcome(summary, scored, len(generators) - scored, files)
