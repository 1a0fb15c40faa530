"""Output folders written whole or not at all, never at the expense of files the tool did not write.

:func:`atomic_directory` stages a run's output in a hidden sibling folder and renames it into place at the end, so an
interrupted run (an exception, Ctrl-C, a batch scheduler's SIGTERM) leaves neither a half-written output nor its
staging folder. Before any work it refuses a target that is the working folder or one of its parents, that holds
files the tool did not write (they are named), or that is not empty without ``overwrite``; it also creates the staging
folder up front, so an unwritable location is reported before hours of work rather than after them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..models.inputs import name_list
from .stop_signals import raise_system_exit, stop_signal_handlers, stop_signals_held



class OutputFolderError(ValueError):
    """An output folder that may not be written or replaced; the message names the folder, the reason and the fix."""


def foreign_entries(folder: Path, owned: Sequence[str]) -> list[str]:
    """Paths under ``folder`` (relative, ``/``-separated, folders ending in ``/``) that match no ``owned`` pattern.

    Args:
        folder: An existing folder.
        owned: Patterns of the relative paths the tool writes, matched name by name with ``fnmatch`` (``*`` stays
            within a name): ``"images/"`` is a folder, ``"images/sample_*"`` a file in it, and a final ``**`` matches
            everything below (``"dataset/**"``). A foreign folder is listed, not its content.
    """
    foreign: list[str] = []
    for root, folders, files in os.walk(folder):
        relative = Path(root).relative_to(folder)
        entries = [(relative / name).as_posix() + "/" for name in folders] + [(relative / n).as_posix() for n in files]
        foreign += sorted(path for path in entries if not any(_matches(path, pattern) for pattern in owned))
        folders[:] = [name for name in folders if (relative / name).as_posix() + "/" not in foreign]
    return foreign


def _matches(path: str, pattern: str) -> bool:
    """Whether the relative ``path`` matches ``pattern`` (see :func:`foreign_entries`)."""
    names, pieces = path.split("/"), pattern.split("/")
    if pieces[-1] == "**":  # any path below the names before it
        pieces = pieces[:-1]
        if len(names) <= len(pieces):
            return False
        names = names[:len(pieces)]
    return len(names) == len(pieces) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, pieces))


def check_output_folder(target: Path, owned: Sequence[str], overwrite: bool, argument: str = "output folder") -> None:
    """Raise :class:`OutputFolderError` unless a new output may be written to ``target`` (see the module doc).

    Args:
        target: The output folder (absent, empty, or a previous output of the same tool).
        owned: Patterns of what the tool writes (see :func:`foreign_entries`); only such files may be replaced.
        overwrite: Whether a previous output of the tool may be replaced.
        argument: How the caller names ``target`` in messages (``"--out"``).
    """
    target = Path(target)
    working = Path.cwd().resolve()
    if target.resolve() == working or target.resolve() in working.parents:
        raise OutputFolderError(f"{argument} {target}: is the working folder or one of its parents, which the output "
                                f"would replace; pass a new folder such as {argument} {target / 'output'}")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputFolderError(f"{argument} {target}: exists and is not a folder (a file or a link); pass a folder")
    if target.is_dir():
        _check_contents(target, target, owned, overwrite, argument)


def _check_contents(target: Path, folder: Path, owned: Sequence[str], overwrite: bool, argument: str) -> None:
    """Refuse replacing ``folder`` (``target`` itself, or where it was moved aside) unless it holds only owned files."""
    foreign = foreign_entries(folder, owned)
    if foreign:
        raise OutputFolderError(f"{argument} {target}: holds files this tool did not write ({name_list(foreign)}), "
                                "which replacing it would delete; pass a new or empty folder")
    if any(folder.iterdir()) and not overwrite:
        raise OutputFolderError(f"{argument} {target}: is not empty; pass --overwrite to replace the previous "
                                "output, or a new folder")


@contextlib.contextmanager
def atomic_directory(
    target: Path, owned: Sequence[str], overwrite: bool = False, argument: str = "output folder"
) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; when the block succeeds it becomes ``target``.

    Args:
        target: The final folder; checked first with :func:`check_output_folder`, and again when the output is moved
            into place (files that appeared in it during the run are never deleted: the move is refused).
        owned: Patterns of what the tool writes (see :func:`foreign_entries`).
        overwrite: Replace a previous output of the tool (only once the new one is complete).
        argument: How the caller names ``target`` in messages.

    Raises:
        OutputFolderError: ``target`` may not be written (see :func:`check_output_folder`) or its location is not
            writable; raised before the block runs, or at the end when ``target`` changed meanwhile.
    """
    check_output_folder(target, owned, overwrite, argument)
    target = Path(os.path.abspath(target))  # "a/b/.." is "a": renames need the folder's own name
    created = _make_folders(target.parent, argument)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        _remove_empty(created)
        raise OutputFolderError(f"{argument} {target}: cannot write in {target.parent} ({error.strerror}); pass a "
                                "writable folder") from error
    staging.chmod(0o755)  # mkdtemp's 0o700 would hide the output from other users of a shared machine
    # Only signals left at the system default raise: a caller's own handler, or an ignored signal, is kept.
    with stop_signal_handlers(lambda previous: raise_system_exit if previous == signal.SIG_DFL else previous):
        try:
            yield staging
            with stop_signals_held():  # a half-done swap would lose the previous output
                _move_into_place(staging, target, owned, overwrite, argument)
        except BaseException:
            with stop_signals_held():  # a second Ctrl-C must not cut the cleanup short
                shutil.rmtree(staging, ignore_errors=True)
                _remove_empty(created)
            raise


def _make_folders(folder: Path, argument: str) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest first (for :func:`_remove_empty`)."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        for path in reversed(missing):
            path.mkdir()
    except OSError as error:
        _remove_empty(missing)
        raise OutputFolderError(f"{argument}: cannot create the folder {folder} ({error.strerror}); pass a folder in a "
                                "writable location") from error
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created (deepest first), leaving any that something else wrote into."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _move_into_place(staging: Path, target: Path, owned: Sequence[str], overwrite: bool, argument: str) -> None:
    """Rename ``staging`` to ``target``, replacing a previous output only when ``overwrite`` allows it.

    An absent or empty ``target`` is replaced by the rename itself, which the system refuses when files appeared in
    ``target`` meanwhile. A non-empty ``target`` is first moved aside and checked there, where nothing else writes, so
    a file put into it during the run is restored with it rather than deleted.
    """
    try:
        os.replace(staging, target)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / "content")
    try:
        _check_contents(target, aside / "content", owned, overwrite, argument)
        os.replace(staging, target)
    except BaseException:
        os.replace(aside / "content", target)
        aside.rmdir()
        raise
    shutil.rmtree(aside)
