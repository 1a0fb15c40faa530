"""``hvae-generate``: sample paired (image, tumour mask) slices to a folder, with a manifest.

Writes into a hidden sibling folder, batch by batch as the pairs are sampled (memory does not grow with
``--num-samples``, except for ``--format dataset``), and renames it at the end (:mod:`hvae_pipeline.storage.output_folder`):
an interrupted or killed run leaves nothing behind, ``--out`` is checked before sampling, and ``--overwrite`` only
replaces an earlier output of this command, once the new one is complete. The layouts are those of
:mod:`hvae_pipeline.outputs.export`. By default only pairs whose mask has more than 200 tumour pixels are kept, the paper's
rule; ``--min-tumour-area 0`` keeps every pair (the raw model).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..hub.model_card import generating_model
from ..outputs.export import FOLDER_FORMATS, FOLDER_OUTPUTS, SampleFolderWriter
from ..storage.output_folder import OutputFolderError, atomic_directory, check_output_folder
from ..pipeline import PAPER_MIN_TUMOUR_AREA, PRIORS, HVAEPipeline, SamplingBudgetExceeded
from ..models.inputs import MAX_SEED
from .options import add_min_tumour_area_option, check_device
from .version import add_version_option

# Beyond this the decoder's activations overflow (a 1e30 temperature gives NaN images); the useful range is ~0.5-2.
MAX_TEMPERATURE = 100.0


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hvae-generate``."""
    parser = argparse.ArgumentParser(
        prog="hvae-generate",
        description="Generate paired image + tumour-mask slices with a (Hamiltonian) VAE pipeline.",
    )
    add_version_option(parser)
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--num-samples", type=int, default=16, help="number of pairs to write (default 16)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (new or empty; --overwrite replaces an earlier output of this command)")
    parser.add_argument("--format", choices=FOLDER_FORMATS, default="png",
                        help="png (default), nifti or dataset (a `datasets` folder with its card)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_min_tumour_area_option(
        parser, "--min-tumour-area", PAPER_MIN_TUMOUR_AREA,
        f"keep the pairs whose mask has at least this many tumour pixels (default {PAPER_MIN_TUMOUR_AREA}: the "
        "paper's > 200 px at 128 x 128; 0 keeps every pair, the raw model)")
    parser.add_argument("--max-draws", type=int, default=None,
                        help="give up after drawing this many latents when --min-tumour-area rejects pairs (default: "
                             "20 x --num-samples, at least 1000)")
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="binary mask threshold (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=32, help="latents decoded per forward pass")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help=f"prior standard deviation scale, in (0, {MAX_TEMPERATURE:g}] (default 1)")
    parser.add_argument("--prior", choices=PRIORS, default="auto",
                        help="latent prior: fitted (the model's Gaussian fitted to its training data), standard "
                             "(N(0, I), the paper's protocol) or auto (fitted when the model has one; default)")
    parser.add_argument("--device", default="cpu",
                        help="device that decodes the samples, e.g. cuda (default cpu; the noise is drawn on the CPU, "
                             "so a seed gives the same latents everywhere)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command in --out")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.min_tumour_area < 0:
        parser.error(f"--min-tumour-area must be >= 0, got {args.min_tumour_area}")
    if args.max_draws is not None and args.max_draws < args.num_samples:
        parser.error(f"--max-draws must be >= --num-samples ({args.num_samples}), got {args.max_draws}")
    if not 0 <= args.seed <= MAX_SEED:  # torch wraps negative seeds and fails on larger ones after loading the model
        parser.error(f"--seed must be in [0, {MAX_SEED}] (2**63 - 1), got {args.seed}")
    if not 0.0 < args.mask_threshold < 1.0:
        parser.error(f"--mask-threshold must be in (0, 1), got {args.mask_threshold}")
    if not (math.isfinite(args.temperature) and 0 < args.temperature <= MAX_TEMPERATURE):
        parser.error(f"--temperature must be in (0, {MAX_TEMPERATURE:g}], got {args.temperature}; 1 samples the prior "
                     "as trained, lower values give more typical pairs")
    try:
        check_device("--device", args.device)
        check_output_folder(args.out, FOLDER_OUTPUTS, args.overwrite, argument="--out")
    except ValueError as error:  # OutputFolderError is a ValueError
        parser.error(str(error))


def _sample_into(folder: Path, pipeline: HVAEPipeline, args: argparse.Namespace, prior: str,
                 description: str) -> np.ndarray:
    """Sample ``args.num_samples`` pairs into ``folder`` with their manifest and preview; return the tumour areas."""
    batches = pipeline.sample_batches(
        num_samples=args.num_samples,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        temperature=args.temperature,
        mask_threshold=args.mask_threshold,
        min_tumour_area=args.min_tumour_area,
        batch_size=args.batch_size,
        output_type="np",
        max_draws=args.max_draws,
        prior=prior,
    )
    writer = SampleFolderWriter(folder, args.format, seed=args.seed)
    for batch in batches:
        writer.add(batch.images, batch.masks, batch.tumour_areas)
    settings: dict[str, Any] = {key: (str(value) if isinstance(value, Path) else value)
                                for key, value in vars(args).items()}
    settings["prior_used"] = prior
    # What the dataset card lists: the settings that define the pairs, and no folder of this machine.
    sampling = {"seed": args.seed, "prior": prior, "temperature": args.temperature,
                "mask threshold": args.mask_threshold, "minimum tumour area (px)": args.min_tumour_area,
                "latents per batch": args.batch_size}
    rows = writer.finish({"model": description, "settings": settings}, generating_model(pipeline), sampling)
    return np.array([row["tumour_area"] for row in rows])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hvae-generate``; returns the exit status (0 success, 1 sampling failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)

    from ..bundled_model import load_pipeline

    try:
        pipeline, description = load_pipeline(args.model)
    except OSError as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    pipeline.to(args.device)
    try:
        prior = pipeline.resolve_prior(args.prior)
    except ValueError as error:
        print(f"hvae-generate: error: --prior {args.prior}: {error}", file=sys.stderr)
        return 2
    try:
        # What only the model decides (a --min-tumour-area beyond its slice size), before any sampling.
        pipeline.check_sampling_arguments(args.num_samples, None, args.temperature, args.mask_threshold,
                                          args.min_tumour_area, args.batch_size, args.max_draws, prior)
    except (ValueError, SamplingBudgetExceeded) as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    try:
        # Entering creates the staging folder: an unwritable --out fails here, before any sampling.
        with atomic_directory(args.out, FOLDER_OUTPUTS, overwrite=args.overwrite, argument="--out") as staging:
            print(f"Sampling {args.num_samples} pairs from the {description} ({prior} prior, tumour area >= "
                  f"{args.min_tumour_area} px) on {args.device}")
            areas = _sample_into(staging, pipeline, args, prior, description)
    except OutputFolderError as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    except SamplingBudgetExceeded as error:
        print(f"hvae-generate: error: {error} (options --min-tumour-area, --max-draws)", file=sys.stderr)
        return 1
    except ValueError as error:  # the decoder gave NaN or infinite values
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the staging folder is already gone
        print("hvae-generate: interrupted; nothing was written to --out", file=sys.stderr)
        return 128 + signal.SIGINT
    print(
        f"Wrote {args.num_samples} pairs ({args.format}) to {args.out} with manifest.csv/json and preview.png; "
        f"tumour area px: min {areas.min()}, median {int(np.median(areas))}, max {areas.max()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
