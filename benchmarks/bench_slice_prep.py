"""Time slice preparation of the 16 shared brats-msd-flair patients with num_proc=1 and num_proc=2 (no cache).

Usage: .venv/bin/python benchmarks/bench_slice_prep.py [--repeats 3] [--data ../shared/data/brats-msd-flair]
Runs alternate (1, 2, 1, 2, ...) so background load affects both settings alike; prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import datasets
import torch

from hvae_pipeline.data import load_brats_slices

GLOBS = dict(image_glob="images/{case}_Tumor.nii.gz", label_glob="labels/{case}_Seg.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brats-msd-flair")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, "
          f"load average={os.getloadavg()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, datasets {datasets.__version__}")
    times: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for num_proc in (1, 2):
            start = time.perf_counter()
            data = load_brats_slices(args.data, cache_dir=False, num_proc=num_proc, **GLOBS)
            times[num_proc].append(time.perf_counter() - start)
            print(f"repeat {repeat} num_proc={num_proc}: {times[num_proc][-1]:.2f} s ({data.num_rows} slices)")
    medians = {n: statistics.median(t) for n, t in times.items()}
    print(f"median num_proc=1: {medians[1]:.2f} s, num_proc=2: {medians[2]:.2f} s, speed-up x{medians[1] / medians[2]:.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
