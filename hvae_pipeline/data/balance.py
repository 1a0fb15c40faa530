"""The paper's area-balanced subsampling of tumour slices."""

from __future__ import annotations

import math

import numpy as np
from datasets import Dataset

from .errors import DataFormatError

BALANCE_START = 200
BALANCE_WIDTH = 25


def balance_by_area(
    dataset: Dataset,
    start: int = BALANCE_START,
    width: int = BALANCE_WIDTH,
    per_bin: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Subsample slices so that tumour areas are evenly represented.

    Slices with ``tumour_area < start`` are dropped; the others are put in bins ``[start + k * width,
    start + (k + 1) * width)`` and each bin keeps at most ``per_bin`` slices drawn at random (deterministic for a
    given ``seed``). Kept slices stay in their original order.

    Args:
        dataset: a slice dataset (needs a ``tumour_area`` column).
        start: smallest tumour area kept, in pixels (paper: 200).
        width: bin width in pixels (paper: 25).
        per_bin: cap per bin; ``None`` uses the median count of the non-empty bins (rounded up), which evens out
            the over-represented small/medium areas without discarding the rare large tumours.
        seed: random seed of the draw.
    """
    if width < 1 or start < 0:
        raise ValueError(f"balance_by_area needs start >= 0 and width >= 1, got start={start}, width={width}")
    areas = np.asarray(dataset["tumour_area"], dtype=np.int64)
    eligible = np.flatnonzero(areas >= start)
    if eligible.size == 0:
        raise DataFormatError(f"no slice has tumour_area >= {start} px (largest: {areas.max(initial=0)}); nothing to balance")
    bins = (areas[eligible] - start) // width
    counts = np.bincount(bins)
    cap = per_bin if per_bin is not None else math.ceil(float(np.median(counts[counts > 0])))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(members, size=min(cap, members.size), replace=False)
        for members in (eligible[bins == b] for b in np.flatnonzero(counts))
    ]
    return dataset.select(np.sort(np.concatenate(keep)).tolist())
