"""The Accelerate training loop shared by the HVAE/VAE trainer, and its bookkeeping (checkpoints, logs, pictures).

Determinism, so that an interrupted-then-resumed run ends with the same weights as an uninterrupted one: the batch
order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the noise of micro-batch ``m`` on process ``r`` comes
from a generator seeded by ``(seed, m, r)``; both are recomputed on resume instead of being restored.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from hvae_pipeline.storage.atomic_write import atomic_file, write_text_atomically
from hvae_pipeline.cli.version import add_version_option
from hvae_pipeline.hub.push import HubTarget, add_push_arguments, hub_target_from_arguments
from hvae_pipeline.training.config import DEFAULTS, ConfigError, dump_config, flat_config, load_config
from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset

EXIT_NON_FINITE = 3
EXIT_PUSH_FAILED = 4


class EpochPermutationSampler(Sampler[int]):
    """Shuffles with a permutation seeded by ``(seed, epoch)``: the order of any epoch can be recomputed."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def step_generator(seed: int, micro_batch: int, rank: int) -> torch.Generator:
    """The noise generator of one micro-batch on one process."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_batch) * 64 + rank)


class TrainingRun(ABC):
    """What differs between trainers: the model, its loss terms, and its sampling pipeline."""

    kind = "generator"
    # Keys of the shared `training` section that this trainer does not use: a non-default value is an error.
    unused_training_keys: tuple[str, ...] = ()

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        for key in self.unused_training_keys:
            if config["training"][key] != DEFAULTS["training"][key]:
                raise ConfigError(f"training.{key}={config['training'][key]!r} does not apply to the {self.kind} "
                                  "trainer: remove it")
        self.config = config

    def model_arguments(self) -> dict[str, Any]:
        """The config's model arguments, with the slice size, channel count and mask classes taken from the data."""
        data = self.config["data"]
        arguments = dict(self.config["model"])
        arguments.setdefault("sample_size", data["size"])
        arguments.setdefault("image_channels", len(data["modalities"]))
        if data["label"] == "multiclass":
            arguments.setdefault("mask_channels", 4)
        return arguments

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups; a group without ``"lr"`` uses ``training.learning_rate``."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def load_initial_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Load ``training.init_from``'s weights into ``model``; by default the same architecture, every tensor."""
        model.load_state_dict(weights)

    @abstractmethod
    def loss_terms(self, model, images, masks, generator, step) -> dict[str, torch.Tensor]:
        """Return at least ``{"loss": scalar}``; the other scalars are logged."""

    @abstractmethod
    def validation_terms(self, model, images, masks, generator) -> dict[str, float]: ...

    @abstractmethod
    def pipeline(self, model): ...

    def final_pipeline(self, model, images: torch.Tensor, masks: torch.Tensor):
        """The pipeline exported at the end, given the training slices; by default the one sampled during training."""
        return self.pipeline(model)


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


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=checkpoint_step)


class ResumeError(ValueError):
    """``--resume-from-checkpoint`` cannot be honoured; the message names the checkpoint and what to do."""


# torch's load_state_dict message when the checkpoint's tensors do not fit the configured model.
_ARCHITECTURE_MISMATCH = "Error(s) in loading state_dict"


def resume_candidates(output_dir: Path, resume: str | None) -> list[Path]:
    """The checkpoint folders to try, in order: none for ``None``; for ``"latest"`` every checkpoint under
    ``output_dir``, newest first (an unreadable one falls back to the one before); else the given folder.

    Raises:
        ResumeError: the given folder does not exist.
    """
    if resume is None:
        return []
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            print(f"No checkpoint under {output_dir / 'checkpoints'}: starting from scratch.")
        return found[::-1]
    path = Path(resume)
    if not path.is_dir():
        raise ResumeError(f"--resume-from-checkpoint {resume}: no such checkpoint folder; pass 'latest' or a "
                          "checkpoints/checkpoint-<step> folder")
    return [path]


def load_checkpoint(accelerator, candidates: Sequence[Path], announce: bool) -> int:
    """Restore the complete training state from the first readable checkpoint of ``candidates``; return its step
    (0 when there is none).

    A later, complete load overwrites whatever a failed one had restored, so falling back keeps resume exact.

    Args:
        accelerator: the prepared ``Accelerator`` (model, optimiser, scheduler and EMA registered).
        candidates: from :func:`resume_candidates`.
        announce: print what was resumed or skipped (the main process).

    Raises:
        ResumeError: a checkpoint holds another architecture than the configured model, or none is readable.
    """
    for path in candidates:
        try:
            accelerator.load_state(str(path))
        except Exception as error:  # noqa: BLE001 -- a damaged file raises anything (SafetensorError, IndexError...)
            lines = [line.strip() for line in str(error).strip().splitlines()] or [type(error).__name__]
            if _ARCHITECTURE_MISMATCH in lines[0]:
                # The first mismatching tensor (torch lists them all, one per line, after the header).
                raise ResumeError(f"--resume-from-checkpoint: {path} holds a model of another architecture than the "
                                  f"config ({lines[min(1, len(lines) - 1)]}); resume with the config "
                                  "that wrote it, or start a new training.output_dir") from error
            if announce:
                print(f"Checkpoint {path} is unreadable ({type(error).__name__}: {lines[0][:120]}); trying the one "
                      "before.", file=sys.stderr)
            continue
        if announce:
            print(f"Resumed from {path} at step {checkpoint_step(path)}")
        return checkpoint_step(path)
    if candidates:
        raise ResumeError(f"--resume-from-checkpoint: no readable checkpoint among {', '.join(map(str, candidates))}; "
                          "start without --resume-from-checkpoint or in a new training.output_dir")
    return 0


# How `accelerate launch --mixed_precision ...` and the `accelerate config` file pass their choice to the process.
LAUNCHER_PRECISION = "ACCELERATE_MIXED_PRECISION"


def resolve_mixed_precision(configured: str | None) -> str:
    """The precision to train in: ``training.mixed_precision`` when the config sets one, else the launcher's choice
    (``accelerate launch --mixed_precision`` or ``accelerate config``, read from ``ACCELERATE_MIXED_PRECISION``), else
    fp32 (``"no"``). Off CUDA the answer is always fp32: bf16 autocast is ~20x slower on CPUs without bf16 units and
    fp16 autocast does nothing there.

    Args:
        configured: the validated ``training.mixed_precision`` (``"no"``, ``"bf16"``, ``"fp16"``), ``None`` if unset.
    """
    requested, source = configured, "training.mixed_precision"
    if requested is None:
        requested, source = os.environ.get(LAUNCHER_PRECISION, "no"), f"{LAUNCHER_PRECISION} (accelerate launch/config)"
    if requested != "no" and not torch.cuda.is_available():
        print(f"mixed_precision={requested} from {source} ignored: no CUDA device; training in fp32 (bf16 autocast is "
              "~20x slower on this kind of CPU and fp16 autocast does nothing on CPU).")
        return "no"
    return requested


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


def command_line(run_class: type[TrainingRun], description: str, argv: Sequence[str] | None = None) -> int:
    """The shared command line of the training scripts; returns the process exit code."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_option(parser)
    parser.add_argument("--config", default="cpu-128", help="YAML file or name under training/configs/")
    parser.add_argument("--resume-from-checkpoint", default=None, help="'latest' or a checkpoint folder")
    add_push_arguments(parser)
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps of this invocation, as an interruption")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.max_steps=100")
    # Intermixed: overrides may follow an option (`--stop-after-steps 5 training.max_steps=10`).
    args = parser.parse_intermixed_args(argv)
    if args.stop_after_steps is not None and args.stop_after_steps < 1:  # 0 would still train one step
        parser.error(f"--stop-after-steps must be >= 1, got {args.stop_after_steps}; leave it out to train to the end")
    try:
        run = run_class(load_config(args.config, args.overrides))
        check_before_data(run)
        return run_training(run, args.resume_from_checkpoint, hub_target_from_arguments(parser, args),
                            args.stop_after_steps)
    except (ConfigError, ResumeError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def check_before_data(run: TrainingRun) -> None:
    """Raise :class:`ConfigError` for what would otherwise fail only after the data are loaded: ``model.*`` values the
    model refuses, a ``model.sample_size`` other than ``data.size``, a ``training.output_dir`` below a file."""
    size, arguments = run.config["data"]["size"], run.model_arguments()
    if arguments["sample_size"] != size:
        raise ConfigError(f"model.sample_size={arguments['sample_size']!r} differs from data.size={size}: the slices "
                          "would not fit the model; set both to the same value")
    try:
        with torch.device("meta"):  # no memory and no random draws: the run builds its own model later
            run.build_model()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {error}") from None
    output_dir = Path(run.config["training"]["output_dir"])
    existing = next(folder for folder in (output_dir, *output_dir.parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"training.output_dir={str(output_dir)!r}: {existing} is a file, not a folder; pass a folder "
                          "path")


def make_accelerator(settings: dict[str, Any]):
    """The run's ``Accelerator``, with the precision of :func:`resolve_mixed_precision` (written back into
    ``settings``, so that the logged config and the model card state the one used) and the tracker of
    ``training.report_to`` (``"csv"``: none besides the CSV log, which is always written)."""
    from accelerate import Accelerator

    settings["mixed_precision"] = resolve_mixed_precision(settings["mixed_precision"])
    return Accelerator(
        mixed_precision=settings["mixed_precision"],
        gradient_accumulation_steps=settings["gradient_accumulation_steps"],
        log_with=None if settings["report_to"] == "csv" else settings["report_to"],
        project_dir=str(settings["output_dir"]),
    )


def load_slices(data: dict[str, Any], announce: bool) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                              tuple[torch.Tensor, torch.Tensor] | None]:
    """The ``(images, masks)`` of the config's training patients and, with ``data.val_patients``, of the held-out ones
    (else ``None``).

    Args:
        data: the config's ``data`` section.
        announce: print how many slices were loaded (the main process).
    """
    training = dataset_to_tensors(load_slice_dataset(data, data["patients"]))
    validation = None
    if data["val_patients"]:
        validation = dataset_to_tensors(load_slice_dataset(data, data["val_patients"]))
    if announce:
        print(f"Training on {len(training[0])} slices of shape {tuple(training[0].shape[1:])}"
              + (f"; validating on {len(validation[0])}" if validation else ""))
    return training, validation


def build_training_model(run: TrainingRun) -> torch.nn.Module:
    """``run``'s model in training mode, started from ``training.init_from`` and with gradient checkpointing when the
    config asks for them."""
    settings = run.config["training"]
    model = run.build_model()
    if settings["init_from"]:
        initialise_from(run, model, Path(settings["init_from"]))
    if settings["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
        if hasattr(model, "flow_checkpoint_chunk_size"):  # the HVAE; the LSGAN has no flow
            model.flow_checkpoint_chunk_size = settings["flow_checkpoint_chunk_size"]
    return model.train()


def make_optimiser(run: TrainingRun, model: torch.nn.Module, num_processes: int):
    """AdamW over ``run.parameter_groups(model)`` and the ``training.lr_scheduler`` schedule; returns both.

    Args:
        num_processes: data-parallel processes; Accelerate steps a prepared scheduler once per process and optimiser
            step, so the schedule's step counts are scaled by it.
    """
    from diffusers.optimization import get_scheduler

    settings = run.config["training"]
    optimizer = torch.optim.AdamW(
        run.parameter_groups(model),
        lr=settings["learning_rate"],
        betas=tuple(settings["adam_betas"]),
        weight_decay=settings["weight_decay"],
    )
    scheduler = get_scheduler(
        settings["lr_scheduler"],
        optimizer,
        num_warmup_steps=settings["lr_warmup_steps"] * num_processes,
        num_training_steps=settings["max_steps"] * num_processes,
    )
    return optimizer, scheduler


def make_loader(images: torch.Tensor, masks: torch.Tensor, settings: dict[str, Any], num_processes: int) -> DataLoader:
    """Batches of ``training.batch_size`` slices per process in the order of :class:`EpochPermutationSampler`.

    Raises:
        ValueError: fewer slices than one batch on every process.
    """
    sampler = EpochPermutationSampler(len(images), settings["seed"])
    if len(images) < settings["batch_size"] * num_processes:
        raise ValueError(f"training.batch_size={settings['batch_size']} x {num_processes} processes "
                         f"exceeds the {len(images)} training slices")
    return DataLoader(TensorDataset(images, masks), batch_size=settings["batch_size"], sampler=sampler,
                      drop_last=True, num_workers=settings["dataloader_workers"])


def make_ema(accelerator, model, decay: float | None):
    """EMA weights of the prepared ``model`` with ``training.ema_decay``, saved in checkpoints; ``None`` without."""
    if not decay:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=decay)
    accelerator.register_for_checkpointing(ema)
    return ema


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


def metrics_row(step: int, learning_rate: float, seconds_per_step: float,
                terms: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One row of the metrics log: the step, learning rate, mean step time and the loss terms as numbers."""
    return {"step": step, "lr": learning_rate, "seconds_per_step": seconds_per_step,
            **{name: value.item() for name, value in terms.items()}}


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


def initialise_from(run: TrainingRun, model: torch.nn.Module, pipeline_dir: Path) -> None:
    """Copy the weights of a saved pipeline's model into ``model`` (``run.load_initial_weights`` maps them)."""
    weights = pipeline_dir / "model" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"training.init_from={pipeline_dir}: no {weights.relative_to(pipeline_dir)} there "
                                "(expected a folder written by save_pretrained, e.g. runs/<name>/pipeline)")
    from safetensors.torch import load_file

    try:
        run.load_initial_weights(model, load_file(weights))
    except RuntimeError as error:
        raise ValueError(f"training.init_from={pipeline_dir}: its weights do not fit this model ({error})") from error


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


def save_checkpoint(accelerator, output_dir: Path, step: int, total_limit: int | None) -> None:
    """``accelerator.save_state`` into ``checkpoint-<step>``, written under a temporary name then renamed."""
    final = output_dir / "checkpoints" / f"checkpoint-{step}"
    staging = output_dir / "checkpoints" / f".checkpoint-{step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def export_pipeline(run: TrainingRun, model, output_dir: Path, steps: int, seconds: float, rows: list[dict],
                    training_slices: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """``save_pretrained`` of the whole pipeline plus a model card, a loss curve and a final sample grid."""
    from hvae_pipeline.training.model_card import write_model_card

    pipeline = run.final_pipeline(model, *training_slices)
    final = output_dir / "pipeline"
    staging = output_dir / ".pipeline.partial"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    save_sample_grid(pipeline, staging / "samples.png")
    plot_loss_curve(rows, output_dir / "loss_curve.png")
    flow = model.flow_summary() if hasattr(model, "flow_summary") else None  # the HVAE; the LSGAN has no flow
    write_model_card(staging / "README.md", run, steps, seconds, rows[-1] if rows else {}, flow)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


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
