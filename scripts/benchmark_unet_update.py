"""One U-Net update in NCHW vs channels_last, and the classic augmentation of a batch, interleaved in one process.

Same weights, same batch (32 random 128 x 128 slices), one CPU thread: on a machine shared with other processes the
ratios of interleaved rounds are what can be trusted, not the absolute seconds::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_unet_update.py --rounds 12

Prints, per contender, the median seconds per update and the median of the per-round ratios to NCHW; then the median
seconds of classic augmentation (hvae_pipeline.evaluation.classic_augmentation) of one batch, as a fraction of an update.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from hvae_pipeline.evaluation.classic_augmentation import ClassicAugmentation
from hvae_pipeline.evaluation.segmentation import UNetSettings, _loss_function, build_unet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = UNetSettings()
    torch.manual_seed(0)
    network = build_unet(1, settings)
    images = torch.rand(args.batch, 1, args.size, args.size)
    masks = (torch.rand(args.batch, 1, args.size, args.size) > 0.9).float()
    loss_function = _loss_function(settings)
    channels_last = torch.channels_last
    contenders = {"nchw": (copy.deepcopy(network), images),
                  "channels_last": (copy.deepcopy(network).to(memory_format=channels_last),
                                    images.contiguous(memory_format=channels_last))}
    optimisers = {name: torch.optim.Adam(net.parameters(), 1e-3) for name, (net, _) in contenders.items()}
    seconds: dict[str, list[float]] = {name: [] for name in [*contenders, "classic augmentation"]}
    augmentation = ClassicAugmentation(0)
    for _ in range(args.rounds):
        for name, (net, batch) in contenders.items():
            start = time.perf_counter()
            optimisers[name].zero_grad(set_to_none=True)
            loss_function(net(batch), masks).backward()
            optimisers[name].step()
            seconds[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        augmentation(images, masks[:, 0].to(torch.uint8))
        seconds["classic augmentation"].append(time.perf_counter() - start)
    for name, values in seconds.items():
        ratio = np.median(np.divide(values, seconds["nchw"]))
        print(f"{name}: median {np.median(values):.3f} s, median ratio to an NCHW update {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
