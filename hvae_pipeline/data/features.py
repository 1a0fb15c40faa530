"""The typed schema shared by every slice dataset, and helpers to get tensors with the stored dtypes.

Every loader (BraTS, HECKTOR, 2D pairs, phantoms) returns a :class:`datasets.Dataset` with these columns:

- ``image``: float32 ``Array3D`` of shape (C, H, W), channels in the order of the requested modalities;
- ``mask``: uint8 ``Array2D`` of shape (H, W), 0/1 for binary targets or class ids for ``"multiclass"``;
- ``patient_id`` (string), ``slice_index`` (int32, axial index in the resampled volume, inferior -> superior),
  ``tumour_area`` (int32, number of non-zero mask pixels), ``source`` (string, e.g. ``"brats2021"``).

Note on dtypes: ``datasets`` returns integer ``Array2D`` columns as int64 under ``with_format("numpy"|"torch")``
(so ``mask`` comes back int64). Use :func:`collate_slices` as a ``DataLoader`` ``collate_fn`` on
``dataset.with_format("numpy")`` (or :func:`slices_to_torch` on a batch) to get float32 images and uint8 masks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from datasets import Array2D, Array3D, Features, Value

SLICE_COLUMNS = ("image", "mask", "patient_id", "slice_index", "tumour_area", "source")

# dtype each numeric column is stored with; used to undo the int64 promotion done by datasets' formatters.
_TORCH_DTYPES = {
    "image": torch.float32,
    "mask": torch.uint8,
    "slice_index": torch.int32,
    "tumour_area": torch.int32,
}


def slice_features(num_channels: int, height: int, width: int) -> Features:
    """Return the :class:`datasets.Features` of a slice dataset.

    Args:
        num_channels: number of image channels C (one per modality).
        height: slice height H in pixels.
        width: slice width W in pixels.
    """
    if num_channels < 1 or height < 1 or width < 1:
        raise ValueError(f"slice_features needs positive sizes, got C={num_channels}, H={height}, W={width}")
    return Features(
        {
            "image": Array3D((num_channels, height, width), "float32"),
            "mask": Array2D((height, width), "uint8"),
            "patient_id": Value("string"),
            "slice_index": Value("int32"),
            "tumour_area": Value("int32"),
            "source": Value("string"),
        }
    )


def slices_to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a numpy-formatted row or batch of a slice dataset to tensors with the stored dtypes.

    Args:
        batch: a row or batch from ``dataset.with_format("numpy")`` (or plain python/numpy values).

    Returns:
        A dict with ``image`` float32, ``mask`` uint8, ``slice_index``/``tumour_area`` int32 tensors; string
        columns are passed through unchanged.
    """
    out: dict[str, Any] = {}
    for name, value in batch.items():
        dtype = _TORCH_DTYPES.get(name)
        out[name] = value if dtype is None else torch.as_tensor(np.asarray(value)).to(dtype)
    return out


def collate_slices(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``collate_fn`` for a ``torch.utils.data.DataLoader`` over ``dataset.with_format("numpy")``.

    Args:
        rows: the rows of one batch.

    Returns:
        Stacked tensors (``image`` (B, C, H, W) float32, ``mask`` (B, H, W) uint8, ints int32) and lists of strings.
    """
    if not rows:
        raise ValueError("collate_slices got an empty batch")
    stacked = {
        name: (np.stack([np.asarray(row[name]) for row in rows]) if name in _TORCH_DTYPES else [row[name] for row in rows])
        for name in rows[0]
    }
    return slices_to_torch(stacked)
