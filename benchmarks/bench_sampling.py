"""Sampling throughput of ``HVAEPipeline`` against a bare ``decoder(z)`` loop, and the demo's latency for 16 samples.

    .venv/bin/python benchmarks/bench_sampling.py --samples 256 --batch-size 32 --repeats 5

Both sides decode the same number of latents in batches of the same size; the bare loop gets its latents drawn
beforehand and runs under ``torch.inference_mode()``, with nothing else (no sigmoid, threshold, areas, copies).
The pipeline and the bare loop alternate; medians over repeats. The demo latency is the Sample tab's work for 16 pairs:
``demo.callbacks.generate_samples`` (the pipeline call), ``sample_gallery`` (image, mask, overlay arrays) and the PNG
encoding Gradio does for a ``format="png"`` gallery. The model is the one the demo loads (the bundled default, or an
untrained model of the same network when none is bundled: speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import time

import PIL.Image
import torch

from common import machine, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--demo-samples", type=int, default=16)
    args = parser.parse_args()

    from hvae_pipeline.demo import callbacks
    from hvae_pipeline.bundled_model import load_pipeline

    pipeline, description = load_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    model = pipeline.model.eval()
    print(f"machine: {machine()}")
    print(f"model: {description}; {args.samples} samples in batches of {args.batch_size}, {args.repeats} repeats")

    latents = torch.randn(args.samples, *model.latent_shape, generator=torch.Generator().manual_seed(0))

    def bare() -> None:
        with torch.inference_mode():
            for chunk in latents.split(args.batch_size):
                model.decoder(chunk)

    def through_pipeline() -> None:
        pipeline(num_samples=args.samples, batch_size=args.batch_size, output_type="pt",
                 generator=torch.Generator().manual_seed(0))

    def demo_request() -> None:
        samples = callbacks.generate_samples(pipeline, 0, args.demo_samples, 1.0, 0.5, 0)
        for picture, _caption in callbacks.sample_gallery(samples):
            PIL.Image.fromarray(picture).save(io.BytesIO(), format="png")

    timings: dict[str, list[float]] = {"bare decoder loop": [], "pipeline": [], "demo, 16 samples": []}
    bare(), through_pipeline(), demo_request()  # warm-up
    for _ in range(args.repeats):
        for name, run in (("bare decoder loop", bare), ("pipeline", through_pipeline), ("demo, 16 samples", demo_request)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    bare_s, pipeline_s = median(timings["bare decoder loop"]), median(timings["pipeline"])
    print(f"machine after: {machine()}\n")
    print("| measurement | median (s) | samples/s |")
    print("|---|---|---|")
    print(f"| bare decoder loop, {args.samples} samples | {bare_s:.3f} | {args.samples / bare_s:.1f} |")
    print(f"| HVAEPipeline, {args.samples} samples | {pipeline_s:.3f} | {args.samples / pipeline_s:.1f} |")
    demo_s = median(timings["demo, 16 samples"])
    print(f"| demo Sample tab, {args.demo_samples} samples + PNG encoding | {demo_s:.3f} | {args.demo_samples / demo_s:.1f} |")
    print(f"\npipeline throughput / bare decoder throughput = {bare_s / pipeline_s:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
