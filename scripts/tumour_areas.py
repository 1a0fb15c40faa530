"""How large are the tumours that generators draw from the prior, before any mask-area rule?

    .venv/bin/python scripts/tumour_areas.py HVAE=runs/cpu-128/pipeline LSGAN=runs/lsgan-cpu-128/pipeline \
        [--num-samples 256] [--seed 0] [--prior auto|standard|fitted] [--real-config cpu-128-warmup]

Per generator: median mask area (mask = sigmoid > 0.5), share of samples above 200 px and at least 50 px, and the
median *expected* area (sum of mask probabilities, independent of the threshold). ``--real-config`` adds the same
statistics of the real slices of a training config's patients, and of each HVAE/VAE's reconstructions of them
(decoded posterior means: what its decoder draws for latents it was trained on). ``--prior`` picks the latent prior as the pipeline
does (``auto``: the fitted one when a pipeline has it). Binary masks only.
"""

from __future__ import annotations

import argparse

import torch

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.evaluation.generators import parse_generator
from hvae_pipeline.pipeline import PRIORS, tumour_area


def summary(name: str, areas: torch.Tensor, expected: torch.Tensor | None = None) -> str:
    areas = areas.float()
    line = (f"{name}: median area {areas.median():.0f} px, > 200 px {100 * (areas > 200).float().mean():.1f} %, "
            f">= 50 px {100 * (areas >= 50).float().mean():.1f} %")
    return line + (f", median expected area {expected.median():.0f} px" if expected is not None else "")


@torch.inference_mode()
def mask_statistics(model: torch.nn.Module, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thresholded areas and expected areas (sum of mask probabilities) of the masks decoded from ``latents``: the
    probabilities are needed, so this decodes itself rather than through ``decode_latents``."""
    probabilities = torch.cat([torch.sigmoid(model.decode(chunk).mask_logits)[:, 0] for chunk in latents.split(64)])
    return tumour_area(probabilities > 0.5), probabilities.flatten(1).sum(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generators", nargs="+", metavar="NAME=PIPELINE",
                        help="saved pipeline folders to sample ('bundled': the packaged default model)")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", choices=PRIORS, default="auto", help="latent prior (see HVAEPipeline.__call__)")
    parser.add_argument("--real-config", help="training config whose patients' real slices are summarised too")
    arguments = parser.parse_args(argv)
    real = None
    if arguments.real_config:
        from hvae_pipeline.training.config import load_config
        from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset

        data = load_config(arguments.real_config)["data"]
        real = dataset_to_tensors(load_slice_dataset(data, data["patients"]))
    try:
        specs = [parse_generator(text) for text in arguments.generators]
    except ValueError as error:
        parser.error(str(error))
    for spec in specs:
        name = spec.name
        pipeline = HVAEPipeline.from_pretrained(str(spec.path))
        model = pipeline.model.eval()
        if model.config.mask_channels != 1:
            parser.error(f"generator {name}: {model.config.mask_channels} mask channels; only binary masks are summarised")
        try:
            prior = pipeline.resolve_prior(arguments.prior)
        except ValueError as error:
            parser.error(f"generator {name}: {error}")
        latents = pipeline.prior_latents(arguments.num_samples, torch.Generator().manual_seed(arguments.seed),
                                         prior=prior)
        print(summary(f"{name} ({prior} prior)", *mask_statistics(model, latents)))
        if real is not None and hasattr(model, "encode"):
            # Decoding the real slices' posterior means separates the decoder (can it draw such tumours?) from
            # the prior (does it ask for them?).
            with torch.inference_mode():
                means = torch.cat([model.encode(images, masks).latent_dist.mean
                                   for images, masks in zip(real[0].split(64), real[1].split(64))])
            print(summary(f"{name} reconstructions (posterior means of the real slices)", *mask_statistics(model, means)))
    if real is not None:
        print(summary(f"real ({arguments.real_config})", tumour_area(real[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
