"""Reading uploaded slices and masks (PNG / TIF pictures, NIfTI volumes) and bringing them to the model's grid.

Every refusal raises :class:`DemoInputError` with a sentence meant for the person who uploaded the file; what was
done to an accepted file (padding, resizing, normalisation, mask binarisation) is reported back as notes, so the UI can
say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from hvae_pipeline.data.errors import DataFormatError
from hvae_pipeline.data.slices import minmax_per_slice
from hvae_pipeline.data.volume import axial_slices, read_label_volume, read_volume

PICTURE_SUFFIXES = (".png", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
UPLOAD_SUFFIXES = PICTURE_SUFFIXES + NIFTI_SUFFIXES
# Slices outside these sides are refused: smaller ones hold no anatomy worth reconstructing, larger ones are not
# single medical slices and would only cost memory before being shrunk to the model's grid.
MIN_SIDE = 8
MAX_SIDE = 2048


class DemoInputError(ValueError):
    """A request the demo refuses, with a message written for the person using the demo."""


@dataclass
class PreparedSlice:
    """An uploaded slice brought to the model's input format.

    Attributes:
        image: ``(1, image_channels, sample_size, sample_size)`` float32 in ``[0, 1]``.
        original_size: ``(height, width)`` of the slice as uploaded (masks must match it).
        notes: What was done to the upload, in plain sentences.
    """

    image: torch.Tensor
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


@dataclass
class PreparedMask:
    """An uploaded mask brought to the model's grid.

    Attributes:
        mask: ``(1, sample_size, sample_size)`` int64 class ids (0/1 for binary models).
        notes: What was done to the upload, in plain sentences.
    """

    mask: torch.Tensor
    notes: list[str] = field(default_factory=list)


def upload_kind(path: str | Path) -> str:
    """Return ``"nifti"`` or ``"picture"`` from the file name, or raise :class:`DemoInputError` for other files."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    raise DemoInputError(
        f"{Path(path).name}: unsupported file type. Upload a PNG or TIF slice, or a NIfTI volume (.nii / .nii.gz) "
        "with a slice index."
    )


def read_slice_planes(path: str | Path, slice_index: int, label_map: bool = False) -> np.ndarray:
    """Read one 2D slice of an uploaded file as an ``(H, W, C)`` array of raw values.

    Args:
        path: A PNG/TIF picture (read as stored: 8/16-bit grey, float TIF, RGB; alpha dropped) or a NIfTI volume
            (3D, or 4D with modalities on the 4th axis).
        slice_index: Axial slice of a NIfTI volume (ignored for pictures). NIfTI slices follow the project's
            display convention (:func:`hvae_pipeline.data.axial_slices`), the one the model was trained on.
        label_map: Read a mask: NIfTI files must then be 3D volumes of non-negative integers.
    """
    path = Path(path)
    if upload_kind(path) == "picture":
        return _read_picture(path)
    try:
        volume = read_label_volume(path) if label_map else read_volume(path, allow_4d=True)
    except DataFormatError as error:
        raise DemoInputError(_as_user_sees_it(str(error), path)) from error
    data = volume.data if volume.data.ndim == 4 else volume.data[..., None]
    depth = data.shape[2]
    if not 0 <= slice_index < depth:
        raise DemoInputError(
            f"{path.name}: slice index {slice_index} is outside the volume, which has {depth} axial slices "
            f"(0 to {depth - 1})."
        )
    slab = data[:, :, slice_index : slice_index + 1]
    return np.stack([axial_slices(slab[..., channel])[0] for channel in range(data.shape[3])], axis=-1)


def _as_user_sees_it(message: str, path: Path) -> str:
    """``message`` naming the upload by its file name: its temporary folder on the server means nothing to the user."""
    return message.replace(str(path), path.name)


def _read_picture(path: Path) -> np.ndarray:
    """Decode a picture, after checking the size its header announces: a decompression bomb (a small file that
    decodes to gigapixels) is refused before any pixel is decoded."""
    try:
        with PIL.Image.open(path) as picture:
            _check_side(picture.height, picture.width, path.name)
            picture.load()
            if picture.mode == "P":  # palette pictures: their colours, not their palette indices, are the content
                picture = picture.convert("RGBA")
            array = np.asarray(picture)
    except DemoInputError:
        raise
    # PIL refuses headers beyond twice its MAX_IMAGE_PIXELS itself (DecompressionBombError), before _check_side.
    except (OSError, PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, ValueError) as error:
        reason = _as_user_sees_it(str(error), path)
        raise DemoInputError(f"{path.name}: not a readable PNG/TIF picture ({reason}).") from error
    if array.ndim == 2:
        return array[..., None]
    if picture.mode in ("LA", "RGBA"):
        array = array[..., :-1]  # drop the alpha channel: transparency carries no intensity
    return array


def _to_channels(planes: np.ndarray, channels: int, name: str, wanted: str) -> tuple[np.ndarray, list[str]]:
    """Match ``planes`` ``(H, W, C)`` to ``channels``; grey levels stored as identical RGB channels count as one.

    ``wanted`` says what was expected, for the refusal message ("a greyscale (1-channel) slice").
    """
    found = planes.shape[-1]
    if found == channels:
        return planes, []
    if channels == 1 and all(np.array_equal(planes[..., 0], planes[..., c]) for c in range(1, found)):
        return planes[..., :1], [f"{name} stores grey levels in {found} identical channels: one was used."]
    raise DemoInputError(f"{name} has {found} channels but the model expects {wanted}.")


def _check_side(height: int, width: int, name: str) -> None:
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise DemoInputError(
            f"{name} is {height}x{width} pixels; slices between {MIN_SIDE} and {MAX_SIDE} pixels a side are accepted."
        )


def _pad_to_square(plane: np.ndarray, fill: float) -> np.ndarray:
    height, width = plane.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = np.full((side, side), fill, dtype=plane.dtype)
    square[top : top + height, left : left + width] = plane
    return square


def prepare_slice(path: str | Path, slice_index: int, image_channels: int, sample_size: int) -> PreparedSlice:
    """Read an uploaded slice and bring it to the model's input: square, ``sample_size`` pixels, ``[0, 1]``.

    Non-square slices are centred on a square of their minimum value, resized (bilinear, antialiased) and min-max
    normalised per slice and channel (a constant slice becomes 0), as the training slices were.

    Args:
        path: The uploaded PNG/TIF picture or NIfTI volume.
        slice_index: Axial slice of a NIfTI volume (ignored for pictures).
        image_channels: Channels (modalities) the model expects.
        sample_size: Height and width the model expects.

    Raises:
        DemoInputError: Unsupported or unreadable file, wrong channel count, slice index or size out of range, or a
            blank (constant) slice.
    """
    name = Path(path).name
    wanted = "a greyscale (1-channel) slice" if image_channels == 1 else f"{image_channels} channels (modalities)"
    planes = read_slice_planes(path, slice_index).astype(np.float32)
    planes, notes = _to_channels(planes, image_channels, name, wanted)
    height, width = planes.shape[:2]
    _check_side(height, width, name)
    if not np.isfinite(planes).all():
        raise DemoInputError(f"{name} contains NaN or infinite values.")
    low, high = float(planes.min()), float(planes.max())
    if low == high:  # min-max normalisation would map it to an all-zero slice: nothing of the upload would remain
        raise DemoInputError(f"{name} is blank: every pixel is {low:g}. Upload a slice with an image in it.")
    if height != width:
        notes.append(f"The {height}x{width} slice was centred on a square, padded with its minimum value.")
    resized = [
        np.asarray(
            PIL.Image.fromarray(_pad_to_square(planes[..., c], float(planes[..., c].min()))).resize(
                (sample_size, sample_size), PIL.Image.Resampling.BILINEAR
            )
        )
        for c in range(image_channels)
    ]
    image = minmax_per_slice(np.stack(resized)[None])
    notes.append(
        f"Resized {max(height, width)}x{max(height, width)} to {sample_size}x{sample_size} and min-max normalised "
        f"(values {low:g}..{high:g} mapped to 0..1)."
    )
    return PreparedSlice(image=torch.from_numpy(image), original_size=(height, width), notes=notes)


def prepare_mask(
    path: str | Path, slice_index: int, slice_size: tuple[int, int], mask_channels: int, sample_size: int
) -> PreparedMask:
    """Read an uploaded tumour mask and bring it to the model's grid (padded and resized like its slice).

    Args:
        path: The uploaded mask: a PNG/TIF of integer labels, or a 3D NIfTI label volume.
        slice_index: Axial slice of a NIfTI volume (ignored for pictures).
        slice_size: ``(height, width)`` of the uploaded slice, which the mask must match.
        mask_channels: 1 for binary models (any non-zero label is tumour), ``C > 1`` for class ids ``0..C-1``.
        sample_size: Height and width the model expects.

    Raises:
        DemoInputError: Unreadable file, colour mask, non-integer labels, size unlike the slice's, class ids the
            model does not know.
    """
    name = Path(path).name
    planes = read_slice_planes(path, slice_index, label_map=True)
    planes, notes = _to_channels(planes, 1, name, "a mask of labels in one channel")
    labels = planes[..., 0]
    if not np.array_equal(labels, np.round(labels)) or labels.min() < 0:
        raise DemoInputError(f"{name}: a mask must hold non-negative integer labels (0 = background).")
    if labels.shape != tuple(slice_size):
        raise DemoInputError(
            f"{name} is {labels.shape[0]}x{labels.shape[1]} but its slice is {slice_size[0]}x{slice_size[1]}: "
            "upload the mask of that slice."
        )
    labels = labels.astype(np.int64)
    values = sorted(int(v) for v in np.unique(labels))
    if mask_channels == 1:
        if values not in ([0], [1], [0, 1]):
            notes.append(f"Mask values {values} were read as tumour wherever non-zero.")
        labels = (labels > 0).astype(np.int64)
    elif values[-1] >= mask_channels:
        raise DemoInputError(
            f"{name} holds label {values[-1]} but the model knows classes 0 to {mask_channels - 1} only."
        )
    # Nearest neighbour keeps labels as labels (no blended class ids at tumour borders).
    square = PIL.Image.fromarray(_pad_to_square(labels.astype(np.int32), 0))
    resized = np.asarray(square.resize((sample_size, sample_size), PIL.Image.Resampling.NEAREST), dtype=np.int64)
    return PreparedMask(mask=torch.from_numpy(resized)[None], notes=notes)
