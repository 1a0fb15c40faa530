"""Helpers of the reliability catalogue: run a CLI and read its verdict, find what a run left behind."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

# A seconds-long training run: 16 x 16 phantoms, 48 slices, batches of 8, one log row per step, no sample grids.
TINY_TRAINING = ["--config", "phantom-tiny", "model.sample_size=16", "data.size=16", "data.num_phantom_slices=48",
                 "training.batch_size=8", "training.log_steps=1", "training.sample_steps=1000",
                 "training.num_threads=1"]


def run_cli(main: Callable[[Sequence[str]], int], argv: Sequence[str], capsys) -> tuple[int, str]:
    """Run a CLI ``main`` (argparse errors exit with ``SystemExit``); return its exit code and its stderr."""
    try:
        code = main(argv)
    except SystemExit as exited:
        code = exited.code
    return code, capsys.readouterr().err


def file_contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path: bytes): equal before and after means byte-identical."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def hidden_entries(folder: Path) -> list[str]:
    """Names of the hidden entries of ``folder``: a staging or moved-aside folder left behind would show here."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def file_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (links not followed) with its size and modification time: equal snapshots before
    and after a failed run mean it left nothing behind, removed nothing and changed nothing."""
    return {
        str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


@contextmanager
def untouched(folder: Path) -> Iterator[None]:
    """Assert that the block (a failing run, usually) leaves ``folder`` exactly as it found it."""
    before = file_snapshot(folder)
    yield
    assert file_snapshot(folder) == before
