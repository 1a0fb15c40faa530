"""Who owns a training run's folder, and what in it the run wrote.

A run folder holds a run record, ``.hvae-run.json``: the run's id, its trainer, the resume history, and the files of
every folder the run wrote as a whole (``checkpoints/checkpoint-<step>``, ``pipeline``). Only recorded files are ever
removed or replaced, so a file a user puts into a run folder survives rotation, re-export and resume. Each checkpoint
also carries ``hvae-run.json``: the run id, its step and the config it was trained with (what resume compares).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hvae_pipeline.storage.atomic_write import json_ready, write_text_atomically

RECORD_NAME = ".hvae-run.json"
CHECKPOINT_RECORD_NAME = "hvae-run.json"


class RunFolderError(ValueError):
    """``training.output_dir`` may not be used as asked; the message names the folder and what to do instead."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file is absent.

    Raises:
        RunFolderError: the file is not valid JSON (a damaged record), naming it.
    """
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunFolderError(f"{path}: unreadable run record ({error}); restore it, or start a new "
                             "training.output_dir") from None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as indented JSON through a temporary file renamed into place."""
    write_text_atomically(path, json.dumps(json_ready(value), indent=1) + "\n")


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, as sorted ``/``-separated paths relative to it."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir())


def is_earlier_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` is a run folder of an ``hvae-train`` that wrote no run record (``config.yaml`` and
    ``checkpoints/checkpoint-<step>/``): adopted on resume, refused as the folder of a new run."""
    checkpoints = output_dir / "checkpoints"
    return (output_dir / "config.yaml").is_file() and any(checkpoints.glob("checkpoint-*")) and not (
        output_dir / RECORD_NAME).exists()


def claim_output_dir(output_dir: Path, resume: str | None, overwrite_run: bool) -> None:
    """Raise :class:`RunFolderError` unless this invocation may write into ``output_dir``: an absent or empty folder,
    a run folder continued with ``--resume-from-checkpoint``, or one moved aside with ``--overwrite-run``.

    Args:
        output_dir: ``training.output_dir``.
        resume: the ``--resume-from-checkpoint`` value (``None``: a new run).
        overwrite_run: ``--overwrite-run`` was given.
    """
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    is_run = (output_dir / RECORD_NAME).is_file() or is_earlier_run(output_dir)
    if not is_run:
        raise RunFolderError(f"training.output_dir={output_dir} is not empty and is not a run folder of hvae-train "
                             f"(no {RECORD_NAME}): its files are not the run's to overwrite; pass a new or empty "
                             "folder, or continue a run in its own folder with --resume-from-checkpoint latest")
    if resume is None and not overwrite_run:
        raise RunFolderError(f"training.output_dir={output_dir} holds an earlier run: continue it with "
                             "--resume-from-checkpoint latest, pass a new training.output_dir, or pass --overwrite-run "
                             "to move the earlier run aside (nothing is deleted)")


def move_aside(output_dir: Path) -> Path:
    """Rename the run folder ``output_dir`` to a sibling ``<name>.replaced-<UTC time>``; return the new path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = output_dir.with_name(f"{output_dir.name}.replaced-{stamp}")
    os.replace(output_dir, aside)
    return aside


class RunFolder:
    """The run record of ``output_dir``, and the writes that go through it (main process only).

    Attributes:
        output_dir: ``training.output_dir``.
        record: the run record (``run_id``, ``trainer``, ``resumes``, ``written``).
    """

    def __init__(self, output_dir: Path, record: dict[str, Any]) -> None:
        self.output_dir, self.record = output_dir, record

    @classmethod
    def open(cls, output_dir: Path, trainer: str, resumed: bool, overwrite_run: bool) -> "RunFolder":
        """The folder's record, created for a new run (after moving an earlier run aside with ``overwrite_run``) or
        for an adopted earlier run (its checkpoints and pipeline become the run's own); written at once.

        Args:
            output_dir: ``training.output_dir``, already checked by :func:`claim_output_dir`.
            trainer: the trainer's kind (``"hvae"``, ``"lsgan"``).
            resumed: this invocation resumed from a checkpoint.
            overwrite_run: ``--overwrite-run`` was given.
        """
        record = read_json(output_dir / RECORD_NAME)
        if overwrite_run and not resumed and (record is not None or is_earlier_run(output_dir)):
            print(f"Moved the earlier run in {output_dir} to {move_aside(output_dir)}")
            record = None
        if record is None:
            record = {"run_id": uuid.uuid4().hex, "trainer": trainer, "resumes": [], "written": {}}
            for folder in [*output_dir.glob("checkpoints/checkpoint-*"), output_dir / "pipeline"]:
                if folder.is_dir():  # an adopted earlier run: what it wrote is the run's own
                    record["written"][folder.relative_to(output_dir).as_posix()] = files_under(folder)
        folder = cls(output_dir, record)
        folder.save()
        return folder

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def save(self) -> None:
        write_json(self.output_dir / RECORD_NAME, self.record)

    def note_resume(self, step: int, changes: dict[str, tuple[Any, Any]]) -> None:
        """Record a resume at ``step`` with the overrides that changed (``key: (before, now)``)."""
        self.record["resumes"].append({"step": step, "changed": {key: list(pair) for key, pair in changes.items()}})
        self.save()

    def remove(self, relative: str) -> None:
        """Remove the files the run wrote in the folder ``relative`` and the folders left empty; anything else in it
        (a user's file) stays, and so does the folder then."""
        folder = self.output_dir / relative
        for name in self.record["written"].pop(relative, []):
            (folder / name).unlink(missing_ok=True)
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True) if folder.is_dir() else []:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        self.save()

    def install(self, staging: Path, relative: str) -> Path:
        """Put the complete folder ``staging`` in place as ``relative``, replacing only what the run wrote there.

        Raises:
            RunFolderError: a file the run did not write stands where one of ``staging``'s files must go.
        """
        final = self.output_dir / relative
        self.remove(relative)
        written = files_under(staging)
        if final.exists():  # a user's files stay: ours join them file by file
            clashes = [name for name in written if (final / name).exists()]
            if clashes:
                raise RunFolderError(f"{final / clashes[0]} was not written by this run and stands where the run "
                                     f"writes; move it away (the new output is kept in {staging})")
            for name in written:
                (final / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, final / name)
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
        self.record["written"][relative] = written
        self.save()
        return final

    def owns(self, relative: str) -> bool:
        """Whether the run wrote the folder ``relative`` (e.g. ``checkpoints/checkpoint-20``)."""
        return relative in self.record["written"]
