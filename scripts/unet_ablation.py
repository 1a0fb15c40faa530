"""Real-only U-Net runs with single settings changed: the ablation behind RESULTS.md section 5.

Trains the downstream U-Net (hvae_pipeline.evaluation.segmentation) on the real train slices of a split and prints
the held-out DSC per seed, for any combination of UNetSettings fields, e.g. the paper's recipe plus the output head:

    .venv/bin/python scripts/unet_ablation.py --protocol paper output_head=true --seeds 0 1 2 3 4

Data arguments default to the fixed BraTS split of ../shared/data/README.md. Prints one line per seed and the mean and
sample standard deviation; appends the results as JSON lines to --log when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from hvae_pipeline.evaluation import RealDataSpec, UNetSettings, load_real_split
from hvae_pipeline.evaluation.segmentation import UNET_PROTOCOLS, slice_dice, train_segmenter

TRAIN = "001 002 004 008 009 011 017 027 030 033"
TEST = "036 050 082 089 190 259"


def parse_setting(text: str) -> tuple[str, object]:
    """``name=value`` of a UNetSettings field, the value parsed as that field's type."""
    name, _, value = text.partition("=")
    known = {field.name for field in fields(UNetSettings)}
    if name not in known or not value:
        raise SystemExit(f"setting {text!r}: expected NAME=VALUE with NAME one of {sorted(known)}")
    if value.lower() in ("true", "false"):
        return name, value.lower() == "true"
    if value.lower() == "none":
        return name, None
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, tuple(int(part) for part in value.split(",")) if name == "channels" else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", help="UNetSettings fields to change, e.g. output_head=true updates=360")
    parser.add_argument("--protocol", choices=UNET_PROTOCOLS, default="converged", help="starting recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--root", default="../shared/data/brats-msd-flair")
    parser.add_argument("--train-patients", nargs="+", default=[f"BRATS_{p}" for p in TRAIN.split()])
    parser.add_argument("--test-patients", nargs="+", default=[f"BRATS_{p}" for p in TEST.split()])
    parser.add_argument("--log", type=Path, default=None, help="append one JSON line per seed here")
    args = parser.parse_args(argv)
    settings = replace(UNetSettings.for_protocol(args.protocol), **dict(map(parse_setting, args.settings)))
    spec = RealDataSpec(kind="brats", root=args.root, image_glob="images/{case}_Tumor.nii.gz",
                        label_glob="labels/{case}_Seg.nii.gz", train_patients=tuple(args.train_patients),
                        test_patients=tuple(args.test_patients))
    real = load_real_split(spec)
    print(f"{real.description}\nU-Net: {settings.describe()}")
    scores = []
    for seed in args.seeds:
        trained = train_segmenter(real.train_images, real.train_masks, settings, seed, progress=sys.stderr.isatty())
        dice = float(slice_dice(trained.network, real.test_images, real.test_masks,
                                settings.prediction_threshold).mean())
        scores.append(dice)
        print(f"seed {seed}: DSC {100 * dice:.1f} % (final loss {trained.final_loss:.3f}, {trained.seconds:.0f} s)")
        if args.log:
            with args.log.open("a") as log:
                log.write(json.dumps({"settings": settings.as_dict(), "seed": seed, "dice_mean": dice}) + "\n")
    std = f" ± {100 * np.std(scores, ddof=1):.1f}" if len(scores) > 1 else ""
    print(f"mean over {len(scores)} seed(s): {100 * np.mean(scores):.1f}{std} %")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
