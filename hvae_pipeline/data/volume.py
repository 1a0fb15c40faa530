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


def _average_axis(data: np.ndarray, axis: int, coords: np.ndarray, width: float) -> np.ndarray:
    """Mean of ``data`` along one axis over windows ``[c - width / 2, c + width / 2]`` centred on the fractional
    source indices ``coords`` (source voxel i covers ``[i - 0.5, i + 0.5]``; outside the array counts as 0).

    The running integral of a piecewise-constant signal is piecewise linear, so every window is exact: each source
    voxel counts with the fraction of it that the window covers (area-weighted downsampling, no voxel skipped).
    """
    length = data.shape[axis]
    zero = np.zeros_like(np.take(data, [0], axis=axis))
    integral = np.concatenate([zero, np.cumsum(data, axis=axis, dtype=np.float64)], axis=axis)

    def integral_at(positions: np.ndarray) -> np.ndarray:
        # Integral from -0.5 to each position: linear between the voxel boundaries (stored at k - 0.5).
        x = np.clip(positions + 0.5, 0.0, float(length))
        low = np.minimum(np.floor(x).astype(np.intp), length - 1)
        shape = [1] * data.ndim
        shape[axis] = -1
        weight = (x - low).reshape(shape)
        below = np.take(integral, low, axis=axis)
        return below + (np.take(integral, low + 1, axis=axis) - below) * weight

    return ((integral_at(coords + width / 2) - integral_at(coords - width / 2)) / width).astype(np.float32)


def resample(
    data: np.ndarray,
    source_affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    fill: float | None = None,
    area: bool = False,
) -> np.ndarray:
    """Trilinear resampling of a 3D array onto a grid given in world coordinates.

    Args:
        data: source array (X, Y, Z).
        source_affine: voxel -> world matrix of ``data``.
        grid_affine: voxel -> world matrix of the output grid.
        grid_shape: output shape.
        fill: value outside the source field of view; ``None`` repeats the nearest edge voxel.
        area: along the axes the grid shrinks, average ``data`` over each output voxel's footprint instead of
            interpolating at its centre (which reads only two source voxels and so skips structures thinner
            than the step); outside the field of view then counts as 0 whatever ``fill`` is. Oblique grids get
            the same effect from a box filter of the footprint's size applied before interpolating.
    """
    data = data.astype(np.float32, copy=False)
    index_map = np.linalg.solve(source_affine, grid_affine)
    matrix, offset = index_map[:3, :3], index_map[:3, 3]
    if not np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-6):
        if area:
            # Source voxels spanned by one output voxel along each source axis.
            # Odd box sizes, so that the filter does not shift the data by half a voxel.
            footprint = np.abs(matrix).sum(axis=1)
            data = ndimage.uniform_filter(data, size=2 * (footprint // 2).astype(int) + 1, mode="constant")
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
        if area and abs(scale[axis]) > 1:
            data = _average_axis(data, int(axis), coords, float(abs(scale[axis])))
        else:
            data = _interpolate_axis(data, int(axis), coords, fill)
    return data


def _restore_area(out: np.ndarray, value: int, weight: np.ndarray) -> int:
    """Give label ``value`` back the area that majority voting took from it; returns how many voxels were added.

    The label's true area on the grid is the sum of its coverage ``weight`` (in output voxels). Majority voting
    keeps about that much of a region larger than a voxel; a thin or small region loses to the background
    everywhere. When fewer than half its true area survived, background voxels are added in decreasing coverage
    down to the coverage level that restores the area (a whole level, so a uniformly covered thin line keeps its
    full length rather than one end of it). A label that still has no voxel takes the one it covers most, even
    from another label: a label present in the source never vanishes.
    """
    kept = int(np.count_nonzero(out == value))
    true_area = float(weight.sum())
    if kept >= 0.5 * true_area and kept:
        return 0
    missing = max(1, int(round(true_area))) - kept
    free = (out == 0) & (weight > 0)
    added = np.zeros_like(free)
    if missing > 0 and free.any():
        level = np.sort(weight[free])[::-1][min(missing, int(free.sum())) - 1]
        added = free & (weight >= level)
        out[added] = value
    if not (out == value).any():
        added[np.unravel_index(np.argmax(weight), weight.shape)] = True
        out[added] = value
    return int(np.count_nonzero(added))


def resample_labels(
    labels: np.ndarray,
    source_affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape: tuple[int, int, int],
    path: Path,
) -> np.ndarray:
    """Resample a label map: each label's indicator is interpolated linearly, then every voxel takes the label
    with the largest weight (background included).

    This is nearest-neighbour-like for large regions. Beyond 2x downsampling, interpolation reads only some source
    voxels and a thin or small region can vanish, so each label's true coverage of the output voxels is computed
    as well (area-weighted, :func:`resample` with ``area=True``): a label left with less than half its true area
    gets back the voxels it covers most (:func:`_restore_area`), and a ``UserWarning`` naming ``path`` says so.
    Small and thin tumours are never lost silently, and labels that keep their area are exactly as before.
    """
    present = label_values(labels)
    if not present:
        return np.zeros(grid_shape, dtype=np.uint8)
    indicators = [(labels == value).astype(np.float32) for value in present]
    weights = np.stack([resample(indicator, source_affine, grid_affine, grid_shape, 0.0) for indicator in indicators])
    background = 1.0 - weights.sum(axis=0)
    winner = np.argmax(np.concatenate([background[None], weights]), axis=0)
    out = np.asarray([0, *present], dtype=np.uint8)[winner]
    for value, indicator in zip(present, indicators):
        coverage = resample(indicator, source_affine, grid_affine, grid_shape, 0.0, area=True)
        if coverage.max() > 0 and (added := _restore_area(out, value, coverage)):
            warnings.warn(
                f"{path}: label {value} is thinner or smaller than the resampled voxels; gave it back its {added} "
                "most covered voxel(s) so that its area survives", stacklevel=2,
            )
    return out


def warn_if_tumour_shrank(patient_id: str, path: Path, before: float, after: float, grid: str) -> None:
    """Warn (``UserWarning`` naming the patient and file) when resampling kept less than half of a tumour.

    Args:
        patient_id: the patient, for the message.
        path: the label file (or one of the patient's mask files), for the message.
        before: tumour size in the source, counted in output voxels (source voxels times their size relative to
            an output voxel), so that it compares with ``after``.
        after: tumour voxels on the output grid.
        grid: the output grid, for the message (e.g. ``"128 x 128 x 64"``).
    """
    if after < 0.5 * before:
        warnings.warn(
            f"patient {patient_id}: the tumour of {path} covers {before:.4g} voxel(s) of the {grid} output grid "
            f"but only {after:.4g} after resampling (it lies partly outside the field of view or crop box); "
            "check the crop box or the masks if it should be inside",
            stacklevel=2,
        )


def resample_mask(labels: np.ndarray, source: Volume, grid_affine: np.ndarray, grid_shape: tuple[int, int, int],
                  patient_id: str) -> np.ndarray:
    """:func:`resample_labels` of one patient's target ``labels`` (on the grid of the label file ``source``),
    warning when less than half of the tumour volume reaches the output grid (:func:`warn_if_tumour_shrank`)."""
    out = resample_labels(labels, source.affine, grid_affine, grid_shape, source.path)
    voxel_ratio = abs(np.linalg.det(source.affine[:3, :3]) / np.linalg.det(grid_affine[:3, :3]))
    before = float(np.count_nonzero(labels)) * voxel_ratio
    warn_if_tumour_shrank(patient_id, source.path, before, float(np.count_nonzero(out)), " x ".join(map(str, grid_shape)))
    return out


def check_not_constant(data: np.ndarray, source: str) -> None:
    """Refuse an image whose voxels all hold one value (a failed export or conversion: it has no anatomy to pair
    with a tumour mask).

    Args:
        data: the image (volume, channel or 2D picture).
        source: where it came from, for the message (the file, and the channel of a 4D file).

    Raises:
        DataFormatError: naming ``source`` and the value.
    """
    if data.size and data.min() == data.max():
        raise DataFormatError(
            f"{source}: every voxel is {float(data.flat[0]):g}, an empty image (a failed export or conversion?); "
            "re-export the file, or leave the patient out with patients="
        )


def axial_slices(volume: np.ndarray) -> np.ndarray:
    """Turn a RAS-oriented (X, Y, Z) volume into axial slices (Z, H, W) in the radiological display convention.

    ``out[k, r, c] = volume[X - 1 - c, Y - 1 - r, k]``: row 0 is anterior (nose up), column 0 is the patient's
    right, k runs inferior -> superior.
    """
    return np.ascontiguousarray(np.flip(volume, axis=(0, 1)).transpose(2, 1, 0))
