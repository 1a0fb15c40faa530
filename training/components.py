"""The parts a training run is built from, in the order :func:`~hvae_pipeline.training.loop.run_training` makes
them: the ``Accelerator`` (and its precision), the slices, the model (optionally started from saved weights), the
optimiser and schedule, the loader (a batch order that can be recomputed on resume) and the EMA weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from hvae_pipeline.training.config import ConfigError
from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset
from hvae_pipeline.training.trainer import TrainingRun


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


def apply_learning_rates(optimizer, scheduler, configured: list[float]) -> None:
    """Make the configured base learning rates (one per parameter group) those of a resumed optimiser and schedule:
    a checkpoint restores its own, which an override of ``training.learning_rate`` on resume must replace.

    Args:
        optimizer: the prepared optimiser, after the checkpoint was loaded.
        scheduler: the prepared ``LambdaLR`` schedule (diffusers' ``get_scheduler``), after the checkpoint was loaded.
        configured: the groups' learning rates from the config, read before the checkpoint was loaded.
    """
    schedule = getattr(scheduler, "scheduler", scheduler)  # unwrapped from Accelerate's AcceleratedScheduler
    if list(schedule.base_lrs) == configured:  # nothing changed: leave the restored state untouched
        return
    schedule.base_lrs = list(configured)
    for group, rate, factor in zip(optimizer.param_groups, configured, schedule.lr_lambdas):
        group["initial_lr"], group["lr"] = rate, rate * factor(schedule.last_epoch)


def make_loader(images: torch.Tensor, masks: torch.Tensor, settings: dict[str, Any], num_processes: int) -> DataLoader:
    """Batches of ``training.batch_size`` slices per process in the order of :class:`EpochPermutationSampler`.

    Raises:
        ConfigError: fewer slices than one batch on every process.
    """
    sampler = EpochPermutationSampler(len(images), settings["seed"])
    check_batch_fits(settings["batch_size"], num_processes, len(images), "training slices")
    return DataLoader(TensorDataset(images, masks), batch_size=settings["batch_size"], sampler=sampler,
                      drop_last=True, num_workers=settings["dataloader_workers"])


def check_batch_fits(batch_size: int, num_processes: int, slices: int, what: str) -> None:
    """Raise :class:`ConfigError` when ``slices`` cannot fill one batch of ``batch_size`` on each of ``num_processes``.

    Args:
        what: how the message names the slices (``"training slices"``, ``"phantom slices (data.num_phantom_slices)"``).
    """
    if slices < batch_size * num_processes:
        per_process = f" x {num_processes} processes" if num_processes > 1 else ""
        raise ConfigError(f"training.batch_size={batch_size}{per_process} exceeds the {slices} {what}: set "
                          f"training.batch_size to at most {slices // num_processes} (or add slices)")


def make_ema(accelerator, model, decay: float | None):
    """EMA weights of the prepared ``model`` with ``training.ema_decay``, saved in checkpoints; ``None`` without."""
    if not decay:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=decay)
    accelerator.register_for_checkpointing(ema)
    return ema
