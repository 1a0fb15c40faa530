"""``hvae-generate``: sample paired (image, tumour mask) slices to a folder, with a manifest.

Writes into a hidden sibling folder, batch by batch as the pairs are sampled (memory does not grow with
``--num-samples``, except for ``--format dataset``), and renames it at the end (:mod:`hvae_pipeline.output_folder`):
an interrupted or killed run leaves nothing behind, ``--out`` is checked before sampling, and ``--overwrite`` only
replaces an earlier output of this command, once the new one is complete.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import torch

from ..output_folder import OutputFolderError, atomic_directory, check_output_folder
from ..pipeline import PRIORS, HVAEPipeline, HVAEPipelineOutput, SamplingBudgetExceeded
from ..validation import MAX_SEED

FORMATS = ("png", "nifti", "dataset")
# What this command writes: --overwrite replaces a folder holding only these (see hvae_pipeline.output_folder).
OWN_OUTPUTS = ("images/", "images/sample_*", "masks/", "masks/sample_*", "dataset/", "dataset/**", "manifest.csv",
               "manifest.json", "preview.png")
# Beyond this the decoder's activations overflow (a 1e30 temperature gives NaN images); the useful range is ~0.5-2.
MAX_TEMPERATURE = 100.0
PREVIEW_PAIRS = 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvae-generate",
        description="Generate paired image + tumour-mask slices with a (Hamiltonian) VAE pipeline.",
    )
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--num-samples", type=int, default=16, help="number of pairs to write (default 16)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (new or empty; --overwrite replaces an earlier output of this command)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="png (default), nifti or dataset")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--min-mask-area", type=int, default=0, help="reject masks with fewer tumour pixels")
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="binary mask threshold (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=32, help="latents decoded per forward pass")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help=f"prior standard deviation scale, in (0, {MAX_TEMPERATURE:g}] (default 1)")
    parser.add_argument("--prior", choices=PRIORS, default="auto",
                        help="latent prior: fitted (the model's Gaussian fitted to its training data), standard "
                             "(N(0, I), the paper's protocol) or auto (fitted when the model has one; default)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command in --out")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.min_mask_area < 0:
        parser.error(f"--min-mask-area must be >= 0, got {args.min_mask_area}")
    if not 0 <= args.seed <= MAX_SEED:  # torch wraps negative seeds and fails on larger ones after loading the model
        parser.error(f"--seed must be in [0, {MAX_SEED}] (2**63 - 1), got {args.seed}")
    if not 0.0 < args.mask_threshold < 1.0:
        parser.error(f"--mask-threshold must be in (0, 1), got {args.mask_threshold}")
    if not (math.isfinite(args.temperature) and 0 < args.temperature <= MAX_TEMPERATURE):
        parser.error(f"--temperature must be in (0, {MAX_TEMPERATURE:g}], got {args.temperature}; 1 samples the prior "
                     "as trained, lower values give more typical pairs")
    try:
        check_output_folder(args.out, OWN_OUTPUTS, args.overwrite, argument="--out")
    except OutputFolderError as error:
        parser.error(str(error))


def _write_pairs(folder: Path, images: np.ndarray, masks: np.ndarray, first_index: int,
                 file_format: str) -> list[tuple[str, str]]:
    """Write one batch as ``images/sample_NNNNN.*`` and ``masks/sample_NNNNN.*`` numbered from ``first_index``.

    Args:
        folder: The (staging) output folder.
        images: ``(B, H, W, C)`` floats in ``[0, 1]``.
        masks: ``(B, H, W)`` uint8 class ids.
        first_index: Number of the batch's first pair.
        file_format: ``"png"`` or ``"nifti"``.

    Returns:
        The ``(image, mask)`` paths written, relative to ``folder``.
    """
    (folder / "images").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    save = _save_png_pair if file_format == "png" else _save_nifti_pair
    return [save(folder, f"sample_{first_index + offset:05d}", image, mask)
            for offset, (image, mask) in enumerate(zip(images, masks))]


def _save_png_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    from ..visualization import to_grey_uint8

    if image.shape[-1] in (1, 3):
        pixels = to_grey_uint8(image) if image.shape[-1] == 1 else (image * 255).round().astype(np.uint8)
        PIL.Image.fromarray(pixels).save(folder / "images" / f"{stem}.png")
        image_name = f"images/{stem}.png"
    else:  # more modalities than PNG holds: keep the exact floats
        np.save(folder / "images" / f"{stem}.npy", image)
        image_name = f"images/{stem}.npy"
    PIL.Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")  # class ids (0/1 for binary masks)
    return image_name, f"masks/{stem}.png"


def _save_nifti_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray) -> tuple[str, str]:
    import nibabel as nib

    affine = np.eye(4)
    # NIfTI axes are (x, y, z, modality): one axial slice, modalities on the 4th axis.
    volume = np.transpose(image, (1, 0, 2))[:, :, None, :]
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), folder / "images" / f"{stem}.nii.gz")
    nib.save(nib.Nifti1Image(mask.T[:, :, None].astype(np.uint8), affine), folder / "masks" / f"{stem}.nii.gz")
    return f"images/{stem}.nii.gz", f"masks/{stem}.nii.gz"


def _write_dataset(folder: Path, images: np.ndarray, masks: np.ndarray, areas: np.ndarray, source: str) -> None:
    from datasets import Array2D, Array3D, Dataset, Features, Value

    channels_first = np.transpose(images, (0, 3, 1, 2))
    features = Features(
        {
            "image": Array3D(channels_first.shape[1:], "float32"),
            "mask": Array2D(masks.shape[1:], "uint8"),
            "patient_id": Value("string"),
            "slice_index": Value("int32"),
            "tumour_area": Value("int32"),
            "source": Value("string"),
        }
    )
    records = {
        "image": list(channels_first),
        "mask": list(masks),
        "patient_id": ["synthetic"] * len(masks),
        "slice_index": list(range(len(masks))),
        "tumour_area": [int(a) for a in areas],
        "source": [source] * len(masks),
    }
    Dataset.from_dict(records, features=features).save_to_disk(str(folder / "dataset"))


def _sample_into(folder: Path, pipeline: HVAEPipeline, args: argparse.Namespace, prior: str,
                 description: str) -> np.ndarray:
    """Sample ``args.num_samples`` pairs into ``folder`` with their manifest and preview; return the tumour areas.

    PNG and NIfTI pairs are written batch by batch as they are sampled; ``--format dataset`` gathers them first
    (``save_to_disk`` writes one table).
    """
    from ..visualization import sample_grid

    batches = pipeline.sample_batches(
        num_samples=args.num_samples,
        generator=torch.Generator(device="cpu").manual_seed(args.seed),
        temperature=args.temperature,
        mask_threshold=args.mask_threshold,
        min_mask_area=args.min_mask_area,
        batch_size=args.batch_size,
        output_type="np",
        prior=prior,
    )
    names: list[tuple[str, str]] = []
    areas: list[np.ndarray] = []
    kept: list[HVAEPipelineOutput] = []  # every batch for the dataset format, else those the preview shows
    for batch in batches:
        areas.append(batch.tumour_areas)
        if args.format == "dataset" or len(names) < PREVIEW_PAIRS:
            kept.append(batch)
        if args.format != "dataset":
            names += _write_pairs(folder, batch.images, batch.masks, len(names), args.format)
    images, masks = np.concatenate([b.images for b in kept]), np.concatenate([b.masks for b in kept])
    tumour_areas = np.concatenate(areas)
    if args.format == "dataset":
        _write_dataset(folder, images, masks, tumour_areas, source=description)
        names = [("dataset", "dataset")] * args.num_samples
    rows = [{"index": index, "image": image_name, "mask": mask_name, "tumour_area": int(area), "seed": args.seed}
            for index, ((image_name, mask_name), area) in enumerate(zip(names, tumour_areas))]
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    settings["prior_used"] = prior
    with open(folder / "manifest.json", "w") as handle:
        json.dump({"model": description, "settings": settings, "samples": rows}, handle, indent=2)
    sample_grid(images[:PREVIEW_PAIRS], masks[:PREVIEW_PAIRS]).save(folder / "preview.png")
    return tumour_areas


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)

    from ..defaults import load_pipeline

    try:
        pipeline, description = load_pipeline(args.model)
    except OSError as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    try:
        prior = pipeline.resolve_prior(args.prior)
    except ValueError as error:
        print(f"hvae-generate: error: --prior {args.prior}: {error}", file=sys.stderr)
        return 2
    try:
        # What only the model decides (a --min-mask-area beyond its slice size), before any sampling.
        pipeline.check_sampling_arguments(args.num_samples, None, args.temperature, args.mask_threshold,
                                          args.min_mask_area, args.batch_size, None, prior)
    except (ValueError, SamplingBudgetExceeded) as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    try:
        # Entering creates the staging folder: an unwritable --out fails here, before any sampling.
        with atomic_directory(args.out, OWN_OUTPUTS, overwrite=args.overwrite, argument="--out") as staging:
            print(f"Sampling {args.num_samples} pairs from the {description} ({prior} prior)")
            areas = _sample_into(staging, pipeline, args, prior, description)
    except OutputFolderError as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 2
    except (SamplingBudgetExceeded, ValueError) as error:  # ValueError: the decoder gave NaN or infinite values
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
