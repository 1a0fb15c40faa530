"""Seconds per downstream U-Net run (train + score), one thread: the cost unit of the augmentation and scarcity studies.

Loads the real split once (not timed), then for each seed trains the converged-protocol U-Net on the train slices
(plus ``--num-synthetic`` copies of flipped train slices standing in for synthetic pairs, to time larger training sets
without a generator) and scores it on the test slices. Prints one JSON line per seed: train, scoring and total
seconds and the DSC, so that two code versions run alternately on a shared machine give before/after ratios::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_unet_run.py --seeds 0 1

Data arguments default to the fixed BraTS split of ../shared/data/README.md (10 train patients, 6 test patients).
Only the public functions of hvae_pipeline.evaluation.segmentation are used, so the script also times older code
(``PYTHONPATH=<old checkout>``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hvae_pipeline.evaluation import RealDataSpec, UNetSettings, load_real_split
from hvae_pipeline.evaluation.segmentation import slice_dice, train_segmenter

TRAIN = "001 002 004 008 009 011 017 027 030 033"
TEST = "036 050 082 089 190 259"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--updates", type=int, default=180, help="U-Net updates (180, the converged protocol)")
    parser.add_argument("--num-synthetic", type=int, default=0,
                        help="stand-in synthetic pairs added (flipped train slices, repeated): times a larger set")
    parser.add_argument("--root", default="../shared/data/brats-msd-flair")
    parser.add_argument("--train-patients", nargs="+", default=[f"BRATS_{p}" for p in TRAIN.split()])
    parser.add_argument("--test-patients", nargs="+", default=[f"BRATS_{p}" for p in TEST.split()])
    parser.add_argument("--label", default="", help="free text copied into every JSON line (e.g. before/after)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = RealDataSpec(kind="brats", root=args.root, image_glob="images/{case}_Tumor.nii.gz",
                        label_glob="labels/{case}_Seg.nii.gz", train_patients=tuple(args.train_patients),
                        test_patients=tuple(args.test_patients))
    real = load_real_split(spec)
    images, masks = real.train_images, real.train_masks
    if args.num_synthetic:
        repeats = -(-args.num_synthetic // len(images))
        images = torch.cat([images, images.flip(-1).repeat(repeats, 1, 1, 1)[:args.num_synthetic]])
        masks = torch.cat([masks, masks.flip(-1).repeat(repeats, 1, 1)[:args.num_synthetic]])
    settings = UNetSettings(updates=args.updates)
    for seed in args.seeds:
        start = time.perf_counter()
        trained = train_segmenter(images, masks, settings, seed, progress=False)
        trained_at = time.perf_counter()
        dice = slice_dice(trained.network, real.test_images, real.test_masks, settings.prediction_threshold)
        done = time.perf_counter()
        print(json.dumps({"label": args.label, "seed": seed, "train_slices": len(images),
                          "test_slices": len(real.test_images), "train_seconds": round(trained_at - start, 2),
                          "score_seconds": round(done - trained_at, 2), "total_seconds": round(done - start, 2),
                          "dice_mean": float(dice.mean()), "final_loss": trained.final_loss}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
