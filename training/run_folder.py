"""A training run's checkpoints: written under a temporary name then renamed, rotated within the run's own, and
resumed from only when they belong to the run (its id and config, see :mod:`hvae_pipeline.training.run_record`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from hvae_pipeline.storage.atomic_write import json_ready
from hvae_pipeline.training.run_record import CHECKPOINT_RECORD_NAME, RECORD_NAME, RunFolder, read_json, write_json

# Overrides that may differ from a resumed checkpoint's config. The learning rates and max_steps apply from the resumed
# step on; the others change where and how often the run writes, its speed or memory, or only the export and the card,
# never the arithmetic of the steps. Any other difference is refused: the run would not be the run its config says.
APPLIED_ON_RESUME = ("training.learning_rate", "training.flow_learning_rate", "training.discriminator_learning_rate",
                     "training.max_steps")
FREE_ON_RESUME = ("training.output_dir", "training.num_threads", "training.dataloader_workers", "training.log_steps",
                  "training.sample_steps", "training.checkpointing_steps", "training.checkpoints_total_limit",
                  "training.report_to", "training.gradient_checkpointing", "training.flow_checkpoint_chunk_size",
                  "training.fit_latent_prior", "training.latent_prior_source", "data.num_proc", "data.description",
                  "data.licence")


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


def flat_settings(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"section.key": value}`` for every key of ``config``, values as JSON gives them back (tuples as lists)."""
    return {f"{section}.{key}": value for section, values in read_back(config).items() for key, value in values.items()}


def read_back(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a checkpoint's record stores it (JSON: tuples become lists, NaN becomes null)."""
    return json.loads(json.dumps(json_ready(config)))


def check_resume(candidates: Sequence[Path], output_dir: Path,
                 config: dict[str, dict[str, Any]]) -> dict[int, dict[str, tuple]]:
    """Refuse a checkpoint that is not the run's own or whose config differs from ``config`` in what it may not;
    return, by checkpoint step, the overrides that apply from that step on, ``{"section.key": (checkpoint's, now)}``.

    Args:
        candidates: from :func:`resume_candidates`.
        output_dir: ``training.output_dir``.
        config: the resolved config of this invocation.

    Raises:
        ResumeError: the checkpoint belongs to another run, its config differs in a key that cannot change on resume,
            or its step is past ``training.max_steps``.
    """
    folder_record = read_json(output_dir / RECORD_NAME)
    changes: dict[int, dict[str, tuple]] = {}
    for path in candidates:
        identity = read_json(path / CHECKPOINT_RECORD_NAME)
        if identity is None:  # written before run records: only the folder's own checkpoints are known to be its
            if path.resolve().parent.parent != output_dir.resolve():
                raise ResumeError(f"--resume-from-checkpoint {path}: not a checkpoint of training.output_dir="
                                  f"{output_dir}; resume in its own folder (training.output_dir="
                                  f"{path.resolve().parent.parent}), or start a new run from its exported weights "
                                  "with training.init_from=<that folder>/pipeline")
            continue
        if folder_record is None or identity["run_id"] != folder_record["run_id"]:
            raise ResumeError(f"--resume-from-checkpoint {path}: a checkpoint of another run (run id "
                              f"{identity['run_id'][:8]}, not training.output_dir={output_dir}'s); resume it in its "
                              f"own folder (training.output_dir={path.resolve().parent.parent}), or, to start this "
                              "run from its weights, use training.init_from=<that folder>/pipeline instead")
        changes[checkpoint_step(path)] = config_changes(path, identity, config)
    return changes


def config_changes(path: Path, identity: dict[str, Any], config: dict[str, dict[str, Any]]) -> dict[str, tuple]:
    """The keys of ``config`` that differ from the checkpoint ``path``'s and apply on resume (see
    :func:`check_resume`, which documents the errors)."""
    before, now = flat_settings(identity["config"]), flat_settings(config)
    differing = {key: (before[key], now[key]) for key in before.keys() & now.keys() if before[key] != now[key]}
    refused = sorted(key for key in differing if key not in APPLIED_ON_RESUME + FREE_ON_RESUME)
    if refused:
        key = refused[0]
        raise ResumeError(f"--resume-from-checkpoint {path}: {', '.join(refused)} differ from the run's config "
                          f"({key}: {differing[key][0]!r} in the checkpoint, {differing[key][1]!r} now); on resume "
                          f"only {', '.join(APPLIED_ON_RESUME)} apply (and bookkeeping keys); drop the override or "
                          "start a new run (training.init_from=<run>/pipeline starts from its weights)")
    if identity["step"] > config["training"]["max_steps"]:
        raise ResumeError(f"--resume-from-checkpoint {path}: the checkpoint is at step {identity['step']}, past "
                          f"training.max_steps={config['training']['max_steps']}; raise training.max_steps to train on")
    return {key: pair for key, pair in differing.items() if key in APPLIED_ON_RESUME}


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


def save_checkpoint(accelerator, run_folder: RunFolder | None, step: int, total_limit: int | None,
                    config: dict[str, dict[str, Any]]) -> Path:
    """``accelerator.save_state`` into ``checkpoint-<step>`` (with the run's id, the step and ``config`` in
    ``hvae-run.json``), written under a temporary name then renamed; beyond ``total_limit`` checkpoints, the run's
    oldest are removed (never one another run wrote). Returns the checkpoint's folder.

    Args:
        accelerator: the prepared ``Accelerator``.
        run_folder: the run's folder on the main process, ``None`` on the others.
        step: the optimiser step reached.
        total_limit: ``training.checkpoints_total_limit`` (``None``: keep all).
        config: the run's resolved config.
    """
    output_dir = Path(config["training"]["output_dir"])
    relative = f"checkpoints/checkpoint-{step}"
    staging = output_dir / "checkpoints" / f".checkpoint-{step}.partial"
    if run_folder is not None:
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if run_folder is not None:
        write_json(staging / CHECKPOINT_RECORD_NAME, {"run_id": run_folder.run_id, "step": step, "config": config})
        run_folder.install(staging, relative)
        owned = [path for path in list_checkpoints(output_dir) if run_folder.owns(f"checkpoints/{path.name}")]
        for old in owned[:-total_limit] if total_limit else []:
            run_folder.remove(f"checkpoints/{old.name}")
    accelerator.wait_for_everyone()
    return output_dir / relative
