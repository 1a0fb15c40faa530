"""``hvae-generate``: sample paired (image, tumour mask) slices to a folder, with a manifest.

Writes into a temporary sibling folder and renames it at the end, so an interrupted run never leaves a half-written
output behind, and an existing output is only replaced (``--overwrite``) once the new one is complete.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import torch

from ..pipeline import PRIORS, SamplingBudgetExceeded

FORMATS = ("png", "nifti", "dataset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvae-generate",
        description="Generate paired image + tumour-mask slices with a (Hamiltonian) VAE pipeline.",
    )
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--num-samples", type=int, default=16, help="number of pairs to write (default 16)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="png (default), nifti or dataset")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--min-mask-area", type=int, default=0, help="reject masks with fewer tumour pixels")
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="binary mask threshold (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=32, help="latents decoded per forward pass")
    parser.add_argument("--temperature", type=float, default=1.0, help="prior standard deviation scale")
    parser.add_argument("--prior", choices=PRIORS, default="auto",
                        help="latent prior: fitted (the model's Gaussian fitted to its training data), standard "
                             "(N(0, I), the paper's protocol) or auto (fitted when the model has one; default)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.min_mask_area < 0:
        parser.error(f"--min-mask-area must be >= 0, got {args.min_mask_area}")
    if not 0.0 < args.mask_threshold < 1.0:
        parser.error(f"--mask-threshold must be in (0, 1), got {args.mask_threshold}")
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.overwrite:
        parser.error(f"--out {args.out} is not empty; choose another folder or pass --overwrite")


def _write_png(folder: Path, images: np.ndarray, masks: np.ndarray) -> list[tuple[str, str]]:
    from ..visualization import to_grey_uint8

    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    names = []
    for index, (image, mask) in enumerate(zip(images, masks)):
        stem = f"sample_{index:05d}"
        if image.shape[-1] in (1, 3):
            pixels = to_grey_uint8(image) if image.shape[-1] == 1 else (image * 255).round().astype(np.uint8)
            PIL.Image.fromarray(pixels).save(folder / "images" / f"{stem}.png")
            image_name = f"images/{stem}.png"
        else:  # more modalities than PNG holds: keep the exact floats
            np.save(folder / "images" / f"{stem}.npy", image)
            image_name = f"images/{stem}.npy"
        PIL.Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")  # class ids (0/1 for binary masks)
        names.append((image_name, f"masks/{stem}.png"))
    return names


def _write_nifti(folder: Path, images: np.ndarray, masks: np.ndarray) -> list[tuple[str, str]]:
    import nibabel as nib

    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    names = []
    affine = np.eye(4)
    for index, (image, mask) in enumerate(zip(images, masks)):
        stem = f"sample_{index:05d}"
        # NIfTI axes are (x, y, z, modality): one axial slice, modalities on the 4th axis.
        volume = np.transpose(image, (1, 0, 2))[:, :, None, :]
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), folder / "images" / f"{stem}.nii.gz")
        nib.save(nib.Nifti1Image(mask.T[:, :, None].astype(np.uint8), affine), folder / "masks" / f"{stem}.nii.gz")
        names.append((f"images/{stem}.nii.gz", f"masks/{stem}.nii.gz"))
    return names


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)

    from ..defaults import load_pipeline
    from ..visualization import sample_grid

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
    print(f"Sampling {args.num_samples} pairs from the {description} ({prior} prior)")
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    try:
        output = pipeline(
            num_samples=args.num_samples,
            generator=generator,
            temperature=args.temperature,
            mask_threshold=args.mask_threshold,
            min_mask_area=args.min_mask_area,
            batch_size=args.batch_size,
            output_type="np",
            prior=prior,
        )
    except SamplingBudgetExceeded as error:
        print(f"hvae-generate: error: {error}", file=sys.stderr)
        return 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        manifest_rows = []
        if args.format == "dataset":
            _write_dataset(staging, output.images, output.masks, output.tumour_areas, source=description)
            names = [("dataset", "dataset")] * args.num_samples
        elif args.format == "nifti":
            names = _write_nifti(staging, output.images, output.masks)
        else:
            names = _write_png(staging, output.images, output.masks)
        for index, ((image_name, mask_name), area) in enumerate(zip(names, output.tumour_areas)):
            manifest_rows.append(
                {"index": index, "image": image_name, "mask": mask_name, "tumour_area": int(area), "seed": args.seed}
            )
        with open(staging / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(manifest_rows[0]))
            writer.writeheader()
            writer.writerows(manifest_rows)
        settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
        settings["prior_used"] = prior
        with open(staging / "manifest.json", "w") as handle:
            json.dump({"model": description, "settings": settings, "samples": manifest_rows}, handle, indent=2)
        sample_grid(output.images[:16], output.masks[:16]).save(staging / "preview.png")
        os.chmod(staging, 0o755)
        if args.out.exists():
            shutil.rmtree(args.out)
        os.replace(staging, args.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    areas = output.tumour_areas
    print(
        f"Wrote {args.num_samples} pairs ({args.format}) to {args.out} with manifest.csv/json and preview.png; "
        f"tumour area px: min {areas.min()}, median {int(np.median(areas))}, max {areas.max()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
