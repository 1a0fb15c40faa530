"""The real slices an evaluation is measured on: a data spec, loaded into patient-disjoint train and test tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from datasets import Dataset

from ..data import load_brats_slices, load_hecktor_slices, load_pair_slices, make_phantom_slices

DATA_KINDS = ("brats", "hecktor", "pairs", "phantom")
# Modality and label of each kind when none is given: FLAIR whole tumour (BraTS), PET primary tumour (HECKTOR).
DEFAULT_MODALITIES = {"brats": ("flair",), "hecktor": ("pt",), "phantom": ("phantom",)}
DEFAULT_LABELS = {"brats": "whole_tumor", "hecktor": "gtvp", "phantom": "tumour"}
PAIR_ONLY_FIELDS = ("mask_glob", "channels")


@dataclass(frozen=True)
class RealDataSpec:
    """Where the real slices come from and which patients play which part.

    Args:
        kind: ``"brats"``, ``"hecktor"``, ``"pairs"`` (a folder of 2D image/mask files, see
            :func:`~hvae_pipeline.data.load_pair_slices`) or ``"phantom"`` (SYNTHETIC ellipse phantoms, for tests).
        train_patients: patient ids whose slices train the segmenter (empty when only test slices are needed); for
            ``pairs`` the values of the patterns' ``{case}`` field.
        test_patients: held-out patient ids the segmenter and the generators are scored on.
        root: dataset folder (``brats``/``hecktor``/``pairs``).
        image_glob: image pattern with a ``{case}`` field: BraTS (optional), e.g. ``"images/{case}_Tumor.nii.gz"``,
            or pairs (required), e.g. ``"{case}/{case}_{index}.tif"``.
        label_glob: BraTS label pattern with a ``{case}`` field.
        mask_glob: pairs mask pattern with the image pattern's fields, e.g. ``"{case}/{case}_{index}_mask.tif"``;
            every non-zero mask value is tumour (as ``hvae-data prepare pairs``).
        channels: pairs: picture channels to keep, in order, e.g. ``(1,)`` for the green channel of an RGB file
            (default: all of them).
        modalities: image channels, in order (default: FLAIR for BraTS, PET for HECKTOR; not for pairs).
        label: target (default: whole tumour for BraTS, primary tumour GTVp for HECKTOR; not for pairs).
        size: slice side in pixels after resampling (must match the generators' ``sample_size``).
        depth: axial slices per resampled volume (paper: 64).
        min_tumour_area: keep slices with at least this many tumour pixels (1: every slice with tumour, as the paper).
        num_phantom_slices: slices made for ``kind="phantom"`` (16 per patient: ``phantom-000``, ``phantom-001``...).
        note: free text shown on top of every report, e.g. ``"SYNTHETIC HECKTOR-layout phantoms"``.
    """

    kind: str
    train_patients: tuple[str, ...]
    test_patients: tuple[str, ...]
    root: str | None = None
    image_glob: str | None = None
    label_glob: str | None = None
    mask_glob: str | None = None
    channels: tuple[int, ...] | None = None
    modalities: tuple[str, ...] | None = None
    label: str | None = None
    size: int = 128
    depth: int = 64
    min_tumour_area: int = 1
    num_phantom_slices: int = 128
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data kind {self.kind!r}: expected one of {DATA_KINDS}")
        if self.kind != "phantom" and not self.root:
            raise ValueError(f"data kind {self.kind!r} needs a root folder (--root)")
        self._check_pair_options()
        if not self.test_patients:
            raise ValueError("no test patients given (--test-patients): the scores need held-out patients")
        for name, patients in (("train", self.train_patients), ("test", self.test_patients)):
            repeated = sorted({p for p in patients if list(patients).count(p) > 1})
            if repeated:
                raise ValueError(f"{name} patients listed more than once: {repeated}")
        overlap = sorted(set(self.train_patients) & set(self.test_patients))
        if overlap:
            raise ValueError(
                f"test patients overlap the train patients: {overlap}. The test patients must be held out "
                "(no slice of a test patient may train the segmenter or the generators)"
            )
        if self.size < 8 or self.depth < 1 or self.min_tumour_area < 0 or self.num_phantom_slices < 1:
            raise ValueError(
                f"need size >= 8, depth >= 1, min_tumour_area >= 0, num_phantom_slices >= 1; got {self.size}, "
                f"{self.depth}, {self.min_tumour_area}, {self.num_phantom_slices}"
            )

    def _check_pair_options(self) -> None:
        """Refuse a pairs spec without its patterns, and pair-only or volume-only options given to the other kind."""
        if self.kind == "pairs":
            if not (self.image_glob and self.mask_glob):
                raise ValueError("data kind 'pairs' needs --image-glob and --mask-glob, e.g. "
                                 "'{case}/{case}_{index}.tif' and '{case}/{case}_{index}_mask.tif'")
            volume_only = [option for option, value in (("--label-glob", self.label_glob),
                                                        ("--modalities", self.modalities), ("--label", self.label))
                           if value is not None]
            if volume_only:
                raise ValueError(f"{', '.join(volume_only)}: not used by data kind 'pairs' (its masks are binary; "
                                 "pick picture channels with --channels)")
            if self.channels is not None and (not self.channels or min(self.channels) < 0):
                raise ValueError(f"--channels must be channel numbers >= 0, got {list(self.channels)}")
        elif self.mask_glob is not None or self.channels is not None:
            raise ValueError(f"--mask-glob and --channels apply to data kind 'pairs' only, not {self.kind!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (lists instead of tuples), stored with every result."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def identity(self) -> dict[str, Any]:
        """What defines the slices (everything but the free-text note): results of different identities never mix.

        The pair-only fields (``mask_glob``, ``channels``) enter the identity of ``pairs`` data only: the other kinds
        never set them, and records written before they existed keep matching.
        """
        left_out = {"note"} if self.kind == "pairs" else {"note", *PAIR_ONLY_FIELDS}
        return {key: value for key, value in self.as_dict().items() if key not in left_out}


@dataclass(frozen=True)
class RealSplit:
    """Real slices as tensors: images float32 ``(N, C, H, W)`` in ``[0, 1]``, masks uint8 ``(N, H, W)`` of 0/1.

    ``train_images``/``train_masks`` are empty (``N = 0``) when the spec names no train patient.
    """

    train_images: torch.Tensor
    train_masks: torch.Tensor
    test_images: torch.Tensor
    test_masks: torch.Tensor
    description: str


def _load(spec: RealDataSpec, patients: Sequence[str]) -> Dataset:
    if spec.kind == "pairs":  # masks binarised (any non-zero value is tumour), as `hvae-data prepare pairs` does
        return load_pair_slices(spec.root, spec.image_glob, spec.mask_glob, channels=spec.channels, size=spec.size,
                                patients=list(patients), min_tumour_area=spec.min_tumour_area)
    modalities = list(spec.modalities or DEFAULT_MODALITIES[spec.kind])
    label = spec.label or DEFAULT_LABELS[spec.kind]
    common = dict(size=spec.size, depth=spec.depth, patients=list(patients), min_tumour_area=spec.min_tumour_area)
    if spec.kind == "brats":
        return load_brats_slices(spec.root, modalities=modalities, label=label, image_glob=spec.image_glob,
                                 label_glob=spec.label_glob, **common)
    if spec.kind == "hecktor":
        return load_hecktor_slices(spec.root, modalities=modalities, label=label, **common)
    phantoms = make_phantom_slices(spec.num_phantom_slices, size=spec.size, seed=0)
    known = set(phantoms["patient_id"])
    unknown = sorted(set(patients) - known)
    if unknown:
        raise ValueError(f"phantom patients {unknown} do not exist; {spec.num_phantom_slices} phantom slices make "
                         f"patients {sorted(known)}")
    keep = np.isin(phantoms["patient_id"], list(patients))
    keep &= np.asarray(phantoms["tumour_area"]) >= spec.min_tumour_area
    return phantoms.select(np.flatnonzero(keep).tolist())


def _tensors(dataset: Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if len(dataset) == 0:
        raise ValueError(f"the {what} patients have no slice with a tumour area >= min_tumour_area")
    table = dataset.with_format("numpy")
    images = torch.from_numpy(np.asarray(table["image"], dtype=np.float32))
    # Binary targets: any tumour label counts (HECKTOR "gtv" and multi-class labels are not segmented per class).
    masks = torch.from_numpy((np.asarray(table["mask"]) > 0).astype(np.uint8))
    return images, masks


def load_real_split(spec: RealDataSpec) -> RealSplit:
    """Load the train and test patients' slices described by ``spec``.

    Raises:
        MissingDataError, DataFormatError: from the loaders (missing files or patients, corrupt volumes).
        ValueError: a split has no slice left.
    """
    test_images, test_masks = _tensors(_load(spec, spec.test_patients), "test")
    if spec.train_patients:
        train_images, train_masks = _tensors(_load(spec, spec.train_patients), "train")
    else:
        train_images, train_masks = test_images[:0], test_masks[:0]
    where = f" at {spec.root}" if spec.root else " (SYNTHETIC ellipse phantoms)"
    description = (
        f"{spec.kind}{where}: {len(spec.train_patients)} train patients ({len(train_images)} slices), "
        f"{len(spec.test_patients)} test patients ({len(test_images)} slices), {spec.size}x{spec.size} px"
    )
    if spec.note:
        description = f"{spec.note} -- {description}"
    return RealSplit(train_images, train_masks, test_images, test_masks, description)


def load_patient_slices(spec: RealDataSpec, patients: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The slices of ``patients`` under ``spec``'s loading settings, with whose they are.

    Returns:
        images float32 ``(N, C, H, W)``, masks uint8 ``(N, H, W)`` of 0/1, and the patient id of each slice ``(N,)``
        (so that subsets of patients are taken without loading again).

    Raises:
        MissingDataError, DataFormatError: from the loaders.
        ValueError: no slice is left.
    """
    dataset = _load(spec, patients)
    images, masks = _tensors(dataset, "requested")
    return images, masks, np.asarray(dataset["patient_id"])
