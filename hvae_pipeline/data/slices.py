"""From resampled volumes to 2D slice records: display orientation, intensity normalisation, tumour filtering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .volume import axial_slices

NORMALIZATIONS = ("minmax", "zscore", "none")
UNLABELLED_SUFFIX = "-unlabelled"


@dataclass
class SliceColumns:
    """Column-wise slice records of one or more patients (what workers send back to the main process)."""

    image: np.ndarray  # (N, C, H, W) float32
    mask: np.ndarray  # (N, H, W) uint8
    patient_id: list[str]
    slice_index: np.ndarray  # (N,) int32
    tumour_area: np.ndarray  # (N,) int32
    source: list[str]

    def __len__(self) -> int:
        return len(self.patient_id)

    @classmethod
    def concatenate(cls, parts: Sequence["SliceColumns"]) -> "SliceColumns":
        return cls(
            image=np.concatenate([p.image for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            patient_id=[pid for p in parts for pid in p.patient_id],
            slice_index=np.concatenate([p.slice_index for p in parts]),
            tumour_area=np.concatenate([p.tumour_area for p in parts]),
            source=[s for p in parts for s in p.source],
        )

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in ("image", "mask", "patient_id", "slice_index", "tumour_area", "source")}


@dataclass(frozen=True)
class SliceOptions:
    """Output geometry and slice selection shared by the volume loaders (validated on creation).

    Attributes:
        size: in-plane size of the output grid (H = W = size).
        depth: number of axial slices of the output grid.
        normalization: ``"minmax"`` (per slice and channel to [0, 1], the paper's choice), ``"zscore"`` (per volume
            and channel, over the foreground) or ``"none"``.
        min_tumour_area: keep slices with at least this many non-zero mask pixels (after resampling); 0 keeps all.
    """

    size: int
    depth: int
    normalization: str
    min_tumour_area: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.depth < 1:
            raise ValueError(f"size and depth must be >= 1, got size={self.size}, depth={self.depth}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: expected one of {NORMALIZATIONS}")
        if self.min_tumour_area < 0:
            raise ValueError(f"min_tumour_area must be >= 0, got {self.min_tumour_area}")

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.depth)


def minmax_per_slice(images: np.ndarray) -> np.ndarray:
    """Scale every (slice, channel) plane of an (N, C, H, W) array to [0, 1]; constant planes become 0."""
    low = images.min(axis=(2, 3), keepdims=True)
    span = images.max(axis=(2, 3), keepdims=True) - low
    return np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def zscore_per_volume(volume: np.ndarray) -> np.ndarray:
    """Z-score a 3D channel over its foreground: voxels above the volume minimum (the zero background of
    skull-stripped MRI, air in CT/PET), so that the large background does not dominate the statistics."""
    foreground = volume[volume > volume.min()]
    if foreground.size < 2:
        return np.zeros_like(volume, dtype=np.float32)
    std = float(foreground.std())
    return ((volume - foreground.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def select_slices(
    images: np.ndarray,
    masks: np.ndarray,
    slice_index: np.ndarray,
    patient_id: str,
    source: str,
    options: SliceOptions,
    labelled: bool = True,
) -> SliceColumns:
    """Normalise one patient's slices and keep those with enough tumour.

    Args:
        images: (N, C, H, W) slices of one patient, in display orientation.
        masks: (N, H, W) targets.
        slice_index: (N,) index stored with each slice.
        patient_id: id stored with every slice.
        source: dataset/layout name stored with every slice.
        options: normalisation and ``min_tumour_area``. ``"zscore"`` statistics cover all N slices of the patient
            (the whole volume), per channel.
        labelled: False for cases without a label map (``masks`` all zero): every slice is kept and ``source``
            gets ``UNLABELLED_SUFFIX`` so these slices can never be mistaken for tumour-free ground truth.
    """
    images = images.astype(np.float32, copy=False)
    if not labelled:
        source += UNLABELLED_SUFFIX
    if options.normalization == "zscore":
        images = np.stack([zscore_per_volume(images[:, c]) for c in range(images.shape[1])], axis=1)
    areas = np.count_nonzero(masks, axis=(1, 2)).astype(np.int32)
    keep = np.flatnonzero(areas >= (options.min_tumour_area if labelled else 0))
    kept = images[keep]
    if options.normalization == "minmax":
        kept = minmax_per_slice(kept)
    return SliceColumns(
        image=kept,
        mask=masks[keep].astype(np.uint8),
        patient_id=[patient_id] * len(keep),
        slice_index=np.asarray(slice_index, dtype=np.int32)[keep],
        tumour_area=areas[keep],
        source=[source] * len(keep),
    )


def volume_to_slices(
    channels: Sequence[np.ndarray],
    mask: np.ndarray,
    patient_id: str,
    source: str,
    options: SliceOptions,
    labelled: bool = True,
) -> SliceColumns:
    """Cut resampled RAS volumes (one (X, Y, Z) array per modality, and the (X, Y, Z) mask) into axial slices in
    the display convention and pass them to :func:`select_slices` (``slice_index`` = axial index)."""
    images = np.stack([axial_slices(c) for c in channels], axis=1)
    masks = axial_slices(mask)
    return select_slices(images, masks, np.arange(len(masks)), patient_id, source, options, labelled)
