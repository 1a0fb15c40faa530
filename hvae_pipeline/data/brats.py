"""BraTS loaders: official BraTS 2018-2021 / 2023+ / MSD Task01 layouts, or any layout via file patterns."""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset

from .build import load_slices
from .errors import DataFormatError, MissingDataError
from .labels import BRATS_CONVENTIONS, BRATS_LABELS, detect_brats_convention
from .patterns import CasePattern, check_not_broken_link
from .slices import SliceColumns, SliceOptions, volume_to_slices
from .volume import (
    Volume,
    check_not_constant,
    check_same_grid,
    grid_over_volume,
    read_label_volume,
    read_volume,
    resample,
    resample_mask,
)

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
# Accepted spellings -> canonical (2021) names, so ("flair",) works for every release.
_MODALITY_ALIASES = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t1gd": "t1ce", "t2w": "t2", **{m: m for m in BRATS_MODALITIES}}


@dataclass(frozen=True)
class _Layout:
    """A BraTS file layout: where images and labels are, and what the modalities are called in file names."""

    name: str
    image: CasePattern
    label: CasePattern
    file_modality: dict[str, str] | None  # canonical name -> name in the file; None: one 4D file per case
    channel: dict[str, int] | None = None  # canonical name -> channel of the 4D file


LAYOUTS = (
    _Layout("brats2021", CasePattern("{case}/{case}_{modality}.nii.gz"), CasePattern("{case}/{case}_seg.nii.gz"),
            {m: m for m in BRATS_MODALITIES}),
    _Layout("brats2023", CasePattern("{case}/{case}-{modality}.nii.gz"), CasePattern("{case}/{case}-seg.nii.gz"),
            {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}),
    _Layout("msd", CasePattern("imagesTr/{case}.nii.gz"), CasePattern("labelsTr/{case}.nii.gz"), None,
            {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}),
)


@dataclass(frozen=True)
class BratsCase:
    """The files of one patient: ``images`` is one (file, channel-or-None) pair per requested modality."""

    patient_id: str
    images: tuple[tuple[Path, int | None], ...]
    label: Path | None
    layout: str


def _canonical_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    if isinstance(modalities, str) or not modalities:
        raise ValueError(f"modalities must be a non-empty sequence of names, got {modalities!r}")
    unknown = [m for m in modalities if m.lower() not in _MODALITY_ALIASES]
    if unknown:
        raise ValueError(f"unknown BraTS modalities {unknown}; expected names among {sorted(_MODALITY_ALIASES)}")
    return tuple(_MODALITY_ALIASES[m.lower()] for m in modalities)


def _detect_layout(root: Path) -> _Layout:
    for layout in LAYOUTS:
        probe = layout.image.pattern.replace("{modality}", layout.file_modality["flair"]) if layout.file_modality else layout.image.pattern
        if CasePattern(probe).find(root):
            return layout
    raise MissingDataError(
        f"{root}: no known BraTS layout found (looked for {', '.join(l.image.pattern for l in LAYOUTS)} with "
        "modality names flair|t2f); pass image_glob=/label_glob= for other layouts"
    )


def find_brats_cases(
    root: Path,
    modalities: Sequence[str] = ("flair",),
    image_glob: str | None = None,
    label_glob: str | None = None,
    patients: Sequence[str] | None = None,
    allow_unlabelled: bool = False,
) -> list[BratsCase]:
    """List the cases of a BraTS folder and check that every requested file exists.

    Args:
        root: dataset folder.
        modalities: requested modalities; see :func:`load_brats_slices`.
        image_glob, label_glob: explicit patterns (see :mod:`~hvae_pipeline.data.patterns`); both or neither.
        patients: restrict to these patient ids (all must exist).
        allow_unlabelled: accept cases without a label file (``label=None``).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"{root}: dataset folder not found")
    if (image_glob is None) != (label_glob is None):
        raise ValueError("image_glob and label_glob must be given together")
    if image_glob is not None:
        image, label = CasePattern(image_glob), CasePattern(label_glob)
        if "modality" in image.fields:
            layout = _Layout("glob", image, label, {m: m for m in modalities})
        elif len(modalities) == 1:
            layout = _Layout("glob", image, label, None, {modalities[0]: None})
        else:
            raise ValueError(f"image_glob {image_glob!r} has no '{{modality}}' field, so it holds one modality, but {len(modalities)} were requested")
        wanted = tuple(modalities)
    else:
        layout = _detect_layout(root)
        wanted = _canonical_modalities(modalities)

    available: dict[str, dict[str, Path]] = {}
    label_files = set(layout.label.find(root))
    for path, fields in layout.image.find(root).items():
        if path not in label_files:  # "{case}_{modality}" also matches "{case}_seg"
            available.setdefault(fields["case"], {})[fields.get("modality", "")] = path
    if patients is not None:
        missing = sorted(set(patients) - set(available))
        if missing:
            raise MissingDataError(f"{root}: patients {missing} not found ({len(available)} cases available)")
    cases = []
    for case_id in sorted(available if patients is None else patients):
        files = available[case_id]
        images = []
        for modality in wanted:
            if layout.file_modality is None:
                images.append((next(iter(files.values())), layout.channel[modality]))
            elif layout.file_modality[modality] in files:
                images.append((files[layout.file_modality[modality]], None))
            else:
                expected = layout.image.format(case=case_id, modality=layout.file_modality[modality])
                raise MissingDataError(
                    f"{root / expected}: modality {modality!r} missing for case {case_id}; available: {sorted(files)}"
                )
        label_path = root / layout.label.format(case=case_id)
        check_not_broken_link(label_path)  # not a missing label: allow_unlabelled must not hide it
        if not label_path.is_file():
            if not allow_unlabelled:
                raise MissingDataError(f"{label_path}: label file missing for case {case_id} (pass allow_unlabelled=True to keep unlabelled cases)")
            label_path = None
        cases.append(BratsCase(case_id, tuple(images), label_path, layout.name))
    if not cases:
        raise MissingDataError(f"{root}: no case matches {layout.image.pattern!r}")
    return cases


@dataclass(frozen=True)
class _BratsOptions:
    slices: SliceOptions
    label: str
    label_convention: str


def _read_channels(images: Sequence[tuple[Path, int | None]]) -> list[Volume]:
    """Read each requested channel, opening every file once (MSD images hold four channels in one 4D file);
    a constant channel is refused (:func:`~hvae_pipeline.data.volume.check_not_constant`)."""
    opened: dict[Path, Volume] = {}
    channels = []
    for path, channel in images:
        if path not in opened:
            opened[path] = read_volume(path, allow_4d=channel is not None)
        volume = opened[path]
        if channel is None or volume.data.ndim == 3:
            if channel not in (None, 0):
                raise DataFormatError(f"{path}: expected a 4D multi-contrast volume, got shape {volume.data.shape}")
            check_not_constant(volume.data, str(path))
            channels.append(volume)
        elif channel >= volume.data.shape[3]:
            raise DataFormatError(f"{path}: has {volume.data.shape[3]} channels, channel {channel} was requested")
        else:
            check_not_constant(volume.data[..., channel], f"{path} (channel {channel})")
            channels.append(Volume(volume.data[..., channel], volume.affine, path))
    return channels


def prepare_brats_case(case: BratsCase, options: _BratsOptions) -> SliceColumns:
    """Read, check, resample and slice one BraTS case (runs in worker processes)."""
    channels = _read_channels(case.images)
    reference = channels[0]
    for other in channels[1:]:
        check_same_grid(reference, other)
    grid_shape = options.slices.grid_shape
    grid = grid_over_volume(reference.affine, reference.shape, grid_shape)
    resampled = [resample(c.data, c.affine, grid, grid_shape) for c in channels]
    if case.label is None:
        mask = np.zeros(grid_shape, dtype=np.uint8)
    else:
        labels = read_label_volume(case.label)
        check_same_grid(reference, labels)
        if options.label_convention == "auto":
            convention = detect_brats_convention(labels.data, case.layout, labels.path)
        else:
            convention = BRATS_CONVENTIONS[options.label_convention]
        target = convention.target(labels.data, options.label, labels.path)
        mask = resample_mask(target, labels, grid, grid_shape, case.patient_id)
    return volume_to_slices(resampled, mask, case.patient_id, case.layout, options.slices, labelled=case.label is not None)


def load_brats_slices(
    root: str | os.PathLike,
    modalities: Sequence[str] = ("flair",),
    label: str = "whole_tumor",
    size: int = 128,
    depth: int = 64,
    patients: Sequence[str] | None = None,
    *,
    label_convention: str = "auto",
    image_glob: str | None = None,
    label_glob: str | None = None,
    normalization: str = "minmax",
    min_tumour_area: int = 1,
    balance: bool = False,
    seed: int = 0,
    allow_unlabelled: bool = False,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | bool | None = None,
    progress: bool = False,
) -> Dataset:
    """Load BraTS volumes as 2D axial slices with tumour masks.

    Layouts are detected under ``root``: BraTS 2018-2021 ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``, BraTS
    2023+ ``<case>/<case>-{t2f,t1n,t1c,t2w,seg}.nii.gz``, MSD Task01 ``imagesTr/<case>.nii.gz`` (4D: FLAIR, T1w,
    T1gd, T2w) + ``labelsTr/<case>.nii.gz``. Any other layout is read with ``image_glob``/``label_glob``, e.g.
    ``image_glob="images/{case}_Tumor.nii.gz", label_glob="labels/{case}_Seg.nii.gz"``.

    Each volume is reoriented to closest RAS, resampled (trilinear for images, per-label for masks, see
    :func:`~hvae_pipeline.data.volume.resample_labels`) to ``size x size x depth`` over its whole field of view and
    cut into axial slices in the radiological display convention (nose up, patient right on image left,
    ``slice_index`` inferior -> superior).

    Args:
        root: dataset folder.
        modalities: channels to stack, in order. Official layouts accept ``flair, t1, t1ce, t2`` and the 2023
            names ``t2f, t1n, t1c, t2w`` for every release. With ``image_glob`` they are the values of its
            ``{modality}`` field (or, without that field, the single name of what each file holds).
        label: ``"whole_tumor"``, ``"tumor_core"``, ``"enhancing_tumor"`` (binary masks) or ``"multiclass"``
            (0 background, 1 NCR/NET, 2 ED, 3 ET whatever the release).
        size: in-plane output size (H = W).
        depth: number of axial slices after resampling (paper: 64).
        patients: only these patient ids (default: all).
        label_convention: ``"auto"`` (detected per case from layout and label values, see
            :func:`~hvae_pipeline.data.labels.detect_brats_convention`), or ``"brats2017"`` ({1, 2, 4}, BraTS
            2017-2021), ``"brats2023"`` ({1, 2, 3}), ``"msd"``, ``"binary"``.
        image_glob: image file pattern relative to ``root`` with a ``{case}`` field (and optionally ``{modality}``).
        label_glob: label file pattern with a ``{case}`` field.
        normalization: ``"minmax"`` per slice (default, as the paper), ``"zscore"`` per volume, or ``"none"``.
        min_tumour_area: keep slices with at least this many tumour pixels after resampling (1: any tumour).
        balance: apply the paper's area-balanced subsampling (:func:`~hvae_pipeline.data.balance.balance_by_area`).
        seed: seed of the balancing draw.
        allow_unlabelled: keep cases without a label file, with all-zero masks and no tumour filtering.
        num_proc: worker processes (parallel over patients).
        cache_dir: cache folder (default ``~/.cache/hvae_pipeline/slices`` or ``$HVAE_PIPELINE_CACHE``);
            ``False`` disables caching.
        progress: show a progress bar over patients.

    Returns:
        A :class:`datasets.Dataset` with the columns of :func:`~hvae_pipeline.data.features.slice_features`;
        ``source`` is the layout name (``brats2021``, ``brats2023``, ``msd`` or ``glob``).

    Raises:
        MissingDataError: no layout matches, or a file/modality/patient is missing (the message lists what exists).
        DataFormatError: corrupt file, NaN voxels, mismatched grids, unknown label values, or no tumour slice left.
    """
    if label not in BRATS_LABELS:
        raise ValueError(f"label={label!r}: expected one of {BRATS_LABELS}")
    if label_convention != "auto" and label_convention not in BRATS_CONVENTIONS:
        raise ValueError(f"label_convention={label_convention!r}: expected 'auto' or one of {sorted(BRATS_CONVENTIONS)}")
    slice_options = SliceOptions(size, depth, normalization, min_tumour_area)
    cases = find_brats_cases(Path(root), modalities, image_glob, label_glob, patients, allow_unlabelled)
    options = _BratsOptions(slice_options, label, label_convention)
    files = [path for case in cases for path, _ in case.images] + [case.label for case in cases if case.label]
    return load_slices(
        "brats",
        {"options": asdict(options), "modalities": list(modalities), "cases": [asdict(c) for c in cases]},
        files,
        functools.partial(prepare_brats_case, options=options),
        cases,
        root=Path(root),
        min_tumour_area=min_tumour_area,
        balance=balance,
        seed=seed,
        num_proc=num_proc,
        cache_dir=cache_dir,
        progress=progress,
    )
