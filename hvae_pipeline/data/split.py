"""Patient-level train/validation/test splits (no patient ever appears in two splits)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from datasets import Dataset, DatasetDict


def _counts_from_fractions(fractions: Mapping[str, float], num_patients: int) -> dict[str, int]:
    """Patients per split by largest remainder, so the counts add up exactly to ``num_patients``."""
    values = np.asarray(list(fractions.values()), dtype=float)
    if (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {dict(fractions)}")
    exact = values / values.sum() * num_patients
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: num_patients - counts.sum()]:
        counts[i] += 1
    return dict(zip(fractions, counts.tolist()))


def split_by_patient(
    dataset: Dataset,
    splits: Mapping[str, float] | Mapping[str, Sequence[str]],
    seed: int = 0,
) -> DatasetDict:
    """Split a slice dataset by patient.

    Args:
        dataset: a dataset with a ``patient_id`` column.
        splits: either fractions of patients per split (e.g. ``{"train": 0.8, "val": 0.2}``; normalised to sum 1,
            patients shuffled with ``seed`` then allotted by largest remainder) or explicit patient id lists per
            split (e.g. ``{"train": [...], "val": [...]}``; patients in no list are left out).
        seed: shuffling seed for fractions.

    Returns:
        A :class:`datasets.DatasetDict` with one dataset per split, slices in their original order. Every patient
        is in at most one split.

    Raises:
        ValueError: a patient is listed in two splits, a listed patient is not in ``dataset``, or fractions are
            invalid.
    """
    if not splits:
        raise ValueError("splits must name at least one split")
    patient_ids = np.asarray(dataset["patient_id"], dtype=object)
    patients = sorted(set(patient_ids.tolist()))
    first = next(iter(splits.values()))
    if isinstance(first, (int, float)):
        shuffled = np.random.default_rng(seed).permutation(patients).tolist()
        counts = _counts_from_fractions(splits, len(patients))
        assignment, start = {}, 0
        for name, count in counts.items():
            assignment[name] = shuffled[start : start + count]
            start += count
    else:
        assignment = {name: list(ids) for name, ids in splits.items()}
        seen: dict[str, str] = {}
        for name, ids in assignment.items():
            if isinstance(ids, str):
                raise ValueError(f"split {name!r}: expected a list of patient ids, got the string {ids!r}")
            for patient in ids:
                if patient in seen:
                    raise ValueError(f"patient {patient!r} is listed in both split {seen[patient]!r} and split {name!r}")
                seen[patient] = name
        unknown = sorted(set(seen) - set(patients))
        if unknown:
            raise ValueError(f"patients {unknown} are not in the dataset (it has {len(patients)} patients)")
    return DatasetDict(
        {name: dataset.select(np.flatnonzero(np.isin(patient_ids, list(ids))).tolist()) for name, ids in assignment.items()}
    )
