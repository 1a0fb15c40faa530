"""Training step time and peak memory: our VAE (K = 0), exact HVAE, exact HVAE with gradient checkpointing, detached
HVAE, and pythae 0.1.2's HVAE, all on the same encoder/decoder networks, batch, latent, K, step size and beta_0.

A step is forward + backward + AdamW. Every contender runs in a fresh subprocess (so peak memories do not mix); rounds
alternate the contenders (rotating their order) and the medians over rounds are reported, with ratios from this run.

    .venv/bin/python benchmarks/bench_train_step.py --size 128 --batch 16 --network small --rounds 2 --steps 2

Peak memory is the process's peak resident set (``ru_maxrss``); "net" subtracts the peak of the same process just
before its first step (Python, torch, the model and the batch), leaving what the training step itself needs.
pythae needs ``pip install pythae==0.1.2`` (the ``bench`` extra; it does not touch torch).

On a GPU (``--device cuda``) the peaks are ``torch.cuda.max_memory_allocated`` (what the tensors need, not the
caching allocator's reserve), steps are timed after ``torch.cuda.synchronize()``, and ``--precision bf16`` runs the
step under bf16 autocast, as ``training.mixed_precision: bf16`` does (parameters and optimiser stay fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import NETWORKS, build_model, build_pythae_hvae, machine, median, random_batch

CONTENDERS = ("vae", "exact", "exact-ckpt", "detached", "pythae", "vae-ckpt")
DEFAULT_CONTENDERS = ("vae", "exact", "exact-ckpt", "detached", "pythae")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


SUFFIXES = ("cl", "torch-ops", "interpolate", "l1", "perceptual", "adversarial", "wide-decoder")
OBJECTIVE_SUFFIXES = ("l1", "perceptual", "adversarial")


def parse_contender(text: str) -> tuple[str, str, frozenset[str]]:
    """Split ``"exact-ckpt@N+cl+torch-ops"`` into its contender, chunk suffix (``"N"``, ``"all"`` or ``""``) and the set
    of its ``+`` suffixes: ``cl`` runs it in channels_last memory format (weights and image batch); ``torch-ops`` gives
    an exact HVAE's decoder PyTorch's own convolution, SiLU and GroupNorm (the baseline of
    ``hvae_pipeline.models.second_order``, which it uses otherwise; the VAE and the detached flow use PyTorch's anyway);
    ``interpolate`` computes the decoder's upsampling as ``conv(interpolate(x, 2))`` (the baseline of the phase
    decomposition in ``hvae_pipeline.models.blocks.Upsample``; the same function); ``l1``, ``perceptual`` and
    ``adversarial`` add those training objectives (training/objectives.py, issue 25) with their defaults and the
    packaged feature network, the adversarial term from the first step (its discriminator's step included);
    ``wide-decoder`` gives the decoder twice the network's widths (``decoder_block_out_channels``, issue 25).

    Raises:
        ValueError: an unknown contender or suffix, a chunk suffix other than a number or ``all`` or on a
            non-checkpointed one, or a suffix on pythae.
    """
    head, *suffixes = text.split("+")
    if set(suffixes) - set(SUFFIXES) or len(set(suffixes)) != len(suffixes):
        raise ValueError(text)
    name, _, chunk = head.partition("@")
    if name not in CONTENDERS or chunk and not (name.endswith("-ckpt") and (chunk == "all" or chunk.isdigit())):
        raise ValueError(text)
    if suffixes and name == "pythae" or "adversarial" in suffixes and not {"l1", "perceptual"} & set(suffixes):
        raise ValueError(text)
    return name, chunk, frozenset(suffixes)


def use_interpolating_upsampling(model: torch.nn.Module) -> None:
    """Give every ``Upsample`` of ``model`` the textbook form, nearest-neighbour interpolation then its convolution."""
    from hvae_pipeline.models.blocks import Upsample

    for module in model.modules():
        if isinstance(module, Upsample):
            module.forward = lambda hidden, conv=module.conv: conv(
                F.interpolate(hidden, scale_factor=2.0, mode="nearest")
            )


def objective_for(model: torch.nn.Module, suffixes: frozenset[str], device: torch.device):
    """The :class:`DiscriminativeObjective` of the contender's objective suffixes around ``model``; ``None`` without."""
    if not set(OBJECTIVE_SUFFIXES) & suffixes:
        return None
    from accelerate import Accelerator

    from hvae_pipeline.training.config import DEFAULTS
    from hvae_pipeline.training.objectives import DiscriminativeObjective

    objectives = dict(DEFAULTS["objectives"], **{name: name in suffixes for name in OBJECTIVE_SUFFIXES})
    accelerator = Accelerator(cpu=device.type == "cpu")  # the discriminator is prepared with it, as in training
    return DiscriminativeObjective(objectives, {"learning_rate": 1e-4, "adam_betas": [0.5, 0.9]}, accelerator, model)


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return peak_rss_gb()


def worker(contender: str, network: str, size: int, batch: int, n_leapfrog: int, steps: int, device_name: str,
           precision: str) -> dict:
    """Build one contender, run ``steps`` training steps, return their times and the peak memories."""
    device = torch.device(device_name)
    images, masks = (tensor.to(device) for tensor in random_batch(batch, size))
    if contender == "pythae":
        model = build_pythae_hvae(network, size, n_leapfrog)
        inputs = {"data": torch.cat([images, masks[:, None].float()], dim=1)}

        def loss_fn() -> torch.Tensor:
            return model(inputs).loss
    else:
        name, chunk_size, suffixes = parse_contender(contender)
        k = 0 if name.startswith("vae") else n_leapfrog
        model = build_model(network, size, k, flow_gradient="detached" if name == "detached" else "exact",
                            decoder_width_factor=2 if "wide-decoder" in suffixes else 1)
        if "torch-ops" in suffixes:
            model.decoder.use_second_order_ops(False)
        if "interpolate" in suffixes:
            use_interpolating_upsampling(model)
        if "cl" in suffixes:
            model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        if name.endswith("-ckpt"):
            model.enable_gradient_checkpointing()
            if chunk_size:  # "@N": N samples per recomputed chunk, "@all": the whole batch; none: the model's default
                model.flow_checkpoint_chunk_size = None if chunk_size == "all" else int(chunk_size)
        generator = torch.Generator()
        objective = objective_for(model, suffixes, device)

        def loss_fn() -> torch.Tensor:
            loss = model(images, masks, generator=generator.manual_seed(0)).loss
            return loss if objective is None else objective.add_terms({"loss": loss}, images, masks, step=0)["loss"]
    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    idle_peak = peak_gb(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn()
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"times": times, "idle_peak_gb": idle_peak, "peak_gb": peak_gb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--network", default="small", choices=tuple(NETWORKS))
    parser.add_argument("--n-leapfrog", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"comma-separated, of {CONTENDERS}; "
                        "'exact-ckpt@N' recomputes the flow N samples at a time ('@all': whole batch); a '+cl' "
                        "suffix runs a contender in channels_last memory format, '+torch-ops' with PyTorch's own "
                        "convolution, SiLU and GroupNorm instead of hvae_pipeline.models.second_order's, "
                        "'+interpolate' with interpolate-then-convolve upsampling; '+l1', '+perceptual', "
                        "'+adversarial' add those training objectives, '+wide-decoder' doubles the decoder's "
                        "widths (issue 25)")
    parser.add_argument("--rounds", type=int, default=3, help="subprocess runs per contender, alternated")
    parser.add_argument("--steps", type=int, default=2, help="steps per subprocess; the first is a warm-up")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (peak memory: RSS on CPU, allocated on CUDA)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast, as training")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.network, args.size, args.batch, args.n_leapfrog, args.steps,
                                args.device, args.precision)))
        return

    contenders = args.contenders.split(",")
    unknown = []
    for contender in contenders:
        try:
            parse_contender(contender)
        except ValueError:
            unknown.append(contender)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}")
    print(f"machine: {machine()}")
    if args.device.startswith("cuda"):
        print(f"GPU: {torch.cuda.get_device_name(args.device)}, {args.precision}")
    print(f"{args.size}x{args.size}, batch {args.batch}, network {args.network}, K={args.n_leapfrog}, "
          f"{args.rounds} rounds x {args.steps} steps (first step of each subprocess = warm-up, not counted)")
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    for round_index in range(args.rounds):
        order = contenders[round_index % len(contenders):] + contenders[: round_index % len(contenders)]
        for contender in order:
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--network", args.network,
                       "--size", str(args.size), "--batch", str(args.batch), "--n-leapfrog", str(args.n_leapfrog),
                       "--steps", str(args.steps), "--device", args.device, "--precision", args.precision]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results[contender].append(result)
            print(f"  round {round_index} {contender:10s} steps {[round(t, 3) for t in result['times']]} s, "
                  f"peak {result['peak_gb']:.2f} GB", flush=True)

    def step_time(c: str) -> float:
        return median([t for r in results[c] for t in r["times"][1:]] or [r["times"][0] for r in results[c]])

    def peak(c: str) -> float:
        return median([r["peak_gb"] for r in results[c]])

    def net_peak(c: str) -> float:
        return median([r["peak_gb"] - r["idle_peak_gb"] for r in results[c]])

    references = [c for c in ("vae", "pythae") if c in results]
    columns = ["contender", "step (s)", *(f"x {r}" for r in references), "peak (GB)", "net peak (GB)",
               *(f"net x {r}" for r in references)]
    print(f"\nmachine after: {machine()}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for c in contenders:
        cells = [c, f"{step_time(c):.3f}", *(f"{step_time(c) / step_time(r):.2f}" for r in references),
                 f"{peak(c):.2f}", f"{net_peak(c):.2f}", *(f"{net_peak(c) / net_peak(r):.2f}" for r in references)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
