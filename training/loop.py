"""The Accelerate training loop shared by the trainers: the optimiser steps, and what happens between them and after.

Determinism, so that an interrupted-then-resumed run ends with the same weights as an uninterrupted one: the batch
order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the noise of micro-batch ``m`` on process ``r`` comes
from a generator seeded by ``(seed, m, r)``; both are recomputed on resume instead of being restored.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from hvae_pipeline.hub.push import HubTarget
from hvae_pipeline.storage.stop_signals import stop_signal_handlers
from hvae_pipeline.training.components import (
    apply_learning_rates,
    build_training_model,
    load_slices,
    make_accelerator,
    make_ema,
    make_loader,
    make_optimiser,
)
from hvae_pipeline.training.objectives import DiscriminativeObjective, make_objective
from hvae_pipeline.training.publish import export_pipeline, push_pipeline
from hvae_pipeline.training.run_folder import (
    check_resume,
    list_checkpoints,
    load_checkpoint,
    resume_candidates,
    save_checkpoint,
)
from hvae_pipeline.training.run_record import RunFolder, claim_output_dir
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
        stop_signal: the name of the stop signal received (``"SIGINT"``, ``"SIGTERM"``), ``None`` before one.
        last_checkpoint: the checkpoint folder this invocation wrote last, ``None`` before one.
        objective: the ``objectives.*`` terms added to the trainer's loss (training/objectives.py), ``None`` if off.
    """

    def __init__(self, run: TrainingRun, accelerator, model, optimizer, scheduler, ema, log: CsvLog | None,
                 validation: tuple[torch.Tensor, torch.Tensor] | None, global_step: int,
                 run_folder: RunFolder | None, objective: DiscriminativeObjective | None = None) -> None:
        self.objective = objective
        self.run, self.settings = run, run.config["training"]
        self.accelerator, self.model, self.ema = accelerator, model, ema
        self.optimizer, self.scheduler = optimizer, scheduler
        self.log, self.validation = log, validation
        self.output_dir = Path(self.settings["output_dir"])
        self.global_step = global_step
        self.micro_batch = global_step * self.settings["gradient_accumulation_steps"]
        self.steps_this_run = 0
        self.terms: dict[str, torch.Tensor] = {}
        self.started_at = time.time()
        self.run_folder = run_folder
        self.stop_signal: str | None = None
        self.last_checkpoint: Path | None = None

    def train(self, loader: DataLoader, stop_after_steps: int | None) -> str | None:
        """Step until ``training.max_steps``; return ``None``, or why it stopped before: ``"non-finite loss"``,
        ``"non-finite gradient"``, ``"interrupted"`` (after ``stop_after_steps`` steps, with a checkpoint) or
        ``"signal"`` (SIGINT or SIGTERM, with a checkpoint at the step reached)."""
        from tqdm.auto import tqdm

        progress = tqdm(total=self.settings["max_steps"], initial=self.global_step,
                        disable=not self.accelerator.is_main_process, desc=self.run.kind)
        stop_reason = None
        with self._stop_signals_deferred():
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
            if self._stop_requested():
                self._save_checkpoint()
                return "signal"
        return None

    @contextlib.contextmanager
    def _stop_signals_deferred(self) -> Iterator[None]:
        """While the block runs, SIGINT and SIGTERM only note themselves in :attr:`stop_signal` (the loop then stops
        after the step, with a checkpoint); a second one acts as it did before (Ctrl-C twice stops at once)."""
        previous: dict = {}

        def note(number: int, frame: object) -> None:
            self.stop_signal = signal.Signals(number).name
            for each, handler in previous.items():
                signal.signal(each, handler)

        with stop_signal_handlers(lambda _: note) as replaced:
            previous.update(replaced)
            yield

    def _stop_requested(self) -> bool:
        """Whether any process received a stop signal (all processes stop at the same step)."""
        requested = float(self.stop_signal is not None)
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([requested], device=self.accelerator.device)
            requested = self.accelerator.gather(flag).max().item()
        return requested > 0

    def _train_micro_batch(self, images: torch.Tensor, masks: torch.Tensor) -> str | None:
        """Forward and backward on one micro-batch, and the optimiser step when gradients are synchronised; returns
        ``"non-finite loss"`` or ``"non-finite gradient"`` (on every process alike) before a bad update."""
        accelerator, settings = self.accelerator, self.settings
        with accelerator.accumulate(self.model):
            generator = step_generator(settings["seed"], self.micro_batch, accelerator.process_index)
            self.micro_batch += 1
            self.terms = self.run.loss_terms(self.model, images, masks, generator, self.global_step)
            if self.objective is not None:
                self.terms = self.objective.add_terms(self.terms, images, masks, self.global_step)
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
        self.last_checkpoint = save_checkpoint(self.accelerator, self.run_folder, self.global_step,
                                               self.settings["checkpoints_total_limit"], self.run.config)


def report_non_finite(stop_reason: str, global_step: int, terms: dict[str, torch.Tensor], output_dir: Path) -> None:
    """Say where a run stopped on a non-finite loss or gradient, the loss terms then, and which checkpoint to resume."""
    kept = list_checkpoints(output_dir)
    where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written before it"
    details = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    print(f"Stopped: {stop_reason} at step {global_step + 1} ({details}); {where}. Resume from it with a lower "
          "training.learning_rate or training.max_grad_norm.", file=sys.stderr)


def run_training(run: TrainingRun, resume: str | None, push_to_hub: HubTarget | None,
                 stop_after_steps: int | None, overwrite_run: bool = False) -> int:
    """Train ``run`` as configured; returns a process exit code (0 success, 3 non-finite loss, 4 push failed,
    128 + the signal's number after SIGINT or SIGTERM).

    The steps, in an order that resume depends on (the model's initialisation draws from the seeded global generator
    after the data are loaded): an ``Accelerator``, the seed, the checks of the run folder and of the checkpoint
    resumed from, the slices, the model, its optimiser, scheduler and loader, the checkpoint's state, the run record
    and logged config, the steps (:class:`TrainingLoop`), then the export.

    Args:
        resume: ``--resume-from-checkpoint`` (``None``: a new run).
        push_to_hub: where to push the export, ``None`` for nowhere.
        stop_after_steps: stop after this many steps (with a checkpoint), ``None`` to train to the end.
        overwrite_run: ``--overwrite-run``: move an earlier run in ``training.output_dir`` aside.

    Raises:
        RunFolderError: ``training.output_dir`` is not this run's to write (see :func:`claim_output_dir`).
        ResumeError: ``resume`` names no folder, another run's checkpoint, one of another architecture or config, or
            only unreadable ones.
    """
    from accelerate.utils import set_seed

    settings = run.config["training"]
    output_dir = Path(settings["output_dir"])
    if settings["num_threads"]:
        torch.set_num_threads(int(settings["num_threads"]))
    accelerator = make_accelerator(settings)
    set_seed(settings["seed"])
    main_process = accelerator.is_main_process
    # A foreign folder, another run's checkpoint or a refused override must fail before the data are loaded.
    claim_output_dir(output_dir, resume, overwrite_run)
    resume_from = resume_candidates(output_dir, resume)
    changes = check_resume(resume_from, output_dir, run.config)

    training_slices, validation = load_slices(run.config["data"], announce=main_process)
    model = build_training_model(run)
    optimizer, scheduler = make_optimiser(run, model, accelerator.num_processes)
    loader = make_loader(*training_slices, settings, accelerator.num_processes)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema = make_ema(accelerator, model, settings["ema_decay"])
    objective = make_objective(run, accelerator, model)  # its discriminator prepared before the resume restores it

    configured_rates = [group["initial_lr"] for group in optimizer.param_groups]
    global_step = load_checkpoint(accelerator, resume_from, main_process)
    apply_learning_rates(optimizer, scheduler, configured_rates)
    run_folder = RunFolder.open(output_dir, run.kind, global_step > 0, overwrite_run) if main_process else None
    if run_folder is not None and global_step > 0:
        applied = changes.get(global_step, {})  # those of the checkpoint loaded (an unreadable one may be skipped)
        run_folder.note_resume(global_step, applied)
        for key, (before, now) in applied.items():
            print(f"{key}: {before!r} in the checkpoint, {now!r} from step {global_step} on")
    log = CsvLog(output_dir / "logs" / "metrics.csv", global_step) if main_process else None
    log_config(accelerator, run)
    loop = TrainingLoop(run, accelerator, model, optimizer, scheduler, ema, log, validation, global_step, run_folder,
                        objective)
    stop_reason = loop.train(loader, stop_after_steps)
    if stop_reason is not None:
        return report_stop(run, accelerator, loop, stop_reason)

    accelerator.wait_for_everyone()
    check_replicas_agree(accelerator, model)
    exit_code = 0
    if main_process:
        final_model = accelerator.unwrap_model(model)
        if ema is not None:
            ema.copy_to(final_model.parameters())
        pipeline_dir = export_pipeline(run, final_model, run_folder, loop.global_step, time.time() - loop.started_at,
                                       log.read(), training_slices)
        print(f"Saved the pipeline to {pipeline_dir}")
        if push_to_hub:
            exit_code = push_pipeline(pipeline_dir, push_to_hub)
    finish(accelerator)
    return exit_code


def report_stop(run: TrainingRun, accelerator, loop: TrainingLoop, stop_reason: str) -> int:
    """Say why and where the run stopped before ``training.max_steps`` and how to resume; return the exit code."""
    output_dir = Path(run.config["training"]["output_dir"])
    if stop_reason in ("non-finite loss", "non-finite gradient"):
        report_non_finite(stop_reason, loop.global_step, loop.terms, output_dir)
        exit_code = EXIT_NON_FINITE
    elif stop_reason == "signal":
        if accelerator.is_main_process:
            print(f"Interrupted by {loop.stop_signal} at step {loop.global_step}: saved {loop.last_checkpoint}; resume "
                  f"with: {run.command} --config {output_dir / 'config.yaml'} --resume-from-checkpoint latest",
                  file=sys.stderr)
        # Another process may have stopped on the main one's signal without receiving one itself.
        exit_code = 128 + signal.Signals[loop.stop_signal or "SIGINT"].value
    else:
        if accelerator.is_main_process:
            print(f"Stopped after {loop.steps_this_run} steps at step {loop.global_step}; resume with "
                  "--resume-from-checkpoint latest")
        exit_code = 0
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
    fingerprint = torch.stack([p.detach().double().sum() for p in parameters]
                              + [p.detach().double().abs().sum() for p in parameters])
    every_rank = accelerator.gather(fingerprint.to(accelerator.device).unsqueeze(0))
    if not torch.equal(every_rank.min(dim=0).values, every_rank.max(dim=0).values):
        raise RuntimeError("data-parallel replicas ended with different weights: gradient synchronisation failed")
    if accelerator.is_main_process:
        print(f"Replicas agree: identical weights on all {accelerator.num_processes} processes")
