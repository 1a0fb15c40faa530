"""Reading NIfTI volumes, resampling them onto a target grid, and the 2D display convention.

Orientation: every volume is reoriented to the closest RAS+ orientation (``nibabel.as_closest_canonical``): array
index i grows towards the patient's Right, j towards Anterior, k towards Superior, whatever affine it was saved
with (LPS, LAS...). Resampling grids are RAS-aligned as well, and axial slices are then shown in the
**radiological display convention** (:func:`axial_slices`): looking up from the feet, row 0 is the most
anterior row (nose up), column 0 is the patient's right (patient right on the image left), and ``slice_index``
grows from inferior to superior.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .errors import DataFormatError, MissingDataError

# Tolerance (mm) when checking that two volumes share a grid: NIfTI headers round-trip affines through float32.
_AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Volume:
    """A volume in closest-RAS orientation.

    Attributes:
        data: float32 array (X, Y, Z) or (X, Y, Z, T) for 4D files.
        affine: 4x4 voxel -> world (RAS mm) matrix of ``data``.
        path: the file it came from (for error messages).
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])


def read_volume(path: Path, allow_4d: bool = False) -> Volume:
    """Read a NIfTI file, reorient it to closest RAS and check its voxels.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        allow_4d: accept a 4D file (e.g. the MSD multi-contrast images); otherwise the file must be 3D.

    Raises:
        MissingDataError: the file does not exist.
        DataFormatError: the file cannot be decoded, has the wrong number of dimensions, or contains NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{path}: file not found")
    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError) as exc:
        raise DataFormatError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    expected = (3, 4) if allow_4d else (3,)
    if data.ndim not in expected:
        raise DataFormatError(f"{path}: expected a {' or '.join(f'{n}D' for n in expected)} volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        count = int(np.size(data) - np.isfinite(data).sum())
        raise DataFormatError(f"{path}: {count} NaN/inf voxel(s); fix or mask them before loading")
    return Volume(data=data, affine=image.affine.astype(np.float64), path=path)


def read_label_volume(path: Path) -> Volume:
    """Read a label map (:func:`read_volume`), check that it only holds non-negative integers.

    The data comes back as a C-contiguous integer array (uint8 when the values allow), which makes the label
    look-ups downstream several times faster than on float32.
    """
    volume = read_volume(path)
    top = float(volume.data.max(initial=0))
    labels = np.ascontiguousarray(volume.data, dtype=np.uint8 if top <= 255 else np.int32)
    if (labels != volume.data).any() or (volume.data < 0).any():
        raise DataFormatError(f"{path}: a label map must hold non-negative integers, found other values")
    return Volume(data=labels, affine=volume.affine, path=path)


def label_values(labels: np.ndarray) -> list[int]:
    """Sorted non-zero values of a non-negative integer label array (a linear-time ``np.unique``)."""
    if labels.size == 0:
        return []
    counts = np.bincount(labels.ravel())
    return [int(v) for v in np.flatnonzero(counts[1:]) + 1]


def check_same_grid(reference: Volume, other: Volume) -> None:
    """Raise :class:`DataFormatError` naming both files when two volumes do not share shape and affine."""
    if reference.shape != other.shape:
        raise DataFormatError(
            f"{other.path}: shape {other.shape} does not match {reference.path.name} shape {reference.shape}"
        )
    if not np.allclose(reference.affine, other.affine, atol=_AFFINE_TOLERANCE_MM):
        raise DataFormatError(
            f"{other.path}: affine does not match {reference.path.name}\n{np.round(other.affine, 3)}\n"
            f"vs\n{np.round(reference.affine, 3)}"
        )


def grid_over_volume(affine: np.ndarray, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of an ``out_shape`` grid covering the same field of view as a (RAS-oriented) volume.

    Voxel centres follow the "pixel area" convention (``align_corners=False``): output voxel j covers source
    indices ``[j * s, (j + 1) * s)`` with ``s = shape / out_shape``, so the field of view is preserved exactly.
    """
    scale = np.asarray(shape, dtype=np.float64) / np.asarray(out_shape, dtype=np.float64)
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = 0.5 * scale - 0.5
    return affine @ index_map


def grid_over_box(lower_mm: np.ndarray, upper_mm: np.ndarray, out_shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of a RAS-aligned ``out_shape`` grid whose voxels tile the world box ``[lower_mm, upper_mm]``."""
    spacing = (np.asarray(upper_mm, float) - np.asarray(lower_mm, float)) / np.asarray(out_shape, float)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = np.asarray(lower_mm, float) + 0.5 * spacing
    return affine


def _interpolate_axis(data: np.ndarray, axis: int, coords: np.ndarray, fill: float | None) -> np.ndarray:
    """Linear interpolation of ``data`` along one axis at fractional source indices ``coords``."""
    # One voxel of padding (edge copy or the fill value) makes out-of-range samples blend into it.
    pad = [(0, 0)] * data.ndim
    pad[axis] = (1, 1)
    padded = np.pad(data, pad, mode="edge") if fill is None else np.pad(data, pad, constant_values=fill)
    last = padded.shape[axis] - 1
    coords = np.clip(coords + 1.0, 0.0, last)
    low = np.minimum(np.floor(coords).astype(np.intp), last - 1)
    weight_shape = [1] * data.ndim
    weight_shape[axis] = -1
    weight = (coords - low).astype(np.float32).reshape(weight_shape)
    below = np.take(padded, low, axis=axis)
    return below + (np.take(padded, low + 1, axis=axis) - below) * weight


def resample(
    data: np.ndarray,
    source_affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    fill: float | None = None,
) -> np.ndarray:
    """Trilinear resampling of a 3D array onto a grid given in world coordinates.

    Args:
        data: source array (X, Y, Z).
        source_affine: voxel -> world matrix of ``data``.
        grid_affine: voxel -> world matrix of the output grid.
        grid_shape: output shape.
        fill: value outside the source field of view; ``None`` repeats the nearest edge voxel.
    """
    data = data.astype(np.float32, copy=False)
    index_map = np.linalg.solve(source_affine, grid_affine)
    matrix, offset = index_map[:3, :3], index_map[:3, 3]
    if not np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-6):
        # Oblique grids: general (slower) trilinear interpolation.
        return ndimage.affine_transform(
            data, matrix, offset=offset, output_shape=tuple(grid_shape), order=1,
            mode="nearest" if fill is None else "constant", cval=0.0 if fill is None else fill, prefilter=False,
        )
    # Axis-aligned grids (RAS volumes onto RAS grids, the usual case): trilinear = three 1D passes, ~5x faster
    # than scipy's zoom; the most shrinking axis goes first so later passes touch less data.
    scale = np.diag(matrix)
    for axis in np.argsort(np.abs(scale))[::-1]:
        coords = scale[axis] * np.arange(grid_shape[axis]) + offset[axis]
        data = _interpolate_axis(data, int(axis), coords, fill)
    return data


def resample_labels(
    labels: np.ndarray,
    source_affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    path: Path,
) -> np.ndarray:
    """Resample a label map: each label's indicator is interpolated linearly, then every voxel takes the label
    with the largest weight (background included).

    This is nearest-neighbour-like for large regions but, unlike plain nearest sampling, never jumps over a label.
    A label that still vanishes (a region smaller than about half an output voxel) is kept at the single output
    voxel where its weight is largest, and a ``UserWarning`` naming ``path`` says so: tiny tumours are never lost
    silently.
    """
    present = label_values(labels)
    if not present:
        return np.zeros(grid_shape, dtype=np.uint8)
    weights = np.stack([resample((labels == value).astype(np.float32), source_affine, grid_affine, grid_shape, 0.0) for value in present])
    background = 1.0 - weights.sum(axis=0)
    winner = np.argmax(np.concatenate([background[None], weights]), axis=0)
    out = np.asarray([0, *present], dtype=np.uint8)[winner]
    for value, weight in zip(present, weights):
        if not (out == value).any() and weight.max() > 0:
            out[np.unravel_index(np.argmax(weight), grid_shape)] = value
            warnings.warn(
                f"{path}: label {value} is smaller than one resampled voxel; kept as a single voxel", stacklevel=2
            )
    return out


def axial_slices(volume: np.ndarray) -> np.ndarray:
    """Turn a RAS-oriented (X, Y, Z) volume into axial slices (Z, H, W) in the radiological display convention.

    ``out[k, r, c] = volume[X - 1 - c, Y - 1 - r, k]``: row 0 is anterior (nose up), column 0 is the patient's
    right, k runs inferior -> superior.
    """
    return np.ascontiguousarray(np.flip(volume, axis=(0, 1)).transpose(2, 1, 0))
