"""``hvae-data``: prepare slice datasets from medical volumes or 2D pairs.

Example::

    hvae-data prepare brats ../shared/data/brats-msd-flair --out data/msd --data-source msd-task01 \\
        --image-glob 'images/{case}_Tumor.nii.gz' --label-glob 'labels/{case}_Seg.nii.gz' --num-proc 2

The dataset folder holds its card (``dataset/README.md``: licence and citation of the source, preprocessing, split)
and a ``preview`` image column for the Hub's viewer.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.cards import DATA_SOURCES
from ..data.labels import BRATS_CONVENTIONS
from .version import add_version_option

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard

HISTOGRAM_BIN_PX = 25  # the paper's balancing bin width
# What `prepare` writes: --overwrite replaces a folder holding only these (see hvae_pipeline.storage.output_folder).
OWN_OUTPUTS = ("dataset/", "dataset/**", "slices.parquet", "area_histogram.png", "summary.txt")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hvae-data", description="Prepare 2D image + tumour mask slice datasets.")
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="load a dataset folder and write it with save_to_disk")
    prepare.add_argument("kind", choices=("brats", "hecktor", "pairs"), help="which loader to use")
    prepare.add_argument("root", type=Path, help="dataset folder")
    prepare.add_argument("--out", type=Path, required=True, help="output folder (new or empty unless --overwrite)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out once the new one is complete")
    prepare.add_argument("--parquet", action="store_true", help="also write slices.parquet")
    prepare.add_argument("--modalities", nargs="+", help="brats: flair t1 t1ce t2 (default flair); hecktor: pt ct (default pt)")
    prepare.add_argument("--label", help="target (brats default whole_tumor, hecktor default gtvp)")
    prepare.add_argument("--label-convention", default="auto", choices=("auto", *sorted(BRATS_CONVENTIONS)),
                         help="brats label convention (default auto: read from the layout)")
    prepare.add_argument("--image-glob", help="brats/pairs: image pattern with {case} (pairs: required)")
    prepare.add_argument("--label-glob", help="brats: label pattern with {case}")
    prepare.add_argument("--mask-glob", help="pairs: mask pattern with the image pattern's fields (required)")
    prepare.add_argument("--channels", type=int, nargs="+", help="pairs: picture channels to keep")
    prepare.add_argument("--size", type=int, default=128)
    prepare.add_argument("--depth", type=int, default=64, help="brats/hecktor: slices after resampling")
    prepare.add_argument("--normalization", default="minmax", choices=("minmax", "zscore", "none"))
    prepare.add_argument("--min-tumour-area", type=int, default=1)
    prepare.add_argument("--balance", action="store_true", help="area-balanced subsampling (paper)")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--patients", nargs="+", help="only these patient ids")
    prepare.add_argument("--allow-unlabelled", action="store_true", help="keep cases without labels (all-zero masks)")
    prepare.add_argument("--num-proc", type=int, default=1)
    prepare.add_argument("--cache-dir", type=Path, help="reuse/store prepared datasets here (default: no cache)")
    prepare.add_argument("--data-source", choices=sorted(DATA_SOURCES),
                         help="origin of the data, for the dataset card's licence and citation: msd-task01 (CC BY-SA "
                              "4.0), brats (BraTS data terms), hecktor (HECKTOR data terms) or unknown (default: "
                              "implied by the detected layout, else unknown)")
    return parser


def _load(args: argparse.Namespace):
    from hvae_pipeline.data import load_brats_slices, load_hecktor_slices, load_pair_slices

    common = dict(
        normalization=args.normalization, min_tumour_area=args.min_tumour_area, balance=args.balance, seed=args.seed,
        num_proc=args.num_proc, cache_dir=args.cache_dir or False, progress=True, patients=args.patients, size=args.size,
    )
    if args.kind == "pairs":
        if not (args.image_glob and args.mask_glob):
            raise ValueError("prepare pairs needs --image-glob and --mask-glob")
        return load_pair_slices(args.root, args.image_glob, args.mask_glob, channels=args.channels, **common)
    common.update(depth=args.depth, allow_unlabelled=args.allow_unlabelled)
    if args.kind == "brats":
        return load_brats_slices(
            args.root, modalities=tuple(args.modalities or ("flair",)), label=args.label or "whole_tumor",
            label_convention=args.label_convention, image_glob=args.image_glob, label_glob=args.label_glob, **common,
        )
    return load_hecktor_slices(args.root, modalities=tuple(args.modalities or ("pt",)), label=args.label or "gtvp", **common)


def _preprocessing(args: argparse.Namespace) -> list[str]:
    """The preprocessing steps of ``prepare``, in words, for the dataset card."""
    if args.kind == "pairs":
        steps = [f"2D image and mask files matched by the patterns `{args.image_glob}` and `{args.mask_glob}` (the "
                 f"patient is `{{case}}`), channels {args.channels or 'all'}; masks binarised (any non-zero value is "
                 f"tumour); resized to {args.size} x {args.size} pixels."]
    else:
        modalities = args.modalities or (["flair"] if args.kind == "brats" else ["pt"])
        label = args.label or ("whole_tumor" if args.kind == "brats" else "gtvp")
        steps = [f"Channels (modalities, in order): {', '.join(modalities)}; target label: {label}.",
                 f"Volumes reoriented to the closest RAS orientation, resampled to {args.size} x {args.size} x "
                 f"{args.depth} voxels (trilinear images, per-label masks) and cut into axial slices shown in the "
                 "radiological convention (nose up, the patient's right on the image's left)."]
    steps.append({"minmax": "Intensities min-max normalised per slice and channel to [0, 1] (the paper's choice).",
                  "zscore": "Intensities z-scored per volume and channel over the foreground.",
                  "none": "Intensities left as read."}[args.normalization])
    steps.append(f"Slices kept when their mask has at least {args.min_tumour_area} tumour pixels.")
    if args.balance:
        steps.append(f"Area-balanced subsampling (the paper's): tumour areas from 200 px in bins of {HISTOGRAM_BIN_PX} "
                     f"px, seed {args.seed}.")
    if args.patients:
        steps.append(f"Only the patients {', '.join(args.patients)}.")
    return steps


SLICE_COLUMNS = {
    "image": "float32 (C, H, W), one channel per modality",
    "mask": "uint8 (H, W): 0 background, 1 tumour (binary targets) or class ids",
    "patient_id": "the case's identifier in the source",
    "slice_index": "axial index in the resampled volume, inferior to superior (volumes); the file's index (pairs)",
    "tumour_area": "tumour (non-zero) pixels of the mask",
    "source": "the file layout the slices were read from (msd, brats2021, brats2023, hecktor..., glob, pairs)",
    "preview": "PNG of the slice (first channel) with its tumour coloured over it (for viewers)",
}


def _card(args: argparse.Namespace, dataset: "Dataset") -> "DatasetCard":
    """The dataset card of the prepared slices; warns on stderr when their licence is unknown."""
    from ..data.cards import infer_data_source, prepared_dataset_card

    source = args.data_source or infer_data_source(args.kind, sorted(set(dataset["source"])))
    if source == "unknown":
        print("hvae-data: warning: the data's origin (licence, citation) is not known from its layout; the dataset "
              f"card says so. Pass --data-source ({', '.join(sorted(DATA_SOURCES))})", file=sys.stderr)
    return prepared_dataset_card(DATA_SOURCES[source], f"{args.root.resolve().name} slices ({args.kind})",
                                 len(dataset), len(set(dataset["patient_id"])), _preprocessing(args), SLICE_COLUMNS)


def summarize(patient_ids: Sequence[str], areas: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Text summary (slices per patient, tumour-area histogram) plus the histogram counts and bin edges."""
    per_patient = Counter(patient_ids)
    top = max(int(areas.max(initial=0)), 1)
    edges = np.arange(0, top + HISTOGRAM_BIN_PX, HISTOGRAM_BIN_PX)
    counts, edges = np.histogram(areas, bins=edges)
    lines = [f"{len(patient_ids)} slices from {len(per_patient)} patients", "slices per patient:"]
    lines += [f"  {patient}: {count}" for patient, count in sorted(per_patient.items())]
    lines.append(f"tumour area histogram ({HISTOGRAM_BIN_PX} px bins):")
    lines += [f"  [{int(lo)}, {int(hi)}): {n}" for lo, hi, n in zip(edges[:-1], edges[1:], counts) if n]
    return "\n".join(lines), counts, edges


def _save_histogram(counts: np.ndarray, edges: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers/CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="black")
    axes.set(xlabel="tumour area (pixels)", ylabel="slices", title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hvae-data``; returns the exit code (0 success, 2 bad input)."""
    from hvae_pipeline.outputs.export import add_preview_column, save_dataset
    from hvae_pipeline.storage.output_folder import atomic_directory

    parser = _parser()
    args = parser.parse_args(argv)
    repeated = sorted(patient for patient, count in Counter(args.patients or ()).items() if count > 1)
    if repeated:  # each slice would be written once per mention
        parser.error(f"--patients: {', '.join(repeated)} given more than once; list each patient once")
    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        # Found only when the prepared slices are stored, after the whole preparation.
        parser.error(f"--cache-dir {args.cache_dir}: exists and is not a folder; pass a folder or leave it out")
    try:
        # Entering checks --out and creates the staging folder before the (long) preparation, and moving the result
        # into place checks again.
        with atomic_directory(args.out, OWN_OUTPUTS, overwrite=args.overwrite, argument="--out") as temporary:
            dataset = _load(args)
            text, counts, edges = summarize(list(dataset["patient_id"]), np.asarray(dataset["tumour_area"]))
            card = _card(args, dataset)
            dataset = add_preview_column(dataset)
            save_dataset(dataset, temporary / "dataset", card)
            if args.parquet:
                dataset.to_parquet(str(temporary / "slices.parquet"))
            _save_histogram(counts, edges, temporary / "area_histogram.png", f"{args.kind}: {args.root.name}")
            (temporary / "summary.txt").write_text(text + "\n")
    except (ValueError, FileNotFoundError) as exc:
        print(f"hvae-data: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"written to {args.out} (dataset/ with its card README.md, area_histogram.png, summary.txt"
          f"{', slices.parquet' if args.parquet else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
