"""HECKTOR loaders: PET/CT head-and-neck volumes (2021 and 2022+ layouts, or PET-only folders) as 2D slices.

Geometry: PET (~4 mm) and CT (~1 mm) are resampled together onto one RAS-aligned ``size x size x depth`` grid
that tiles a head-and-neck box in world coordinates:

- when the case has a row in ``bbox.csv`` (HECKTOR 2021: ``PatientID,x1,x2,y1,y2,z1,z2`` in mm), that box. The
  official boxes are in ITK/DICOM (LPS) physical coordinates, so x and y are negated to nibabel's RAS;
- otherwise a fixed physical box (``crop_size_mm``, default 144 mm cubed as in HECKTOR 2021) whose top lies
  ``crop_offset_mm`` (default 40 mm) below the top of the body, centred left-right and front-back on the body in
  that range. The body is PET > ``BODY_SUV`` (or CT > ``BODY_HU`` when no PET is loaded); its top is the highest
  axial slice with at least ``BODY_MIN_AREA_MM2`` of body (the top of the field of view when the body reaches it,
  as in most HECKTOR PET, which are already cropped to the head and neck).

Intensities before the per-slice normalisation: PET is taken as SUV (HECKTOR ships SUV-normalised PET), clipped to
``[0, suv_max]`` (default 10) and divided by ``suv_max``; CT is windowed to ``ct_window`` (default soft tissue,
level 40 HU, width 400 HU) and scaled to [0, 1]. Outside a scan's field of view PET reads 0 and CT reads air.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from datasets import Dataset

from .build import load_slices
from .errors import DataFormatError, MissingDataError
from .labels import HECKTOR_CONVENTIONS, HECKTOR_LABELS
from .patterns import CasePattern, check_not_broken_link
from .slices import SliceColumns, SliceOptions, volume_to_slices
from .volume import (
    Volume,
    check_not_constant,
    check_same_grid,
    grid_over_box,
    read_label_volume,
    read_volume,
    resample,
    resample_mask,
)

HECKTOR_MODALITIES = ("ct", "pt")
BODY_SUV = 0.3
BODY_HU = -300.0
BODY_MIN_AREA_MM2 = 400.0
AIR_HU = -1024.0


@dataclass(frozen=True)
class _Layout:
    name: str
    image: CasePattern
    label: CasePattern
    file_modality: dict[str, str]
    convention: str


LAYOUTS = (
    _Layout("hecktor2022", CasePattern("imagesTr/{case}__{modality}.nii.gz"), CasePattern("labelsTr/{case}.nii.gz"),
            {"ct": "CT", "pt": "PT"}, "hecktor2022"),
    # PET/CT files directly in the folder, 2022 naming (the shared hecktor-pet folder: PET only, no labels).
    _Layout("hecktor2022-flat", CasePattern("{case}__{modality}.nii.gz"), CasePattern("labelsTr/{case}.nii.gz"),
            {"ct": "CT", "pt": "PT"}, "hecktor2022"),
    _Layout("hecktor2021", CasePattern("{case}_{modality}.nii.gz"), CasePattern("{case}_ct_gtvt.nii.gz"),
            {"ct": "ct", "pt": "pt"}, "hecktor2021"),
)


@dataclass(frozen=True)
class HecktorCase:
    """Files of one patient: ``images`` holds (modality, path) pairs for the requested modalities plus the scan
    used to find the body (PET when available); ``box_mm`` is the RAS crop box from ``bbox.csv``, if any."""

    patient_id: str
    images: tuple[tuple[str, Path], ...]
    label: Path | None
    box_mm: tuple[float, float, float, float, float, float] | None
    layout: str


@dataclass(frozen=True)
class HecktorIntensity:
    """PET/CT intensity preprocessing (see the module docstring).

    Attributes:
        suv_max: PET SUV clipping ceiling; PET is mapped to ``clip(suv, 0, suv_max) / suv_max``.
        ct_window: CT window (level, width) in HU, mapped to [0, 1].
    """

    suv_max: float = 10.0
    ct_window: tuple[float, float] = (40.0, 400.0)

    def __post_init__(self) -> None:
        if self.suv_max <= 0 or self.ct_window[1] <= 0:
            raise ValueError(f"suv_max and the CT window width must be > 0, got {self.suv_max}, {self.ct_window}")

    def apply(self, modality: str, data: np.ndarray) -> np.ndarray:
        if modality == "pt":
            return np.clip(data, 0.0, self.suv_max) / self.suv_max
        level, width = self.ct_window
        return np.clip((data - (level - width / 2)) / width, 0.0, 1.0)


def read_bbox_csv(path: Path) -> dict[str, tuple[float, ...]]:
    """Read a HECKTOR 2021 ``bbox.csv`` into RAS boxes ``(x_low, x_high, y_low, y_high, z_low, z_high)`` in mm."""
    boxes = {}
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                x1, x2, y1, y2, z1, z2 = (float(row[k]) for k in ("x1", "x2", "y1", "y2", "z1", "z2"))
                # LPS -> RAS: x and y change sign (and so swap their low/high ends).
                boxes[row["PatientID"]] = (-x2, -x1, -y2, -y1, z1, z2)
    except (KeyError, ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: expected columns PatientID,x1,x2,y1,y2,z1,z2 with numbers ({exc})") from exc
    return boxes


def _detect_layout(root: Path) -> _Layout:
    for layout in LAYOUTS:
        if CasePattern(layout.image.pattern.replace("{modality}", layout.file_modality["pt"])).find(root) or \
                CasePattern(layout.image.pattern.replace("{modality}", layout.file_modality["ct"])).find(root):
            return layout
    raise MissingDataError(
        f"{root}: no known HECKTOR layout found (looked for {', '.join(l.image.pattern for l in LAYOUTS)} "
        "with modality PT/CT or pt/ct)"
    )


def find_hecktor_cases(
    root: Path, modalities: Sequence[str] = ("pt",), patients: Sequence[str] | None = None, allow_unlabelled: bool = False
) -> tuple[_Layout, list[HecktorCase]]:
    """List the cases of a HECKTOR folder and check that every requested file exists (see :func:`load_hecktor_slices`)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"{root}: dataset folder not found")
    if isinstance(modalities, str) or not modalities or set(modalities) - set(HECKTOR_MODALITIES):
        raise ValueError(f"modalities={modalities!r}: expected a non-empty sequence of {HECKTOR_MODALITIES}")
    layout = _detect_layout(root)
    file_to_modality = {name: modality for modality, name in layout.file_modality.items()}
    available: dict[str, dict[str, Path]] = {}
    for path, fields in layout.image.find(root).items():
        # Other files can match the loose 2021 pattern (e.g. "<case>_ct_gtvt"): keep only real modalities.
        if fields["modality"] in file_to_modality:
            available.setdefault(fields["case"], {})[file_to_modality[fields["modality"]]] = path
    if patients is not None:
        missing = sorted(set(patients) - set(available))
        if missing:
            raise MissingDataError(f"{root}: patients {missing} not found ({len(available)} cases available)")
    bbox_file = root / "bbox.csv"
    boxes = read_bbox_csv(bbox_file) if bbox_file.is_file() else {}
    cases = []
    for case_id in sorted(available if patients is None else patients):
        files = available[case_id]
        for modality in modalities:
            if modality not in files:
                expected = root / layout.image.format(case=case_id, modality=layout.file_modality[modality])
                raise MissingDataError(f"{expected}: modality {modality!r} missing for case {case_id}; available: {sorted(files)}")
        label = root / layout.label.format(case=case_id)
        check_not_broken_link(label)  # not a missing label: allow_unlabelled must not hide it
        if not label.is_file():
            if not allow_unlabelled:
                raise MissingDataError(
                    f"{label}: no label file for case {case_id}; pass allow_unlabelled=True to load its slices "
                    "with all-zero masks and no tumour filtering"
                )
            label = None
        # The body is found on PET when available (its outline is sharper than CT's couch and blankets).
        body = "pt" if "pt" in files else "ct"
        images = tuple((m, files[m]) for m in dict.fromkeys((*modalities, body)))
        cases.append(HecktorCase(case_id, images, label, boxes.get(case_id), layout.name))
    if not cases:
        raise MissingDataError(f"{root}: no case matches {layout.image.pattern!r}")
    return layout, cases


def head_and_neck_box(body: Volume, modality: str, size_mm: Sequence[float], offset_mm: float) -> np.ndarray:
    """The default crop box (see the module docstring) as ``[[x_low, y_low, z_low], [x_high, y_high, z_high]]``.

    Args:
        body: the PET (``modality="pt"``) or CT (``"ct"``) volume, RAS-oriented.
        modality: which threshold defines the body.
        size_mm: box extent (x, y, z) in mm.
        offset_mm: distance from the top of the body to the top of the box.
    """
    inside = body.data > (BODY_SUV if modality == "pt" else BODY_HU)
    voxel_mm = np.abs(np.linalg.det(body.affine[:3, :3])) / abs(body.affine[2, 2])  # in-plane voxel area
    slices = np.flatnonzero(inside.sum(axis=(0, 1)) * voxel_mm >= BODY_MIN_AREA_MM2)
    if slices.size == 0:
        raise DataFormatError(f"{body.path}: no body found (no axial slice with {BODY_MIN_AREA_MM2} mm2 above the body threshold)")
    top_index = slices.max()
    z_top = (body.affine @ [0, 0, top_index + 0.5, 1])[2]
    z_high = z_top - offset_mm
    z_low = z_high - size_mm[2]
    # Body centre (x, y) over the slices of the box, so the box follows the neck rather than the shoulders' midpoint.
    k = np.arange(body.shape[2])
    z_of_k = (body.affine @ np.stack([np.zeros_like(k), np.zeros_like(k), k, np.ones_like(k)]))[2]
    in_box = inside[:, :, (z_of_k >= z_low) & (z_of_k <= z_high)]
    if not in_box.any():
        in_box = inside
    i, j = np.nonzero(in_box.any(axis=2))
    centre = body.affine @ [i.mean(), j.mean(), 0, 1]
    half = np.asarray(size_mm[:2], float) / 2
    return np.array([[centre[0] - half[0], centre[1] - half[1], z_low], [centre[0] + half[0], centre[1] + half[1], z_high]])


@dataclass(frozen=True)
class _HecktorOptions:
    slices: SliceOptions
    modalities: tuple[str, ...]
    label: str
    convention: str
    intensity: HecktorIntensity
    crop_size_mm: tuple[float, float, float]
    crop_offset_mm: float


def prepare_hecktor_case(case: HecktorCase, options: _HecktorOptions) -> SliceColumns:
    """Read, crop, resample and slice one HECKTOR case (runs in worker processes)."""
    volumes = {modality: read_volume(path) for modality, path in case.images}
    for volume in volumes.values():
        check_not_constant(volume.data, str(volume.path))
    if case.box_mm is not None:
        x0, x1, y0, y1, z0, z1 = case.box_mm
        box = np.array([[x0, y0, z0], [x1, y1, z1]])
    else:
        body = "pt" if "pt" in volumes else "ct"
        box = head_and_neck_box(volumes[body], body, options.crop_size_mm, options.crop_offset_mm)
    grid_shape = options.slices.grid_shape
    grid = grid_over_box(box[0], box[1], grid_shape)
    channels = [
        options.intensity.apply(m, resample(volumes[m].data, volumes[m].affine, grid, grid_shape, 0.0 if m == "pt" else AIR_HU))
        for m in options.modalities
    ]
    if case.label is None:
        mask = np.zeros(grid_shape, dtype=np.uint8)
    else:
        labels = read_label_volume(case.label)
        if "ct" in volumes:  # HECKTOR labels are drawn on the CT grid
            check_same_grid(volumes["ct"], labels)
        target = HECKTOR_CONVENTIONS[options.convention].target(labels.data, options.label, labels.path)
        mask = resample_mask(target, labels, grid, grid_shape, case.patient_id)
    return volume_to_slices(channels, mask, case.patient_id, case.layout, options.slices, labelled=case.label is not None)


def load_hecktor_slices(
    root: str | os.PathLike,
    modalities: Sequence[str] = ("pt",),
    label: str = "gtvp",
    size: int = 128,
    depth: int = 64,
    patients: Sequence[str] | None = None,
    *,
    suv_max: float = 10.0,
    ct_window: tuple[float, float] = (40.0, 400.0),
    crop_size_mm: tuple[float, float, float] = (144.0, 144.0, 144.0),
    crop_offset_mm: float = 40.0,
    normalization: str = "minmax",
    min_tumour_area: int = 1,
    balance: bool = False,
    seed: int = 0,
    allow_unlabelled: bool = False,
    num_proc: int = 1,
    cache_dir: str | os.PathLike | bool | None = None,
    progress: bool = False,
) -> Dataset:
    """Load HECKTOR PET/CT head-and-neck volumes as 2D axial slices with tumour masks.

    Layouts detected under ``root``: HECKTOR 2022+ ``imagesTr/<case>__{CT,PT}.nii.gz`` + ``labelsTr/<case>.nii.gz``
    (1 GTVp, 2 GTVn); the same files directly in ``root`` (e.g. PET-only folders); HECKTOR 2021
    ``<case>_{ct,pt}.nii.gz`` + ``<case>_ct_gtvt.nii.gz`` (GTVt = primary) with an optional ``bbox.csv``.
    Cropping, resampling and intensity defaults are described in the module docstring; slices follow the
    radiological display convention (nose up, patient right on image left, inferior -> superior).

    Args:
        root: dataset folder.
        modalities: channels to stack, in order, among ``"pt"`` and ``"ct"``.
        label: ``"gtvp"`` (primary tumour), ``"gtvn"`` (nodes, 2022+ only), ``"gtv"`` (both) or ``"multiclass"``
            (0 background, 1 GTVp, 2 GTVn).
        size: in-plane output size (H = W).
        depth: number of axial slices across the crop box.
        patients: only these patient ids (default: all).
        suv_max: PET clipping ceiling in SUV.
        ct_window: CT window (level, width) in HU.
        crop_size_mm: default crop box extent (x, y, z) in mm when ``bbox.csv`` has no row for the case.
        crop_offset_mm: distance from the top of the body to the top of the default box.
        normalization: ``"minmax"`` per slice (default), ``"zscore"`` per volume, or ``"none"`` (keeps the
            [0, 1] SUV/HU scaling).
        min_tumour_area: keep slices with at least this many tumour pixels after resampling.
        balance: apply the paper's area-balanced subsampling.
        seed: seed of the balancing draw.
        allow_unlabelled: load cases without a label file with all-zero masks and every slice kept; their
            ``source`` ends in ``"-unlabelled"``. Without it, a missing label is an error.
        num_proc: worker processes (parallel over patients).
        cache_dir: cache folder (default ``~/.cache/hvae_pipeline/slices``); ``False`` disables caching.
        progress: show a progress bar over patients.
    """
    if label not in HECKTOR_LABELS:
        raise ValueError(f"label={label!r}: expected one of {HECKTOR_LABELS}")
    if len(crop_size_mm) != 3 or min(crop_size_mm) <= 0:
        raise ValueError(f"crop_size_mm must be three positive lengths, got {crop_size_mm}")
    slice_options = SliceOptions(size, depth, normalization, min_tumour_area)
    layout, cases = find_hecktor_cases(Path(root), modalities, patients, allow_unlabelled)
    if label == "gtvn" and layout.convention == "hecktor2021":
        raise ValueError(f"{root}: label='gtvn' is not annotated in HECKTOR 2021 (only the primary tumour, GTVt)")
    options = _HecktorOptions(
        slice_options, tuple(modalities), label, layout.convention, HecktorIntensity(suv_max, tuple(ct_window)),
        tuple(float(v) for v in crop_size_mm), float(crop_offset_mm),
    )
    files = [path for case in cases for _, path in case.images] + [case.label for case in cases if case.label]
    return load_slices(
        "hecktor",
        {"options": asdict(options), "cases": [asdict(c) for c in cases]},
        files,
        functools.partial(prepare_hecktor_case, options=options),
        cases,
        root=Path(root),
        min_tumour_area=min_tumour_area,
        balance=balance,
        seed=seed,
        num_proc=num_proc,
        cache_dir=cache_dir,
        progress=progress,
    )
