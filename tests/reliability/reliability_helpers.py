"""Helpers of the reliability catalogue: run a CLI and read its verdict, find what a run left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence


def run_cli(main: Callable[[Sequence[str]], int], argv: Sequence[str], capsys) -> tuple[int, str]:
    """Run a CLI ``main`` (argparse errors exit with ``SystemExit``); return its exit code and its stderr."""
    try:
        code = main(argv)
    except SystemExit as exited:
        code = exited.code
    return code, capsys.readouterr().err


def hidden_entries(folder: Path) -> list[str]:
    """Names of the hidden entries of ``folder``: a staging or moved-aside folder left behind would show here."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))
