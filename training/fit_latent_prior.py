"""Fit the latent prior of a saved HVAE/VAE pipeline to its training slices, in place or into a new folder.

    hvae-fit-prior --pipeline runs/cpu-128/pipeline --config cpu-128 [--out FOLDER]
        [--source posterior|flow] [section.key=value ...]   (in a checkout: python training/fit_latent_prior.py)

The training slices are those of the config's ``data`` section and ``data.patients`` (the ones the model was trained
on). Pipelines exported by ``hvae-train`` already carry a fitted prior (``training.fit_latent_prior``);
this script serves pipelines saved before that, or refits on other slices. Everything else in the folder (weights,
model card, previews) is kept; the folder is replaced only once the new one is complete.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Sequence

import torch

from hvae_pipeline import HVAEModel, HVAEPipeline, fit_latent_prior
from hvae_pipeline.cli.version import add_version_option
from hvae_pipeline.models.latent_prior import LATENT_SOURCES
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset


def write_with_prior(pipeline_dir: Path, out_dir: Path, pipeline: HVAEPipeline) -> None:
    """Copy ``pipeline_dir`` to ``out_dir`` with ``pipeline``'s latent prior and component index, via a staging
    folder renamed into place (an interruption leaves ``out_dir`` as it was)."""
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(pipeline_dir, staging)
    shutil.rmtree(staging / "latent_prior", ignore_errors=True)
    pipeline.latent_prior.save_pretrained(staging / "latent_prior")
    pipeline.save_config(staging)  # model_index.json, now naming the latent_prior component
    previous = out_dir.with_name(out_dir.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(previous)
    staging.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_option(parser)
    parser.add_argument("--pipeline", type=Path, required=True, help="folder written by save_pretrained")
    parser.add_argument("--config", required=True, help="the training config (YAML file or name under training/configs/)")
    parser.add_argument("--out", type=Path, help="write the fitted pipeline here instead of in place")
    parser.add_argument("--source", choices=LATENT_SOURCES, default="posterior",
                        help="fit the encoder's z_0 (posterior, exact, seconds) or the flow's z_K (flow, Monte Carlo)")
    parser.add_argument("--samples-per-slice", type=int, default=4, help="flow runs per slice with --source flow (4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flow's draws with --source flow (0)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/brats")
    args = parser.parse_args(argv)
    if not (args.pipeline / "model_index.json").is_file():
        parser.error(f"--pipeline {args.pipeline}: not a saved pipeline (no model_index.json)")
    try:
        data = load_config(args.config, args.overrides)["data"]
    except ConfigError as error:
        parser.error(str(error))
    pipeline = HVAEPipeline.from_pretrained(str(args.pipeline))
    if not isinstance(pipeline.model, HVAEModel):
        parser.error(f"--pipeline {args.pipeline}: a {type(pipeline.model).__name__} has no posterior to fit a prior to")
    images, masks = dataset_to_tensors(load_slice_dataset(data, data["patients"]))
    if args.samples_per_slice < 1:
        parser.error(f"--samples-per-slice {args.samples_per_slice}: expected a positive number of flow runs")
    prior = fit_latent_prior(pipeline.model.eval(), images, masks, source=args.source,
                             samples_per_slice=args.samples_per_slice,
                             generator=torch.Generator().manual_seed(args.seed))
    out_dir = args.out or args.pipeline
    write_with_prior(args.pipeline, out_dir, HVAEPipeline(pipeline.model, prior))
    print(f"Fitted the latent prior to {len(images)} slices; wrote {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
