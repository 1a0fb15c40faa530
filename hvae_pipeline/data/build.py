"""Run a per-patient preparation function over many cases (optionally in parallel) and assemble a Dataset.

Warnings raised while preparing a patient (a tumour thinner than the output voxels, a tumour outside the crop
box...) are recorded with the dataset and shown again whenever it is loaded, from a worker process or from the
cache: a warning that only the first, uncached run printed would be as good as silent.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from datasets import Dataset, DatasetInfo
from tqdm.auto import tqdm

from .balance import balance_by_area
from .cache import cache_key, cached_dataset, resolve_cache_dir
from .errors import DataFormatError
from .features import slice_features
from .slices import SliceColumns

Case = TypeVar("Case")


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds (spawn re-imports torch/datasets, ~2 s per worker); workers only run
    # numpy/scipy/nibabel code, so forking a parent that imported torch is safe.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


Prepared = tuple[SliceColumns, list[str]]


def _prepare_recording_warnings(prepare: Callable[[Case], SliceColumns], case: Case) -> Prepared:
    """Run ``prepare(case)``; return its slices and the messages of the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        columns = prepare(case)
    return columns, [str(warning.message) for warning in caught]


def map_cases(
    prepare: Callable[[Case], SliceColumns],
    cases: Sequence[Case],
    num_proc: int = 1,
    progress: bool = False,
    description: str = "patients",
) -> list[Prepared]:
    """Apply ``prepare`` to every case, in order, with ``num_proc`` worker processes (1 = in this process);
    return each case's slices with the messages of the warnings it raised (workers cannot warn the caller).

    ``prepare`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    if num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    bar = dict(total=len(cases), desc=description, unit="patient", disable=not progress)
    recording = functools.partial(_prepare_recording_warnings, prepare)
    if num_proc == 1 or len(cases) < 2:
        return [recording(case) for case in tqdm(cases, **bar)]
    with _pool_context().Pool(min(num_proc, len(cases))) as pool:
        # chunksize 1: patients take similar, long times, so fine-grained scheduling balances the workers best.
        return list(tqdm(pool.imap(recording, cases, chunksize=1), **bar))


def recorded_warnings(dataset: Dataset) -> list[str]:
    """The preparation warnings stored with a dataset by :func:`assemble` (none for other datasets)."""
    try:
        return list(json.loads(dataset.info.description or "{}").get("preparation_warnings", []))
    except (ValueError, AttributeError):
        return []


def assemble(prepared: Sequence[Prepared], root: Path, min_tumour_area: int) -> Dataset:
    """Concatenate per-patient slices into a typed :class:`datasets.Dataset` that records the preparation
    warnings (:func:`recorded_warnings`).

    Raises:
        DataFormatError: no slice was kept (names ``root`` and ``min_tumour_area``).
    """
    kept = [part for part, _ in prepared if len(part)]
    if not kept:
        raise DataFormatError(
            f"{root}: no slice with tumour_area >= min_tumour_area={min_tumour_area} in {len(prepared)} case(s); "
            "check the masks, lower min_tumour_area, or pick another label"
        )
    columns = SliceColumns.concatenate(kept)
    _, channels, height, width = columns.image.shape
    features = slice_features(channels, height, width)
    notes = [message for _, messages in prepared for message in messages]
    info = DatasetInfo(description=json.dumps({"preparation_warnings": notes}), features=features)
    return Dataset.from_dict(columns.as_dict(), features=features, info=info)


def load_slices(
    loader: str,
    arguments: dict,
    files: Sequence[Path],
    prepare: Callable[[Case], SliceColumns],
    cases: Sequence[Case],
    *,
    root: Path,
    min_tumour_area: int,
    balance: bool,
    seed: int,
    num_proc: int,
    cache_dir,
    progress: bool,
) -> Dataset:
    """Shared tail of every loader: cache lookup, per-case preparation, assembly and optional balancing.

    Args:
        loader: loader name (part of the cache key).
        arguments: every argument that changes the result (part of the cache key; JSON-serialisable).
        files: every input file (their size and mtime are part of the cache key).
        prepare: picklable per-case function returning that case's slices.
        cases: the cases, in output order.
        root: dataset root (for error messages).
        min_tumour_area, balance, seed: see the loaders.
        num_proc: worker processes over cases.
        cache_dir: see :func:`~hvae_pipeline.data.cache.resolve_cache_dir`.
        progress: show a tqdm bar over patients.
    """
    def build() -> Dataset:
        dataset = assemble(map_cases(prepare, cases, num_proc, progress, loader), root, min_tumour_area)
        return balance_by_area(dataset, seed=seed) if balance else dataset

    directory = resolve_cache_dir(cache_dir)
    key = cache_key(loader, {**arguments, "balance": balance, "seed": seed}, files) if directory else ""
    dataset = cached_dataset(directory, key, build)
    for message in recorded_warnings(dataset):
        warnings.warn(message, UserWarning, stacklevel=3)
    return dataset
