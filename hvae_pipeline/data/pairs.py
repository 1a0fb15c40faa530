"""2D image/mask pairs (PNG, TIF... anything PIL reads), e.g. the public LGG FLAIR segmentation layout
``<case>/<case>_<n>.tif`` + ``<case>/<case>_<n>_mask.tif``.

2D files are taken to be in display orientation already (row 0 at the top of the picture) and are not reoriented.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset
from PIL import Image, UnidentifiedImageError

from .build import load_slices
from .errors import DataFormatError, MissingDataError
from .patterns import CasePattern
from .slices import SliceColumns, SliceOptions, select_slices
from .volume import check_not_constant, grid_over_volume, resample, resample_labels


@dataclass(frozen=True)
class PairCase:
    """One patient's slices: (slice index, image file, mask file) triples in slice order."""

    patient_id: str
    slices: tuple[tuple[int, Path, Path], ...]


def read_picture(path: Path) -> np.ndarray:
    """Read a 2D picture as a float32 (H, W, C) array without its alpha (transparency) channel, which is no channel of
    the scan; :class:`DataFormatError` names unreadable files."""
    try:
        with Image.open(path) as picture:
            bands, array = picture.getbands(), np.asarray(picture)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable 2D image ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataFormatError(f"{path}: expected a 2D picture (H, W) or (H, W, C), got shape {array.shape}")
    if "A" in bands and len(bands) == array.shape[2]:
        array = array[:, :, [index for index, band in enumerate(bands) if band != "A"]]
    return array.astype(np.float32)


def find_pair_cases(root: Path, image_glob: str, mask_glob: str, patients: Sequence[str] | None = None) -> list[PairCase]:
    """Pair every image with its mask through the fields of the two patterns (see :func:`load_pair_slices`)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"{root}: dataset folder not found")
    image_pattern, mask_pattern = CasePattern(image_glob), CasePattern(mask_glob)
    if set(image_pattern.fields) != set(mask_pattern.fields):
        raise ValueError(f"image_glob {image_glob!r} and mask_glob {mask_glob!r} must use the same fields")
    masks = mask_pattern.find(root)
    by_key = {tuple(sorted(fields.items())): path for path, fields in masks.items()}
    grouped: dict[str, list[tuple[dict, Path]]] = {}
    for path, fields in image_pattern.find(root).items():
        if path not in masks:  # a loose image pattern also matches the masks ("*_mask.tif"): those are not images
            grouped.setdefault(fields["case"], []).append((fields, path))
    if not grouped:
        raise MissingDataError(f"{root}: no image matches {image_glob!r}")
    if patients is not None:
        missing = sorted(set(patients) - set(grouped))
        if missing:
            raise MissingDataError(f"{root}: patients {missing} not found ({len(grouped)} cases available)")
    cases = []
    for case_id in sorted(grouped if patients is None else patients):
        entries = []
        for order, (fields, image_path) in enumerate(sorted(grouped[case_id], key=lambda e: _natural_key(e[1].name))):
            mask_path = by_key.get(tuple(sorted(fields.items())))
            if mask_path is None:
                raise MissingDataError(f"{image_path}: no mask found (expected {root / mask_pattern.format(**fields)})")
            index = fields.get("index", "")
            entries.append((int(index) if index.isdigit() else order, image_path, mask_path))
        cases.append(PairCase(case_id, tuple(sorted(entries))))
    return cases


def _natural_key(name: str) -> list:
    """Sort "x_2" before "x_10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class _PairOptions:
    slices: SliceOptions
    channels: tuple[int, ...] | None
    binarize: bool


def _resize(array: np.ndarray, size: int, labels: bool, path: Path) -> np.ndarray:
    """Resize an (H, W) plane to (size, size) with the volume resamplers (a 2D plane is a one-slice volume)."""
    shape = (*array.shape, 1)
    grid = grid_over_volume(np.eye(4), shape, (size, size, 1))
    if labels:
        return resample_labels(array[:, :, None], np.eye(4), grid, (size, size, 1), path)[:, :, 0]
    return resample(array[:, :, None], np.eye(4), grid, (size, size, 1))[:, :, 0]


def _mask_plane(picture: np.ndarray, path: Path) -> np.ndarray:
    """The one plane of a mask picture ``(H, W, C)``: a grey, grey+alpha or RGB(A) picture whose colour channels agree.

    Taking the first channel of a colour mask would drop a tumour drawn in green or blue without a word.

    Raises:
        DataFormatError: the colour channels differ (a coloured overlay rather than a mask), naming the file.
    """
    colours = picture[:, :, :3] if picture.shape[2] >= 3 else picture[:, :, :1]  # the alpha channel is no label
    if not (colours == colours[:, :, :1]).all():
        raise DataFormatError(f"{path}: a colour mask whose red, green and blue channels differ; save the mask as one "
                              "grey channel (0/1, 0/255 or class ids)")
    return colours[:, :, 0]


def prepare_pair_case(case: PairCase, options: _PairOptions) -> SliceColumns:
    """Read, check, resize and select one patient's 2D slices (runs in worker processes).

    A blank picture paired with a tumour mask is refused. Unlike the volume loaders there is no patient-level
    check of the tumour area: every picture is resized over its whole field of view, where
    :func:`~hvae_pipeline.data.volume.resample_labels` already keeps at least half of each label's area.
    """
    size = options.slices.size
    images, masks = [], []
    for _, image_path, mask_path in case.slices:
        picture = read_picture(image_path)
        if options.channels is not None:
            if max(options.channels) >= picture.shape[2]:
                raise DataFormatError(f"{image_path}: has {picture.shape[2]} channel(s), channels={list(options.channels)} requested")
            picture = picture[:, :, list(options.channels)]
        mask = _mask_plane(read_picture(mask_path), mask_path)
        if mask.shape != picture.shape[:2]:
            raise DataFormatError(f"{mask_path}: mask size {mask.shape} does not match {image_path.name} size {picture.shape[:2]}")
        mask = (mask > 0).astype(np.uint8) if options.binarize else mask.astype(np.uint8)
        if mask.any():  # a blank picture without tumour is an ordinary slice outside the organ
            check_not_constant(picture, str(image_path))
        images.append(np.stack([_resize(picture[:, :, c], size, False, image_path) for c in range(picture.shape[2])]))
        masks.append(_resize(mask, size, True, mask_path))
    if len({image.shape for image in images}) > 1:
        raise DataFormatError(f"patient {case.patient_id}: images have different channel counts; pass channels=")
    index = np.array([entry[0] for entry in case.slices])
    return select_slices(np.stack(images), np.stack(masks), index, case.patient_id, "pairs", options.slices)


def load_pair_slices(
    root: str | os.PathLike,
    image_glob: str,
    mask_glob: str,
    *,
    channels: Sequence[int] | None = None,
    size: int = 128,
    binarize_mask: bool = True,
    patients: Sequence[str] | None = None,
    normalization: str = "minmax",
    min_tumour_area: int = 1,
    balance: bool = False,
    seed: int = 0,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | bool | None = None,
    progress: bool = False,
) -> Dataset:
    """Load 2D image/mask files as a slice dataset.

    Example (LGG FLAIR layout, RGB TIFs holding pre-contrast, FLAIR, post-contrast)::

        load_pair_slices(root, "{case}/{case}_{index}.tif", "{case}/{case}_{index}_mask.tif", channels=[1])

    Args:
        root: dataset folder.
        image_glob: image file pattern relative to ``root`` with a ``{case}`` field (the patient id) and usually an
            ``{index}`` field (the slice number, stored as ``slice_index`` when numeric). Files that match
            ``mask_glob`` are never taken as images.
        mask_glob: mask file pattern with the same fields; each image is paired with the mask having equal fields.
        channels: channels to keep from multi-channel pictures, in order (default: all; grayscale has one).
        size: output size (H = W); images are resampled bilinearly, masks per label.
        binarize_mask: map every non-zero mask value to 1 (e.g. 0/255 masks); False keeps values as class ids.
        patients: only these patient ids.
        normalization: ``"minmax"`` per slice (default), ``"zscore"`` per patient, or ``"none"``.
        min_tumour_area: keep slices with at least this many tumour pixels after resizing.
        balance: apply the paper's area-balanced subsampling.
        seed: seed of the balancing draw.
        num_proc: worker processes (parallel over patients).
        cache_dir: cache folder (default ``~/.cache/hvae_pipeline/slices``); ``False`` disables caching.
        progress: show a progress bar over patients.
    """
    slice_options = SliceOptions(size, 1, normalization, min_tumour_area)
    if channels is not None and (isinstance(channels, (int, str)) or not channels or min(channels) < 0):
        raise ValueError(f"channels must be a non-empty sequence of channel numbers, got {channels!r}")
    cases = find_pair_cases(Path(root), image_glob, mask_glob, patients)
    options = _PairOptions(slice_options, None if channels is None else tuple(channels), binarize_mask)
    files = [path for case in cases for _, image, mask in case.slices for path in (image, mask)]
    return load_slices(
        "pairs",
        {"options": asdict(options), "cases": [asdict(c) for c in cases]},
        files,
        functools.partial(prepare_pair_case, options=options),
        cases,
        root=Path(root),
        min_tumour_area=min_tumour_area,
        balance=balance,
        seed=seed,
        num_proc=num_proc,
        cache_dir=cache_dir,
        progress=progress,
    )
