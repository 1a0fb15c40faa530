"""One way to write a file: into a temporary sibling, renamed over the target when complete.

Readers never see half a file, and a failure (or an interrupt) leaves the previous file in place and no temporary
behind. Used for every single file the package writes (records, reports, plots, caches, cards, training logs);
whole output folders are staged by :func:`hvae_pipeline.storage.output_folder.atomic_directory`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _file_mode() -> int:
    """The mode ``open`` would give a new file (0o666 less the umask): ``mkstemp`` alone makes it owner-only."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_arguments: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit it replaces ``path``.

    Args:
        path: the file to write (its folder is created).
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        open_arguments: passed to :func:`os.fdopen` (e.g. ``newline=""`` for CSV).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.chmod(temporary, _file_mode())
        with os.fdopen(handle, mode, **open_arguments) as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as file:
        file.write(text)


def json_ready(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def write_json_atomically(path: str | Path, content: Any) -> None:
    """Write ``content`` as indented strict JSON (NaN/inf become null), atomically."""
    write_text_atomically(path, json.dumps(json_ready(content), indent=2, allow_nan=False) + "\n")
