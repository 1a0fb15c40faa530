"""SYNTHETIC phantoms for tests and demos: brain-like ellipses with tumour blobs. No real anatomy or patient data.

- :func:`make_phantom_slices`: a ready-made 2D slice dataset (same features as the real loaders), fast.
- :func:`write_phantom_tree`: phantom NIfTI volumes (or 2D TIFs) written in each official file layout, to
  exercise the loaders. The phantom is defined in world (RAS, mm) coordinates and sampled on each file's grid,
  so the same anatomy is stored whatever the affine (``orientation="LPS"`` gives identical slices once loaded).
  The tumour always sits in the patient's **left, anterior, superior** quadrant of the brain.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from datasets import Dataset
from PIL import Image

from .features import slice_features

PHANTOM_SLICES_PER_PATIENT = 16
BRATS_PHANTOM_LAYOUTS = ("brats2021", "brats2023", "msd", "glob")
HECKTOR_PHANTOM_LAYOUTS = ("hecktor2021", "hecktor2022", "hecktor-pet")
PHANTOM_LAYOUTS = (*BRATS_PHANTOM_LAYOUTS, *HECKTOR_PHANTOM_LAYOUTS, "lgg")

# Brain phantom, world mm (RAS): ellipsoid semi-axes, and tumour centre / radii of its nested sub-regions.
_BRAIN_AXES = np.array([65.0, 80.0, 60.0])
_TUMOUR_CENTRE = np.array([-25.0, 30.0, 20.0])  # patient left (-x), anterior (+y), superior (+z)
_TUMOUR_RADII = {"ED": 22.0, "ET": 14.0, "NCR": 8.0}  # oedema shell > enhancing ring > necrotic core
# Raw label values per release (see labels.py).
_RELEASE_LABELS = {
    "brats2021": {"NCR": 1, "ED": 2, "ET": 4},
    "brats2023": {"NCR": 1, "ED": 2, "ET": 3},
    "msd": {"NCR": 2, "ED": 1, "ET": 3},
    "glob": {"NCR": 1, "ED": 1, "ET": 1},  # already binarised, like the shared brats-msd-flair folder
}
# Brain, oedema, enhancing, necrosis intensities per modality, so each channel has its own contrast.
_CONTRASTS = {"flair": (1.0, 2.0, 1.6, 1.2), "t1": (1.0, 0.7, 0.8, 0.4), "t1ce": (1.0, 0.9, 2.5, 0.5), "t2": (1.0, 2.5, 1.8, 2.8)}
_FILE_MODALITY = {"brats2021": {m: m for m in _CONTRASTS}, "brats2023": {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}}


def make_phantom_slices(num_slices: int, size: int = 128, num_classes: int = 2, seed: int = 0) -> Dataset:
    """Synthetic 2D slices: a brain-like ellipse with a tumour blob (SYNTHETIC, for tests and demos).

    Args:
        num_slices: number of slices; every ``PHANTOM_SLICES_PER_PATIENT`` (16) consecutive slices share a
            ``patient_id`` (``"phantom-000"``, ...), so patient-level splits can be exercised.
        size: H = W in pixels.
        num_classes: mask classes including background: 2 gives a binary mask, K > 2 nested tumour zones with
            ids 1 (outer) .. K - 1 (inner).
        seed: random seed.

    Returns:
        A dataset with the standard slice features (1 channel, image in [0, 1], ``source="phantom"``).
    """
    if num_slices < 1 or size < 8 or num_classes < 2:
        raise ValueError(f"need num_slices >= 1, size >= 8, num_classes >= 2; got {num_slices}, {size}, {num_classes}")
    rng = np.random.default_rng(seed)
    n = num_slices
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")

    def per_slice(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(n, 1, 1)).astype(np.float32)

    brain = ((xx / per_slice(0.65, 0.85)) ** 2 + (yy / per_slice(0.75, 0.92)) ** 2) <= 1
    # Tumour centre well inside the brain; radius between 6 % and 22 % of the field of view.
    cx, cy, radius = per_slice(-0.35, 0.35), per_slice(-0.4, 0.4), per_slice(0.06, 0.22)
    distance = np.sqrt(((xx - cx) / (radius * per_slice(0.8, 1.2))) ** 2 + ((yy - cy) / radius) ** 2)
    tumour_classes = num_classes - 1
    mask = np.zeros((n, size, size), dtype=np.uint8)
    for class_id in range(1, tumour_classes + 1):
        mask[distance <= 1 - (class_id - 1) / tumour_classes] = class_id
    mask[~brain] = 0
    texture = 0.08 * np.sin(xx * per_slice(4, 9) + per_slice(0, 6)) * np.cos(yy * per_slice(4, 9))
    image = brain * (0.45 + texture) + (mask > 0) * (0.35 + 0.1 * mask / tumour_classes)
    image = image + rng.normal(0, 0.02, size=image.shape).astype(np.float32)
    low, high = image.min(axis=(1, 2), keepdims=True), image.max(axis=(1, 2), keepdims=True)
    image = ((image - low) / (high - low)).astype(np.float32)[:, None]
    columns = {
        "image": image,
        "mask": mask,
        "patient_id": [f"phantom-{i // PHANTOM_SLICES_PER_PATIENT:03d}" for i in range(n)],
        "slice_index": (np.arange(n) % PHANTOM_SLICES_PER_PATIENT).astype(np.int32),
        "tumour_area": np.count_nonzero(mask, axis=(1, 2)).astype(np.int32),
        "source": ["phantom"] * n,
    }
    return Dataset.from_dict(columns, features=slice_features(1, size, size))


def _affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: str, centre: np.ndarray) -> np.ndarray:
    """Affine of a grid centred on ``centre`` (world RAS mm), with axes running along ``orientation`` (e.g. "LPS")."""
    signs = np.array([{"R": 1, "L": -1}[orientation[0]], {"A": 1, "P": -1}[orientation[1]], {"S": 1, "I": -1}[orientation[2]]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(signs * np.asarray(spacing))
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def _world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (3, X, Y, Z) of every voxel centre."""
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    return np.tensordot(affine[:3, :3], ijk, axes=1) + affine[:3, 3, None, None, None]


def _brain_regions(world: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean maps of brain and tumour sub-regions (each voxel in at most one sub-region)."""
    brain = (((world / _BRAIN_AXES[:, None, None, None]) ** 2).sum(0)) <= 1
    distance = np.sqrt(((world - _TUMOUR_CENTRE[:, None, None, None]) ** 2).sum(0))
    return {
        "brain": brain,
        "NCR": distance <= _TUMOUR_RADII["NCR"],
        "ET": (distance > _TUMOUR_RADII["NCR"]) & (distance <= _TUMOUR_RADII["ET"]),
        "ED": (distance > _TUMOUR_RADII["ET"]) & (distance <= _TUMOUR_RADII["ED"]),
    }


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), path)


def _write_brats(root: Path, layout: str, case: str, shape, orientation: str, rng: np.random.Generator) -> None:
    affine = _affine(shape, (4.0, 4.0, 4.0), orientation, np.zeros(3))
    regions = _brain_regions(_world(shape, affine))
    images = {}
    for modality, (brain, oedema, enhancing, necrosis) in _CONTRASTS.items():
        image = brain * regions["brain"] + (oedema - brain) * regions["ED"] + (enhancing - brain) * regions["ET"]
        image = image + (necrosis - brain) * regions["NCR"] + rng.normal(0, 0.02, size=shape) * regions["brain"]
        images[modality] = 100.0 * image
    labels = sum(value * regions[name] for name, value in _RELEASE_LABELS[layout].items())
    if layout in _FILE_MODALITY:
        separator = "_" if layout == "brats2021" else "-"
        for modality, image in images.items():
            _save(image, affine, root / case / f"{case}{separator}{_FILE_MODALITY[layout][modality]}.nii.gz")
        _save(labels, affine, root / case / f"{case}{separator}seg.nii.gz")
    elif layout == "msd":
        _save(np.stack([images[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1), affine, root / "imagesTr" / f"{case}.nii.gz")
        _save(labels, affine, root / "labelsTr" / f"{case}.nii.gz")
    else:
        _save(images["flair"], affine, root / "images" / f"{case}_Tumor.nii.gz")
        _save(labels, affine, root / "labels" / f"{case}_Seg.nii.gz")


# Head-and-neck phantom, world mm: head top at z = 0; primary tumour (GTVp) and a lymph node (GTVn).
_GTVP_CENTRE, _GTVP_RADIUS = np.array([-10.0, 20.0, -100.0]), 12.0
_GTVN_CENTRE, _GTVN_RADIUS = np.array([30.0, 0.0, -130.0]), 8.0


def _write_hecktor(root: Path, layout: str, case: str, orientation: str, rng: np.random.Generator) -> None:
    def scan(spacing: float, shape: tuple[int, int, int]):
        affine = _affine(shape, (spacing,) * 3, orientation, np.array([0.0, 0.0, -150.0]))
        world = _world(shape, affine)
        x, y, z = world
        head = (x / 75) ** 2 + (y / 90) ** 2 + ((z + 90) / 90) ** 2 <= 1
        neck = (x / 55) ** 2 + (y / 60) ** 2 <= 1
        body = head | (neck & (z <= -90))
        gtvp = np.sqrt(((world - _GTVP_CENTRE[:, None, None, None]) ** 2).sum(0)) <= _GTVP_RADIUS
        gtvn = np.sqrt(((world - _GTVN_CENTRE[:, None, None, None]) ** 2).sum(0)) <= _GTVN_RADIUS
        return affine, body, gtvp, gtvn

    ct_affine, body, gtvp, gtvn = scan(2.0, (100, 110, 160))
    ct = np.where(body, 40.0, -1000.0) + 30.0 * (gtvp | gtvn) + rng.normal(0, 5, size=body.shape)
    pt_affine, pbody, pgtvp, pgtvn = scan(4.0, (50, 55, 80))
    pt = 1.0 * pbody + 7.0 * pgtvp + 4.0 * pgtvn + np.abs(rng.normal(0, 0.05, size=pbody.shape))
    if layout == "hecktor2021":
        _save(ct, ct_affine, root / f"{case}_ct.nii.gz")
        _save(pt, pt_affine, root / f"{case}_pt.nii.gz")
        _save(gtvp.astype(np.uint8), ct_affine, root / f"{case}_ct_gtvt.nii.gz")  # 2021: primary tumour only
    elif layout == "hecktor2022":
        _save(ct, ct_affine, root / "imagesTr" / f"{case}__CT.nii.gz")
        _save(pt, pt_affine, root / "imagesTr" / f"{case}__PT.nii.gz")
        _save(gtvp + 2 * gtvn, ct_affine, root / "labelsTr" / f"{case}.nii.gz")
    else:
        _save(pt, pt_affine, root / f"{case}__PT.nii.gz")


def _write_lgg(root: Path, case: str, seed: int) -> None:
    """LGG FLAIR layout: RGB TIFs (pre-contrast, FLAIR, post-contrast) + 0/255 masks."""
    slices = make_phantom_slices(6, size=64, seed=seed).with_format("numpy")
    (root / case).mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(slices, start=1):
        flair = (row["image"][0] * 255).astype(np.uint8)
        rgb = np.stack([flair // 2, flair, 255 - flair], axis=-1)
        Image.fromarray(rgb).save(root / case / f"{case}_{n}.tif")
        Image.fromarray((row["mask"] > 0).astype(np.uint8) * 255).save(root / case / f"{case}_{n}_mask.tif")


def write_phantom_tree(
    root: str | os.PathLike,
    layout: str,
    num_cases: int = 2,
    shape: tuple[int, int, int] = (40, 48, 36),
    orientation: str = "RAS",
    seed: int = 0,
) -> list[str]:
    """Write SYNTHETIC phantom cases in an official file layout (for tests; no real data).

    Args:
        root: output folder (created).
        layout: ``"brats2021"`` ({1, 2, 4} labels), ``"brats2023"`` ({1, 2, 3}), ``"msd"`` (4D images, MSD labels),
            ``"glob"`` (``images/<case>_Tumor.nii.gz`` + binary ``labels/<case>_Seg.nii.gz``, like the shared
            brats-msd-flair folder), ``"hecktor2021"`` (+ ``bbox.csv``), ``"hecktor2022"``, ``"hecktor-pet"``
            (PET only, no labels) or ``"lgg"`` (2D RGB TIF + mask pairs).
        num_cases: number of cases.
        shape: voxel grid of BraTS phantoms (4 mm voxels).
        orientation: axis codes of the saved affine (``"RAS"``, ``"LPS"``, ``"LAS"``...); the anatomy is the same.
        seed: noise seed.

    Returns:
        The case ids written, sorted.
    """
    if layout not in PHANTOM_LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {PHANTOM_LAYOUTS}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = {
        "brats2021": "BraTS2021_{:05d}", "brats2023": "BraTS-GLI-{:05d}-000", "msd": "BRATS_{:03d}", "glob": "BRATS_{:03d}",
        "lgg": "TCGA_CS_{:04d}",
    }
    cases = [names.get(layout, "CHUM-{:03d}").format(i + 1) for i in range(num_cases)]
    for case in cases:
        if layout in BRATS_PHANTOM_LAYOUTS:
            _write_brats(root, layout, case, shape, orientation, rng)
        elif layout == "lgg":
            _write_lgg(root, case, seed + len(case))
        else:
            _write_hecktor(root, layout, case, orientation, rng)
    if layout == "hecktor2021":
        # Official boxes are in ITK/LPS mm: RAS box x [-80, 64], y [-60, 84], z [-184, -40] written as LPS.
        with open(root / "bbox.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["PatientID", "x1", "x2", "y1", "y2", "z1", "z2"])
            for case in cases:
                writer.writerow([case, -64.0, 80.0, -84.0, 60.0, -184.0, -40.0])
    return sorted(cases)
