"""The Accelerate training loop shared by the trainers: the optimiser steps, and what happens between them and after.

Determinism, so that an interrupted-then-resumed run ends with the same weights as an uninterrupted one: the batch
order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the noise of micro-batch ``m`` on process ``r`` comes
from a generator seeded by ``(seed, m, r)``; both are recomputed on resume instead of being restored.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hvae_pipeline.hub.push import HubTarget
from hvae_pipeline.training.components import (
    build_training_model,
    load_slices,
    make_accelerator,
    make_ema,
    make_loader,
    make_optimiser,
)
from hvae_pipeline.training.publish import export_pipeline, push_pipeline
from hvae_pipeline.training.run_folder import list_checkpoints, load_checkpoint, resume_candidates, save_checkpoint
from hvae_pipeline.training.run_log import CsvLog, log_config, metrics_row, save_sample_grid
from hvae_pipeline.training.trainer import TrainingRun

EXIT_NON_FINITE = 3


def step_generator(seed: int, micro_batch: int, rank: int) -> torch.Generator:
    """The noise generator of one micro-batch on one process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_batch) * 64 + rank)


class TrainingLoop:
    """The optimiser steps of a prepared run, and what happens between them (logs, checkpoints, sample grids).

    Attributes:
        global_step: optimiser steps taken, counting those before a resume.
        micro_batch: micro-batches consumed, counting those before a resume (seeds the noise of the next one).
        steps_this_run: optimiser steps taken by this invocation.
        terms: the loss terms of the last micro-batch.
        started_at: when this invocation's steps started (``time.time()``).
    """

    def __init__(self, run: TrainingRun, accelerator, model, optimizer, scheduler, ema, log: CsvLog | None,
                 validation: tuple[torch.Tensor, torch.Tensor] | None, global_step: int) -> None:
        self.run, self.settings = run, run.config["training"]
        self.accelerator, self.model, self.optimizer, self.scheduler, self.ema = accelerator, model, optimizer, scheduler, ema
        self.log, self.validation = log, validation
        self.output_dir = Path(self.settings["output_dir"])
        self.global_step = global_step
        self.micro_batch = global_step * self.settings["gradient_accumulation_steps"]
        self.steps_this_run = 0
        self.terms: dict[str, torch.Tensor] = {}
        self.started_at = time.time()

    def train(self, loader: DataLoader, stop_after_steps: int | None) -> str | None:
        """Step until ``training.max_steps``; return ``None``, or why it stopped before: ``"non-finite loss"``,
        ``"non-finite gradient"`` or ``"interrupted"`` (after ``stop_after_steps`` steps, with a checkpoint)."""
        from tqdm.auto import tqdm

        progress = tqdm(total=self.settings["max_steps"], initial=self.global_step,
                        disable=not self.accelerator.is_main_process, desc=self.run.kind)
        stop_reason = None
        while self.global_step < self.settings["max_steps"] and stop_reason is None:
            stop_reason = self._train_epoch(loader, progress, stop_after_steps)
        progress.close()
        return stop_reason

    def _epoch_batches(self, loader: DataLoader):
        """The batches left in the current epoch: a resumed epoch skips those consumed before the interruption."""
        epoch, skip = divmod(self.micro_batch, len(loader))
        epoch_loader = self.accelerator.skip_first_batches(loader, skip) if skip else loader
        # Accelerate re-seeds the sampler with its loader's own epoch counter when iteration starts: set that counter.
        epoch_loader.set_epoch(epoch)
        return epoch_loader

    def _train_epoch(self, loader: DataLoader, progress, stop_after_steps: int | None) -> str | None:
        """The rest of one epoch; returns a stop reason as :meth:`train` does (``None``: the epoch or the run ended)."""
        for images, masks in self._epoch_batches(loader):
            stop_reason = self._train_micro_batch(images, masks)
            if stop_reason is not None:
                return stop_reason
            if not self.accelerator.sync_gradients:
                continue
            self._finish_step(progress)
            if self.global_step >= self.settings["max_steps"]:
                return None
            if stop_after_steps is not None and self.steps_this_run >= stop_after_steps:
                self._save_checkpoint()
                return "interrupted"
        return None

    def _train_micro_batch(self, images: torch.Tensor, masks: torch.Tensor) -> str | None:
        """Forward and backward on one micro-batch, and the optimiser step when gradients are synchronised; returns
        ``"non-finite loss"`` or ``"non-finite gradient"`` (on every process alike) before a bad update."""
        accelerator, settings = self.accelerator, self.settings
        with accelerator.accumulate(self.model):
            generator = step_generator(settings["seed"], self.micro_batch, accelerator.process_index)
            self.micro_batch += 1
            self.terms = self.run.loss_terms(self.model, images, masks, generator, self.global_step)
            finite = accelerator.gather(torch.isfinite(self.terms["loss"].detach()).float().reshape(1)).min().item()
            if finite < 1:
                return "non-finite loss"
            accelerator.backward(self.terms["loss"])
            if accelerator.sync_gradients and settings["max_grad_norm"]:
                grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), settings["max_grad_norm"])
                if not math.isfinite(float(grad_norm)):
                    return "non-finite gradient"
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return None

    def _finish_step(self, progress) -> None:
        """After an optimiser step: EMA, progress bar, and the logs, checkpoint and sample grid that are due."""
        self.global_step += 1
        self.steps_this_run += 1
        step, settings = self.global_step, self.settings
        if self.ema is not None:
            self.ema.step(self.accelerator.unwrap_model(self.model).parameters())
        progress.update(1)
        progress.set_postfix(loss=f"{self.terms['loss'].item():.1f}")
        if step % settings["log_steps"] == 0 or step == settings["max_steps"]:
            self._log_metrics()
        if step % settings["checkpointing_steps"] == 0:
            self._save_checkpoint()
        if self.accelerator.is_main_process and step % settings["sample_steps"] == 0:
            save_sample_grid(self.run.pipeline(self.accelerator.unwrap_model(self.model)),
                             self.output_dir / "samples" / f"step-{step:06d}.png")

    def _log_metrics(self) -> None:
        """Log the step's loss terms (and the validation terms on sample steps) to the CSV log and the tracker."""
        step, settings = self.global_step, self.settings
        row = metrics_row(step, self.scheduler.get_last_lr()[0], (time.time() - self.started_at) / self.steps_this_run,
                          self.terms)
        if self.validation is not None and step % settings["sample_steps"] == 0:
            images, masks = self.validation
            row.update(self.run.validation_terms(self.model, images[:64], masks[:64],
                                                 step_generator(settings["seed"] + 1, 0, 0)))
        if self.log is not None:
            self.log.append(row)
        if settings["report_to"] != "csv":
            self.accelerator.log({name: value for name, value in row.items() if name != "step"}, step=step)

    def _save_checkpoint(self) -> None:
        save_checkpoint(self.accelerator, self.output_dir, self.global_step, self.settings["checkpoints_total_limit"])


def report_non_finite(stop_reason: str, global_step: int, terms: dict[str, torch.Tensor], output_dir: Path) -> None:
    """Say where a run stopped on a non-finite loss or gradient, the loss terms then, and which checkpoint to resume."""
    kept = list_checkpoints(output_dir)
    where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written before it"
    details = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    print(f"Stopped: {stop_reason} at step {global_step + 1} ({details}); {where}. Resume from it with a lower "
          "training.learning_rate or training.max_grad_norm.", file=sys.stderr)


def run_training(run: TrainingRun, resume: str | None, push_to_hub: HubTarget | None,
                 stop_after_steps: int | None) -> int:
    """Train ``run`` as configured; returns a process exit code (0 success, 3 non-finite loss, 4 push failed).

    The steps, in an order that resume depends on (the model's initialisation draws from the seeded global generator
    after the data are loaded): an ``Accelerator``, the seed, the slices, the model, its optimiser, scheduler and
    loader, the checkpoint resumed from, the logged config, the steps (:class:`TrainingLoop`), then the export.

    Raises:
        ResumeError: ``resume`` names no folder, a checkpoint of another architecture, or only unreadable ones.
    """
    from accelerate.utils import set_seed

    settings = run.config["training"]
    output_dir = Path(settings["output_dir"])
    if settings["num_threads"]:
        torch.set_num_threads(int(settings["num_threads"]))
    accelerator = make_accelerator(settings)
    set_seed(settings["seed"])
    main_process = accelerator.is_main_process
    resume_from = resume_candidates(output_dir, resume)  # a wrong folder must fail before the data are loaded

    training_slices, validation = load_slices(run.config["data"], announce=main_process)
    model = build_training_model(run)
    optimizer, scheduler = make_optimiser(run, model, accelerator.num_processes)
    loader = make_loader(*training_slices, settings, accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema = make_ema(accelerator, model, settings["ema_decay"])

    global_step = load_checkpoint(accelerator, resume_from, main_process)
    log = CsvLog(output_dir / "logs" / "metrics.csv", global_step) if main_process else None
    log_config(accelerator, run)
    loop = TrainingLoop(run, accelerator, model, optimizer, scheduler, ema, log, validation, global_step)
    stop_reason = loop.train(loader, stop_after_steps)

    if stop_reason in ("non-finite loss", "non-finite gradient"):
        report_non_finite(stop_reason, loop.global_step, loop.terms, output_dir)
        finish(accelerator)
        return EXIT_NON_FINITE
    if stop_reason == "interrupted":
        if main_process:
            print(f"Stopped after {loop.steps_this_run} steps at step {loop.global_step}; resume with "
                  "--resume-from-checkpoint latest")
        finish(accelerator)
        return 0

    accelerator.wait_for_everyone()
    check_replicas_agree(accelerator, model)
    exit_code = 0
    if main_process:
        final_model = accelerator.unwrap_model(model)
        if ema is not None:
            ema.copy_to(final_model.parameters())
        pipeline_dir = export_pipeline(run, final_model, output_dir, loop.global_step, time.time() - loop.started_at,
                                       log.read(), training_slices)
        print(f"Saved the pipeline to {pipeline_dir}")
        if push_to_hub:
            exit_code = push_pipeline(pipeline_dir, push_to_hub)
    finish(accelerator)
    return exit_code


def finish(accelerator) -> None:
    """End trackers and leave the process group together: a rank exiting while another still exports can leave the
    survivor hanging in gloo's shutdown."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_replicas_agree(accelerator, model) -> None:
    """Fail loudly if data-parallel replicas ended with different weights (a silent desynchronisation)."""
    if accelerator.num_processes == 1:
        return
    parameters = list(accelerator.unwrap_model(model).parameters())
    fingerprint = torch.stack([p.detach().double().sum() for p in parameters] + [p.detach().double().abs().sum() for p in parameters])
    every_rank = accelerator.gather(fingerprint.to(accelerator.device).unsqueeze(0))
    if not torch.equal(every_rank.min(dim=0).values, every_rank.max(dim=0).values):
        raise RuntimeError("data-parallel replicas ended with different weights: gradient synchronisation failed")
    if accelerator.is_main_process:
        print(f"Replicas agree: identical weights on all {accelerator.num_processes} processes")
