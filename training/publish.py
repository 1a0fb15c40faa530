"""The end of a training run: the exported pipeline folder (weights, model card, samples, loss curve) and its
optional push to the Hugging Face Hub."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from hvae_pipeline.hub.push import HubTarget
from hvae_pipeline.training.run_record import RunFolder
from hvae_pipeline.training.run_log import plot_loss_curve, save_sample_grid
from hvae_pipeline.training.trainer import TrainingRun

EXIT_PUSH_FAILED = 4


def export_pipeline(run: TrainingRun, model, run_folder: RunFolder, steps: int, seconds: float, rows: list[dict],
                    training_slices: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """``save_pretrained`` of the whole pipeline plus a model card, a loss curve and a final sample grid; the folder
    ``pipeline/`` replaces only what the run wrote there before (see :meth:`RunFolder.install`)."""
    from hvae_pipeline.training.model_card import write_model_card

    pipeline = run.final_pipeline(model, *training_slices)
    staging = run_folder.output_dir / ".pipeline.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        pipeline.save_pretrained(staging, safe_serialization=True)
        save_sample_grid(pipeline, staging / "samples.png")
        plot_loss_curve(rows, run_folder.output_dir / "loss_curve.png")
        flow = model.flow_summary() if hasattr(model, "flow_summary") else None  # the HVAE; the LSGAN has no flow
        write_model_card(staging / "README.md", run, steps, seconds, rows[-1] if rows else {}, flow,
                         resumes=run_folder.record["resumes"])
    except BaseException:  # Ctrl-C or a failure: no half-written export left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run_folder.install(staging, "pipeline")


def push_pipeline(pipeline_dir: Path, target: HubTarget) -> int:
    """Upload an exported pipeline folder with its card; on failure say why and keep the local export (exit code 4)."""
    from hvae_pipeline.hub.push import HubPushError, push_pipeline_folder

    try:
        commit = push_pipeline_folder(pipeline_dir, target)  # token from HF_TOKEN or `hf auth login`; never printed
    except HubPushError as error:
        print(error, file=sys.stderr)
        return EXIT_PUSH_FAILED
    print(f"Pushed {pipeline_dir} to {commit.pr_url or commit.commit_url}")
    return 0
