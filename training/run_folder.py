"""A training run's folder: its checkpoints (written under a temporary name, then renamed; rotated) and resuming
from them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence


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
