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
from .generators import GeneratorSpec, check_generators, load_generator, model_fingerprint
from .real_data import RealDataSpec, RealSplit
from .records import RecordStore, write_json_atomically, write_text_atomically
from .reporting import likelihood_markdown


@dataclass(frozen=True)
class LikelihoodSettings:
    """How the likelihood is estimated.

    Args:
        num_importance_samples: importance samples per slice for ``log p(x, m)`` (the estimate tightens as it grows).
        seed: seed of the posterior and momentum draws.
        batch_size: test slices per model call.
    """

    num_importance_samples: int = 64
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("num_importance_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class LikelihoodOutcome:
    """What :func:`run_likelihood` did: the summary it wrote, generators scored now and found finished."""

    summary: dict[str, Any]
    scored_generators: int
    skipped_generators: int
    files: dict[str, Path]


def score_likelihood(model: HVAEModel, images: torch.Tensor, masks: torch.Tensor, settings: LikelihoodSettings,
                     progress: bool = False) -> dict[str, Any]:
    """Per-slice ``log p(x, m)`` estimates and single-draw ELBOs (nats) of ``model`` on ``(images, masks)``."""
    generator = torch.Generator().manual_seed(settings.seed)
    log_likelihoods, elbos = [], []
    starts = range(0, len(images), settings.batch_size)
    for start in tqdm(starts, desc="slices", unit="batch", leave=False, disable=not progress):
        batch_images = images[start : start + settings.batch_size]
        batch_masks = masks[start : start + settings.batch_size].long()
        log_likelihoods.append(model.estimate_log_likelihood(
            batch_images, batch_masks, n_samples=settings.num_importance_samples, generator=generator))
        with torch.no_grad():
            elbos.append(model(batch_images, batch_masks, generator=generator).elbo)
    log_likelihood, elbo = torch.cat(log_likelihoods).double(), torch.cat(elbos).double()
    pixels = images[0].numel()  # image pixels per slice (the mask's pixels are the same positions)
    return {
        "num_slices": len(images),
        "log_likelihood_mean": log_likelihood.mean().item(),
        "log_likelihood_std": log_likelihood.std().item() if len(images) > 1 else None,
        "elbo_mean": elbo.mean().item(),
        "elbo_std": elbo.std().item() if len(images) > 1 else None,
        "log_likelihood_per_pixel": log_likelihood.mean().item() / pixels,
        "n_leapfrog": int(model.config.n_leapfrog),
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
) -> LikelihoodOutcome:
    """Score every HVAE/VAE generator on the real test slices (or reuse its finished record); write
    ``likelihood.json`` and ``likelihood.md``.

    Raises:
        ValueError: no generator, repeated names, a shape mismatch, or a generator without a likelihood (LSGAN).
        SettingsMismatch: ``out_dir`` holds a finished record made with other settings.
    """
    check_generators(generators, tuple(real.test_images.shape[1:]))
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
        "experiment": "held-out log-likelihood of (image, mask) pairs",
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
