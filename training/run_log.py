"""What a training run records besides checkpoints: the resolved config, the CSV log of loss terms, sample grids
and the loss curve."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from hvae_pipeline.storage.atomic_write import atomic_file, write_text_atomically
from hvae_pipeline.training.config import dump_config, flat_config
from hvae_pipeline.training.trainer import TrainingRun


class CsvLog:
    """Append-only CSV of logged scalars (flushed each row, so a crash keeps what was logged)."""

    def __init__(self, path: Path, resume_from_step: int) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and resume_from_step > 0:
            kept = [row for row in self.read() if int(row["step"]) <= resume_from_step]
            self._write_all(kept)
        elif path.exists():
            path.unlink()

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        with atomic_file(self.path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        """Append a row; a row with a new column (e.g. the first validation score) rewrites the header."""
        header = self.read()[0].keys() if self.path.exists() and self.path.stat().st_size else None
        if header is not None and set(row) <= set(header):
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=list(header), restval="").writerow(row)
        else:
            self._write_all([*self.read(), row])


def metrics_row(step: int, learning_rate: float, seconds_per_step: float,
                terms: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One row of the metrics log: the step, learning rate, mean step time and the loss terms as numbers."""
    return {"step": step, "lr": learning_rate, "seconds_per_step": seconds_per_step,
            **{name: value.item() for name, value in terms.items()}}


def log_config(accelerator, run: TrainingRun) -> None:
    """Record the resolved config (defaults, file and overrides, with the precision used) at the start: on the console
    and in ``<output_dir>/config.yaml`` (a valid ``--config`` for a rerun) from the main process, and with the
    tracker of ``training.report_to``."""
    settings = run.config["training"]
    if accelerator.is_main_process:
        text = dump_config(run.config)
        print(f"Config ({accelerator.num_processes} process(es) on {accelerator.device}):\n{text}", end="")
        write_text_atomically(Path(settings["output_dir"]) / "config.yaml", text)
    if settings["report_to"] != "csv":
        accelerator.init_trackers(run.kind, config=flat_config(run.config))


def save_sample_grid(pipeline, path: Path, num_samples: int = 16, seed: int = 0) -> None:
    from hvae_pipeline.outputs.visualization import sample_grid

    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(num_samples=num_samples, generator=torch.Generator().manual_seed(seed), output_type="np")
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(output.images, output.masks).save(path)


def plot_loss_curve(rows: list[dict[str, str]], path: Path) -> None:
    """Training loss (and validation ELBO when logged) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.plot(steps, [float(r["loss"]) for r in rows], label="training loss (-ELBO)")
    validation = [(int(r["step"]), -float(r["val_elbo"])) for r in rows if r.get("val_elbo")]
    if validation:
        axis.plot(*zip(*validation), "o-", label="validation -ELBO")
    axis.set_xlabel("step")
    axis.set_ylabel("nats per slice")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    try:
        with atomic_file(path, "wb") as file:  # never a half-written plot in place of the previous one
            figure.savefig(file, format="png")
    finally:
        plt.close(figure)
