"""Training step time and peak memory: our VAE (K = 0), exact HVAE, exact HVAE with gradient checkpointing, detached
HVAE, and pythae 0.1.2's HVAE, all on the same encoder/decoder networks, batch, latent, K, step size and beta_0.

A step is forward + backward + AdamW. Every contender runs in a fresh subprocess (so peak memories do not mix); rounds
alternate the contenders (rotating their order) and the medians over rounds are reported, with ratios from this run.

    .venv/bin/python benchmarks/bench_train_step.py --size 128 --batch 16 --network small --rounds 2 --steps 2

Peak memory is the process's peak resident set (``ru_maxrss``); "net" subtracts the peak of the same process just
before its first step (Python, torch, the model and the batch), leaving what the training step itself needs.
pythae needs ``pip install pythae==0.1.2`` (the ``bench`` extra; it does not touch torch).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import build_model, build_pythae_hvae, machine, median, random_batch

CONTENDERS = ("vae", "exact", "exact-ckpt", "detached", "pythae", "vae-ckpt")
DEFAULT_CONTENDERS = ("vae", "exact", "exact-ckpt", "detached", "pythae")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def worker(contender: str, network: str, size: int, batch: int, n_leapfrog: int, steps: int) -> dict:
    """Build one contender, run ``steps`` training steps, return their times and the peak memories."""
    images, masks = random_batch(batch, size)
    if contender == "pythae":
        model = build_pythae_hvae(network, size, n_leapfrog)
        inputs = {"data": torch.cat([images, masks[:, None].float()], dim=1)}

        def loss_fn() -> torch.Tensor:
            return model(inputs).loss
    else:
        k = 0 if contender.startswith("vae") else n_leapfrog
        model = build_model(network, size, k, flow_gradient="detached" if contender == "detached" else "exact")
        if contender.endswith("-ckpt"):
            model.enable_gradient_checkpointing()
        generator = torch.Generator()

        def loss_fn() -> torch.Tensor:
            return model(images, masks, generator=generator.manual_seed(0)).loss
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idle_peak = peak_rss_gb()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return {"times": times, "idle_peak_gb": idle_peak, "peak_gb": peak_rss_gb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--network", default="small", choices=("small", "bundled", "paper"))
    parser.add_argument("--n-leapfrog", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"comma-separated, of {CONTENDERS}")
    parser.add_argument("--rounds", type=int, default=3, help="subprocess runs per contender, alternated")
    parser.add_argument("--steps", type=int, default=2, help="steps per subprocess; the first is a warm-up")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.network, args.size, args.batch, args.n_leapfrog, args.steps)))
        return

    contenders = args.contenders.split(",")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}")
    print(f"machine: {machine()}")
    print(f"{args.size}x{args.size}, batch {args.batch}, network {args.network}, K={args.n_leapfrog}, "
          f"{args.rounds} rounds x {args.steps} steps (first step of each subprocess = warm-up, not counted)")
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    for round_index in range(args.rounds):
        order = contenders[round_index % len(contenders):] + contenders[: round_index % len(contenders)]
        for contender in order:
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--network", args.network,
                       "--size", str(args.size), "--batch", str(args.batch), "--n-leapfrog", str(args.n_leapfrog),
                       "--steps", str(args.steps)]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results[contender].append(result)
            print(f"  round {round_index} {contender:10s} steps {[round(t, 2) for t in result['times']]} s, "
                  f"peak {result['peak_gb']:.2f} GB", flush=True)

    def step_time(c: str) -> float:
        return median([t for r in results[c] for t in r["times"][1:]] or [r["times"][0] for r in results[c]])

    def peak(c: str) -> float:
        return median([r["peak_gb"] for r in results[c]])

    def net_peak(c: str) -> float:
        return median([r["peak_gb"] - r["idle_peak_gb"] for r in results[c]])

    references = [c for c in ("vae", "pythae") if c in results]
    header = "| contender | step (s) | " + " | ".join(f"x {r}" for r in references) + \
             " | peak RSS (GB) | net peak (GB) | " + " | ".join(f"net x {r}" for r in references) + " |"
    print(f"\nmachine after: {machine()}\n")
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for c in contenders:
        time_ratios = " | ".join(f"{step_time(c) / step_time(r):.2f}" for r in references)
        memory_ratios = " | ".join(f"{net_peak(c) / net_peak(r):.2f}" for r in references)
        print(f"| {c} | {step_time(c):.2f} | {time_ratios} | {peak(c):.2f} | {net_peak(c):.2f} | {memory_ratios} |")


if __name__ == "__main__":
    main()
