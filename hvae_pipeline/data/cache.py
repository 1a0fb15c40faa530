"""On-disk cache of prepared slice datasets.

A cache entry is a ``save_to_disk`` folder named by a hash of the loader name, its arguments and the path, size
and modification time of every input file, so editing or replacing an input file invalidates the entry. Entries
are written to a temporary sibling folder and renamed into place, so a crash or a concurrent writer never leaves
a half-written entry that a later call would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from datasets import Dataset, load_from_disk

from ..storage.output_folder import atomic_directory

# Bump when the content produced for the same arguments changes, so old cache entries are not reused.
CACHE_FORMAT_VERSION = 2
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


def cached_dataset(cache_dir: Path | None, key: str, build: Callable[[], Dataset]) -> Dataset:
    """Return the cached dataset for ``key``, or ``build()`` it and store it (when ``cache_dir`` is not None)."""
    if cache_dir is None:
        return build()
    entry = cache_dir / key
    if (entry / "dataset_info.json").is_file():
        return load_from_disk(str(entry))
    dataset = build()
    try:
        # The entry is this cache's own folder: whatever an earlier, interrupted write left in it may be replaced.
        with atomic_directory(entry, owned=("**",), overwrite=True) as temporary:
            dataset.save_to_disk(str(temporary))
    except OSError:
        # Another process may have renamed its own copy of the same entry into place first: use that one.
        if not (entry / "dataset_info.json").is_file():
            raise
    return load_from_disk(str(entry))
