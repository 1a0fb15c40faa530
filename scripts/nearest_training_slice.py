"""Do samples copy the training slices? Distances from samples to their nearest training slice, against references.

    .venv/bin/python scripts/nearest_training_slice.py HVAE=hvae_pipeline/checkpoints/default --config cpu-128 \
        [--num-samples 256] [--seed 0] [--prior auto|standard|fitted] [section.key=value ...]

Prints quantiles (10 / 50 / 90 %) of the per-pixel mean squared distance from each image to its nearest training
image, for: the config's held-out ``val_patients`` slices (what new real data looks like), the model's reconstructions
of its own training slices (what copies look like: near 0), and each generator's samples. Samples as far from the
training set as held-out real slices are new slices, not copies; samples much farther are off the data manifold.
"""

from __future__ import annotations

import argparse

import torch

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.evaluation.generators import parse_generator
from hvae_pipeline.pipeline import PRIORS
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset

QUANTILES = (0.1, 0.5, 0.9)


def nearest_distances(images: torch.Tensor, training_images: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean squared distance from each of ``images`` ``(N, C, H, W)`` to its nearest training image."""
    squared = torch.cdist(images.flatten(1).double(), training_images.flatten(1).double()) ** 2
    return squared.min(dim=1).values / images[0].numel()


def summary(name: str, distances: torch.Tensor) -> str:
    values = torch.quantile(distances, torch.tensor(QUANTILES, dtype=distances.dtype))
    return f"{name}: nearest-training-slice MSE q10 {values[0]:.4f}, median {values[1]:.4f}, q90 {values[2]:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generators", nargs="+", metavar="NAME=PIPELINE",
                        help="saved pipeline folders to sample ('bundled': the packaged default model)")
    parser.add_argument("--config", required=True, help="training config naming the training and held-out patients")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", choices=PRIORS, default="auto", help="latent prior (see HVAEPipeline.__call__)")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override, e.g. --override data.root=/data/brats (repeatable)")
    arguments = parser.parse_args(argv)
    try:
        specs = [parse_generator(text) for text in arguments.generators]
    except ValueError as error:
        parser.error(str(error))
    try:
        data = load_config(arguments.config, arguments.override)["data"]
    except ConfigError as error:
        parser.error(str(error))
    training_images, training_masks = dataset_to_tensors(load_slice_dataset(data, data["patients"]))
    if data["val_patients"]:
        held_out, _ = dataset_to_tensors(load_slice_dataset(data, data["val_patients"]))
        print(summary("held-out real slices", nearest_distances(held_out, training_images)))
    for spec in specs:
        name = spec.name
        pipeline = HVAEPipeline.from_pretrained(str(spec.path))
        pipeline.set_progress_bar_config(disable=True)
        try:
            prior = pipeline.resolve_prior(arguments.prior)
        except ValueError as error:
            parser.error(f"generator {name}: {error}")
        if isinstance(pipeline.model, HVAEModel):
            with torch.inference_mode():
                posterior = pipeline.model.encode(training_images, training_masks).latent_dist
                reconstructions = pipeline.model.decode(posterior.mean).images
            print(summary(f"{name} reconstructions of its training slices", nearest_distances(reconstructions,
                                                                                               training_images)))
        samples = pipeline(num_samples=arguments.num_samples, generator=torch.Generator().manual_seed(arguments.seed),
                           output_type="pt", prior=prior).images
        print(summary(f"{name} samples ({prior} prior)", nearest_distances(samples, training_images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
