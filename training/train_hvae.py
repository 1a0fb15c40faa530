"""Train the joint image + mask HVAE (or its VAE baseline) with Accelerate.

One process:    python training/train_hvae.py --config cpu-128 [section.key=value ...]
Several:        accelerate launch training/train_hvae.py --config paper-128   (see README, "Training")
VAE baseline:   ... model.n_leapfrog=0 model.beta_zero=1

Writes into ``training.output_dir``: ``checkpoints/checkpoint-<step>/`` (``accelerator.save_state``; resume with
``--resume-from-checkpoint latest``), ``logs/metrics.csv`` (loss terms per logged step), ``samples/step-<step>.png``
(image | mask | overlay grids), ``loss_curve.png`` and, at the end, ``pipeline/`` (``save_pretrained``, safetensors,
with a model card ``README.md`` generated from the run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python training/train_hvae.py` from a checkout

import torch  # noqa: E402

from hvae_pipeline import HVAEModel, HVAEPipeline  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.loop import TrainingRun, run_training  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-128", help="YAML file or name under training/configs/")
    parser.add_argument("--resume-from-checkpoint", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the final pipeline")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps of this invocation, as an interruption")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.max_steps=100")
    return parser


class HVAERun(TrainingRun):
    """The HVAE objective: minimise -ELBO, with an optional VAE warm start (flow off)."""

    kind = "hvae"

    def build_model(self) -> HVAEModel:
        data = self.config["data"]
        model_config = dict(self.config["model"])
        model_config.setdefault("sample_size", data["size"])
        model_config.setdefault("image_channels", len(data["modalities"]))
        if data["label"] == "multiclass":
            model_config.setdefault("mask_channels", 4)
        return HVAEModel(**model_config)

    def loss_terms(self, model, images, masks, generator, step) -> dict[str, torch.Tensor]:
        warmup = step < self.config["training"]["vae_warmup_steps"]
        output = model(images, masks, generator=generator, n_leapfrog=0 if warmup else None)
        return {
            "loss": output.loss,
            "elbo": output.elbo.mean(),
            "image_log_likelihood": output.image_log_likelihood.mean(),
            "mask_log_likelihood": output.mask_log_likelihood.mean(),
            "kl": output.kl.mean(),
            "flow_gain": output.flow_gain.mean(),
        }

    @torch.no_grad()
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]:
        output = model(images, masks, generator=generator)
        return {"val_elbo": output.elbo.mean().item()}

    def pipeline(self, model) -> HVAEPipeline:
        return HVAEPipeline(model)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"train_hvae: error: {error}", file=sys.stderr)
        return 2
    return run_training(HVAERun(config), args.resume_from_checkpoint, args.push_to_hub, args.stop_after_steps)


if __name__ == "__main__":
    raise SystemExit(main())
