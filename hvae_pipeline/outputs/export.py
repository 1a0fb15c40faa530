"""Writing paired samples to files: PNG or NIfTI pairs, a ``datasets`` dataset or a zip archive, with a manifest.

One implementation serves ``hvae-generate``, the demo's Download tab, the Python API (:func:`export_samples`) and the
pixels of ``HVAEPipeline(..., output_type="pil")``. Layouts (``NNNNN`` numbers the pairs from 0):

- Folder (``hvae-generate``, :func:`export_samples`): ``images/sample_NNNNN.png`` (8-bit grey or RGB; ``.npy`` floats
  for images of more than 3 channels) with ``masks/sample_NNNNN.png`` (class ids, 0/1 for binary masks); or both as
  ``.nii.gz`` (``"nifti"``: x, y, one slice, and a 4th axis of modalities only for images of several channels: a
  one-channel image has the mask's shape); or ``dataset/`` (``"dataset"``: ``save_to_disk`` with a
  ``preview`` image column and the dataset card ``dataset/README.md``). Then ``manifest.csv`` and ``manifest.json``
  (file names, tumour area, seed; the JSON adds the model and settings) and ``preview.png`` (image | mask | overlay
  of the first pairs).
- Zip (the demo): the PNG pairs, ``images.nii.gz`` / ``masks.nii.gz`` (every sample stacked: sample ``i`` is slice
  ``i``) and ``manifest.csv`` / ``manifest.json`` (with each pair's NIfTI slice).

Folders and archives are staged and renamed into place by :func:`~hvae_pipeline.storage.output_folder.atomic_directory`: an
interrupted export leaves nothing behind, and only an earlier export's own files are ever replaced.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import PIL.Image
import torch

from ..hub.model_card import generating_model
from ..storage.output_folder import atomic_directory
from .visualization import image_to_uint8, overlay, sample_grid

if TYPE_CHECKING:  # imported where used: the pipeline imports this module, and `datasets` is slow to import
    from datasets import Dataset

    from ..data.cards import GeneratingModel
    from ..pipeline import HVAEPipeline, HVAEPipelineOutput

PAIR_FORMATS = ("png", "nifti")
FOLDER_FORMATS = (*PAIR_FORMATS, "dataset")
# What a folder export writes: overwriting replaces a folder that holds only these (see hvae_pipeline.storage.output_folder).
FOLDER_OUTPUTS = ("images/", "images/sample_*", "masks/", "masks/sample_*", "dataset/", "dataset/**", "manifest.csv",
                  "manifest.json", "preview.png")
PREVIEW_PAIRS = 16
PREVIEW_COLUMN = "preview"
SYNTHETIC_COLUMNS = {
    "image": "float32 (C, H, W) in [0, 1], the generated slice",
    "mask": "uint8 (H, W) class ids (0 background, 1 tumour for binary masks)",
    "patient_id": '"synthetic" (no patient)',
    "slice_index": "number of the pair in the order drawn",
    "tumour_area": "tumour (non-zero) pixels of the mask",
    "source": '"synthetic:" and the generating model',
    PREVIEW_COLUMN: "PNG of the slice with its tumour coloured over it (for viewers)",
}


# ------------------------------------------------------------------------------------------------ where files go
class FileSink(Protocol):
    """Where exported files go, addressed by ``/``-separated names relative to the export's root."""

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` as the file ``name``."""


@dataclass(frozen=True)
class FolderSink:
    """Files in a folder (subfolders created as needed)."""

    root: Path

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@dataclass(frozen=True)
class ZipSink:
    """Files in an open zip archive."""

    archive: zipfile.ZipFile

    def write(self, name: str, data: bytes) -> None:
        self.archive.writestr(name, data)


# ------------------------------------------------------------------------------------------------ encodings
def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG file of uint8 ``pixels`` ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """A ``.npy`` file of ``array`` (exact values)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def nifti_bytes(volume: np.ndarray) -> bytes:
    """A ``.nii.gz`` file of ``volume`` (identity affine), with no time stamp: the same samples give the same bytes."""
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes(), mtime=0)


# ------------------------------------------------------------------------------------------------ pairs and manifest
def write_pair(sink: FileSink, index: int, image: np.ndarray, mask: np.ndarray,
               file_format: str = "png") -> tuple[str, str]:
    """Write one pair as ``images/sample_NNNNN.*`` and ``masks/sample_NNNNN.*``.

    Args:
        sink: Where the files go.
        index: The pair's number ``NNNNN``.
        image: ``(H, W, C)`` floats in ``[0, 1]``.
        mask: ``(H, W)`` uint8 class ids.
        file_format: ``"png"`` (8-bit grey or RGB pictures; ``.npy`` floats beyond 3 channels) or ``"nifti"``.

    Returns:
        The names of the image and mask files.
    """
    stem = f"sample_{index:05d}"
    if file_format == "nifti":
        image_name, mask_name = f"images/{stem}.nii.gz", f"masks/{stem}.nii.gz"
        # NIfTI axes are (x, y, z, modality): one axial slice whose rows run along y, modalities on the 4th axis (none
        # for one channel, so that image and mask have the same shape).
        volume = np.transpose(image, (1, 0, 2))[:, :, None, :]
        sink.write(image_name, nifti_bytes((volume[..., 0] if image.shape[-1] == 1 else volume).astype(np.float32)))
        sink.write(mask_name, nifti_bytes(mask.T[:, :, None].astype(np.uint8)))
        return image_name, mask_name
    if file_format != "png":
        raise ValueError(f"`file_format` must be one of {PAIR_FORMATS}, got {file_format!r}")
    if image.shape[-1] in (1, 3):
        image_name = f"images/{stem}.png"
        sink.write(image_name, png_bytes(image_to_uint8(image)))
    else:  # more modalities than a PNG holds: keep the exact floats
        image_name = f"images/{stem}.npy"
        sink.write(image_name, npy_bytes(image))
    sink.write(f"masks/{stem}.png", png_bytes(mask))  # class ids, not scaled for viewing: readers get the labels
    return image_name, f"masks/{stem}.png"


def write_pairs(sink: FileSink, images: np.ndarray, masks: np.ndarray, first_index: int = 0,
                file_format: str = "png") -> list[tuple[str, str]]:
    """Write pairs numbered from ``first_index`` (see :func:`write_pair`); return their ``(image, mask)`` names."""
    return [write_pair(sink, first_index + offset, image, mask, file_format)
            for offset, (image, mask) in enumerate(zip(images, masks))]


def write_nifti_stacks(sink: FileSink, images: np.ndarray, masks: np.ndarray) -> None:
    """Write every sample into two volumes, ``images.nii.gz`` (float32: x, y, sample, channel) and ``masks.nii.gz``
    (uint8: x, y, sample); sample ``i`` is axial slice ``i``."""
    # Rows of a slice run along y, the samples stack along z.
    sink.write("images.nii.gz", nifti_bytes(np.transpose(images, (2, 1, 0, 3)).astype(np.float32)))
    sink.write("masks.nii.gz", nifti_bytes(np.transpose(masks, (2, 1, 0)).astype(np.uint8)))


def manifest_rows(names: Sequence[tuple[str, str]], tumour_areas: Sequence[int], first_index: int = 0,
                  **fields: Any) -> list[dict[str, Any]]:
    """One manifest row per pair: ``index``, ``image``, ``mask``, ``tumour_area``, then ``fields`` (e.g. ``seed``)."""
    return [{"index": first_index + offset, "image": image, "mask": mask, "tumour_area": int(area), **fields}
            for offset, ((image, mask), area) in enumerate(zip(names, tumour_areas))]


def write_manifest(sink: FileSink, rows: Sequence[dict[str, Any]], header: dict[str, Any]) -> None:
    """Write ``manifest.csv`` (the rows) and ``manifest.json`` (``header`` plus the rows as ``"samples"``)."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    sink.write("manifest.csv", table.getvalue().encode())
    sink.write("manifest.json", json.dumps({**header, "samples": list(rows)}, indent=2).encode())


# ------------------------------------------------------------------------------------------------ datasets
def add_preview_column(dataset: "Dataset") -> "Dataset":
    """``dataset`` with a ``preview`` column (``datasets.Image``): each slice (first channel) with its tumour coloured
    over it, as PNG, so that the Hub's dataset viewer shows the pairs (it cannot show float arrays).

    Args:
        dataset: A slice dataset (``image`` float ``(C, H, W)`` in ``[0, 1]``, ``mask`` ``(H, W)`` class ids).
    """
    from datasets import Image

    previews = [
        {"bytes": png_bytes(overlay(image[0], mask)), "path": None}
        for batch in dataset.with_format("numpy", columns=["image", "mask"]).iter(batch_size=256)
        for image, mask in zip(batch["image"], batch["mask"])
    ]
    return dataset.add_column(PREVIEW_COLUMN, previews, feature=Image())


def synthetic_dataset(images: np.ndarray, masks: np.ndarray, tumour_areas: np.ndarray, source: str) -> "Dataset":
    """Generated pairs as a slice dataset (the loaders' columns, see :func:`hvae_pipeline.data.slice_features`) with
    a ``preview`` column.

    Args:
        images: ``(N, H, W, C)`` floats in ``[0, 1]``.
        masks: ``(N, H, W)`` uint8 class ids.
        tumour_areas: ``(N,)`` tumour pixels per mask.
        source: The ``source`` of every row (say which model, never a local folder path).
    """
    from datasets import Dataset

    from ..data.features import slice_features

    channels_first = np.transpose(images, (0, 3, 1, 2))
    records = {
        "image": list(channels_first),
        "mask": list(masks),
        "patient_id": ["synthetic"] * len(masks),
        "slice_index": list(range(len(masks))),
        "tumour_area": [int(area) for area in tumour_areas],
        "source": [source] * len(masks),
    }
    return add_preview_column(Dataset.from_dict(records, features=slice_features(*channels_first.shape[1:])))


def save_dataset(dataset: "Dataset", folder: Path, card: Any) -> None:
    """``save_to_disk`` the dataset into ``folder`` with its card as ``folder/README.md`` (the Hub reads it there).

    Args:
        dataset: The dataset.
        folder: A new folder (inside a staging folder: see :mod:`hvae_pipeline.storage.output_folder`).
        card: A ``huggingface_hub.DatasetCard`` (see :mod:`hvae_pipeline.data.cards`).
    """
    from ..data.cards import CARD_FILE

    dataset.save_to_disk(str(folder))
    card.save(Path(folder) / CARD_FILE)


# ------------------------------------------------------------------------------------------------ exports
class SampleFolderWriter:
    """Writes pairs into an empty (staging) folder in the folder layout, batch by batch as they are sampled.

    PNG and NIfTI pairs are written as they arrive, so memory does not grow with the number of pairs; the dataset
    format keeps them until :meth:`finish` (``save_to_disk`` writes one table).

    Args:
        folder: The folder (a staging folder from :func:`~hvae_pipeline.storage.output_folder.atomic_directory`).
        file_format: One of :data:`FOLDER_FORMATS`.
        **row_fields: Values added to every manifest row (e.g. ``seed=0``).
    """

    def __init__(self, folder: Path, file_format: str = "png", **row_fields: Any) -> None:
        if file_format not in FOLDER_FORMATS:
            raise ValueError(f"`file_format` must be one of {FOLDER_FORMATS}, got {file_format!r}")
        self.folder = Path(folder)
        self.file_format = file_format
        self.row_fields = row_fields
        self.rows: list[dict[str, Any]] = []
        self._images: list[np.ndarray] = []  # every pair for a dataset, else those the preview shows
        self._masks: list[np.ndarray] = []

    def add(self, images: np.ndarray, masks: np.ndarray, tumour_areas: np.ndarray) -> None:
        """Write a batch: images ``(B, H, W, C)`` floats in ``[0, 1]``, masks ``(B, H, W)`` uint8, their areas."""
        if self.file_format == "dataset":  # the pair's row of dataset/ (load_from_disk("dataset")[index])
            first = len(self.rows)
            names = [(f"dataset[{index}]['image']", f"dataset[{index}]['mask']")
                     for index in range(first, first + len(masks))]
            kept = len(masks)
        else:
            names = write_pairs(FolderSink(self.folder), images, masks, len(self.rows), self.file_format)
            kept = max(PREVIEW_PAIRS - len(self.rows), 0)
        self.rows += manifest_rows(names, tumour_areas, len(self.rows), **self.row_fields)
        self._images.append(images[:kept])
        self._masks.append(masks[:kept])

    def finish(self, header: dict[str, Any], model: "GeneratingModel",
               sampling: dict[str, Any]) -> list[dict[str, Any]]:
        """Write the dataset (``"dataset"`` format), the manifest and the preview; return the manifest rows.

        Args:
            header: What ``manifest.json`` records besides the rows (the model, the settings).
            model: The generating model, for the dataset's rows and card.
            sampling: The sampling settings the dataset card lists (no local paths).

        Raises:
            ValueError: No pair was added.
        """
        if not self.rows:
            raise ValueError("no pairs to export: add at least one batch first")
        images, masks = np.concatenate(self._images), np.concatenate(self._masks)
        if self.file_format == "dataset":
            from ..data.cards import synthetic_dataset_card

            areas = [row["tumour_area"] for row in self.rows]
            card = synthetic_dataset_card(model, len(self.rows), sampling, SYNTHETIC_COLUMNS)
            save_dataset(synthetic_dataset(images, masks, areas, f"synthetic:{model.name}"), self.folder / "dataset",
                         card)
        write_manifest(FolderSink(self.folder), self.rows, header)
        sample_grid(images[:PREVIEW_PAIRS], masks[:PREVIEW_PAIRS]).save(self.folder / "preview.png")
        return self.rows


def as_numpy_pairs(samples: "HVAEPipelineOutput") -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, H, W, C)`` float32 and masks ``(N, H, W)`` uint8 of a pipeline output of type ``"np"`` or
    ``"pt"`` (``"pil"`` pictures are rounded to 8 bits and binary masks scaled to 0/255: they are refused)."""
    if isinstance(samples.images, list):
        raise ValueError("export needs samples drawn with output_type='np' or 'pt', got PIL images (rounded to 8 bits, "
                         "masks scaled for viewing)")
    if torch.is_tensor(samples.images):
        return samples.images.permute(0, 2, 3, 1).cpu().numpy(), samples.masks.cpu().numpy().astype(np.uint8)
    return np.asarray(samples.images), np.asarray(samples.masks, dtype=np.uint8)


def export_samples(
    samples: "HVAEPipelineOutput",
    folder: str | os.PathLike,
    file_format: str = "png",
    *,
    overwrite: bool = False,
    pipeline: "HVAEPipeline | None" = None,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Write samples to ``folder`` in the layout of ``hvae-generate`` (see the module doc), staged and renamed.

    Args:
        samples: A pipeline output drawn with ``output_type="np"`` or ``"pt"``.
        folder: The output folder: new, empty, or an earlier export (with ``overwrite``).
        file_format: ``"png"``, ``"nifti"`` or ``"dataset"``.
        overwrite: Replace an earlier export in ``folder`` (never files it did not write).
        pipeline: The pipeline that drew them, named in the manifest and the dataset card (licence, training data).
        settings: The sampling settings, recorded in the manifest and the dataset card.

    Returns:
        The manifest rows.

    Raises:
        OutputFolderError: ``folder`` may not be written (it holds other files, or is not empty without
            ``overwrite``).
        ValueError: An unknown ``file_format`` or PIL samples.
    """
    if file_format not in FOLDER_FORMATS:
        raise ValueError(f"`file_format` must be one of {FOLDER_FORMATS}, got {file_format!r}")
    from ..data.cards import GeneratingModel

    images, masks = as_numpy_pairs(samples)
    model = generating_model(pipeline) if pipeline is not None else GeneratingModel("an unnamed model", None)
    settings = dict(settings or {})
    with atomic_directory(Path(folder), FOLDER_OUTPUTS, overwrite=overwrite, argument="folder") as staging:
        writer = SampleFolderWriter(staging, file_format)
        writer.add(images, masks, np.asarray(samples.tumour_areas))
        return writer.finish({"model": model.name, "settings": settings}, model, settings)


def write_samples_zip(
    folder: str | os.PathLike,
    name: str,
    images: np.ndarray,
    masks: np.ndarray,
    tumour_areas: np.ndarray,
    header: dict[str, Any],
    **row_fields: Any,
) -> Path:
    """Write the zip layout (see the module doc) as ``folder/name``, the only file of the new or empty ``folder``.

    The archive is written in a staging folder beside ``folder`` and renamed into place, so no reader sees half an
    archive and a failure leaves nothing.

    Args:
        folder: A new or empty folder for the archive.
        name: The archive's file name.
        images: ``(N, H, W, C)`` floats in ``[0, 1]``.
        masks: ``(N, H, W)`` uint8 class ids.
        tumour_areas: ``(N,)`` tumour pixels per mask.
        header: What ``manifest.json`` records besides the rows (model, seed, settings).
        **row_fields: Values added to every manifest row (e.g. ``seed=0``).

    Returns:
        The archive's path.
    """
    with atomic_directory(Path(folder), (name,), argument="archive folder") as staging:
        with zipfile.ZipFile(staging / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            sink = ZipSink(archive)
            names = write_pairs(sink, images, masks)
            write_nifti_stacks(sink, images, masks)
            rows = [{**row, "nifti_slice": row["index"]} for row in manifest_rows(names, tumour_areas, **row_fields)]
            write_manifest(sink, rows, header)
    return Path(folder) / name
