"""On-disk cache of prepared slice datasets, and atomic directory writes.

A cache entry is a ``save_to_disk`` folder named by a hash of the loader name, its arguments and the path, size
and modification time of every input file, so editing or replacing an input file invalidates the entry. Entries
are written to a temporary sibling folder and renamed into place, so a crash or a concurrent writer never leaves
a half-written entry that a later call would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from datasets import Dataset, load_from_disk

# Bump when the content produced for the same arguments changes, so old cache entries are not reused.
CACHE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/hvae_pipeline/slices")


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """``None``/``True`` -> the default folder (``$HVAE_PIPELINE_CACHE`` if set), ``False`` -> no cache."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return Path(os.environ.get("HVAE_PIPELINE_CACHE", DEFAULT_CACHE_DIR)).expanduser()
    return Path(cache_dir).expanduser()


def cache_key(loader: str, arguments: dict[str, Any], files: Iterable[Path]) -> str:
    """Hash of the loader name, its (JSON-serialisable) arguments and the identity of every input file."""
    stats = []
    for path in sorted({Path(f).resolve() for f in files}):
        info = path.stat()
        stats.append([str(path), info.st_size, info.st_mtime_ns])
    payload = json.dumps(
        {"version": CACHE_FORMAT_VERSION, "loader": loader, "arguments": arguments, "files": stats},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``target``; on success it is renamed to ``target``.

    Args:
        target: final folder.
        overwrite: replace an existing non-empty ``target`` (only once the new content is complete).

    Raises:
        FileExistsError: ``target`` exists, is not empty, and ``overwrite`` is False.
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target}: output folder exists and is not empty (use overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield temporary
        if target.exists():
            # Move the old folder aside first: rename cannot replace a non-empty directory.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "content")
            os.replace(temporary, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def cached_dataset(cache_dir: Path | None, key: str, build: Callable[[], Dataset]) -> Dataset:
    """Return the cached dataset for ``key``, or ``build()`` it and store it (when ``cache_dir`` is not None)."""
    if cache_dir is None:
        return build()
    entry = cache_dir / key
    if (entry / "dataset_info.json").is_file():
        return load_from_disk(str(entry))
    dataset = build()
    try:
        with atomic_directory(entry, overwrite=True) as temporary:
            dataset.save_to_disk(str(temporary))
    except OSError:
        # Another process may have renamed its own copy of the same entry into place first: use that one.
        if not (entry / "dataset_info.json").is_file():
            raise
    return load_from_disk(str(entry))
