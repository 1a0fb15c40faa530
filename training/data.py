"""Turn the ``data`` section of a training config into in-memory tensors (slice sets here are small)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from datasets import Dataset, load_from_disk

from hvae_pipeline.data import load_brats_slices, load_hecktor_slices, load_pair_slices, make_phantom_slices

DATA_KINDS = ("brats", "hecktor", "pairs", "phantom", "disk")


def load_slice_dataset(data: dict[str, Any], patients: Sequence[str] | None) -> Dataset:
    """Load the slices of ``patients`` (``None``: every patient) as described by a config's ``data`` section.

    For ``kind: pairs`` the patients are the values of the patterns' ``{case}`` field, ``data.channels`` picks the
    picture channels and masks are binarised (any non-zero value is tumour), as ``hvae-data prepare pairs`` does.

    Raises:
        ValueError: the slices' channel count differs from the number of ``data.modalities`` (which name the
            channels and set the model's ``image_channels``).
    """
    dataset = _load(data, patients)
    channels = dataset.features["image"].shape[0]
    if channels != len(data["modalities"]):
        raise ValueError(
            f"data.modalities={data['modalities']!r} names {len(data['modalities'])} image channel(s) but the "
            f"{data['kind']} slices have {channels}: name one modality per channel"
            + (", or keep fewer picture channels with data.channels (e.g. [1])" if data["kind"] == "pairs" else "")
        )
    return dataset


def _load(data: dict[str, Any], patients: Sequence[str] | None) -> Dataset:
    kind = data["kind"]
    if kind not in DATA_KINDS:
        raise ValueError(f"data.kind={kind!r}: expected one of {DATA_KINDS}")
    if kind == "phantom":
        return _only_patients(make_phantom_slices(data["num_phantom_slices"], size=data["size"], seed=0), patients)
    if data["root"] is None:
        raise ValueError(f"data.root must be set for data.kind={kind!r}")
    common = dict(size=data["size"], min_tumour_area=data["min_tumour_area"], balance=data["balance"],
                  num_proc=data["num_proc"], patients=patients)
    if kind == "brats":
        return load_brats_slices(data["root"], modalities=data["modalities"], label=data["label"], depth=data["depth"],
                                 image_glob=data["image_glob"], label_glob=data["label_glob"], **common)
    if kind == "hecktor":
        return load_hecktor_slices(data["root"], modalities=data["modalities"], label=data["label"],
                                   depth=data["depth"], **common)
    if kind == "pairs":
        return load_pair_slices(data["root"], data["image_glob"], data["mask_glob"], channels=data["channels"],
                                **common)
    return _only_patients(load_from_disk(data["root"]), patients)


def _only_patients(dataset: Dataset, patients: Sequence[str] | None) -> Dataset:
    """The slices of ``patients`` (``None``: all); a patient without slices is an error, not an empty selection."""
    if patients is None:
        return dataset
    missing = sorted(set(patients) - set(dataset.unique("patient_id")))
    if missing:
        raise ValueError(f"data.patients: {missing} have no slices here; expected patients of "
                         f"{sorted(dataset.unique('patient_id'))}")
    wanted = set(patients)
    return dataset.filter(lambda patient: patient in wanted, input_columns="patient_id")


def dataset_to_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float32 (N, C, H, W), masks uint8 (N, H, W))`` of a slice dataset."""
    if len(dataset) == 0:
        raise ValueError("the training data holds no slice (check data.patients and data.min_tumour_area)")
    table = dataset.with_format("numpy")
    images = torch.from_numpy(np.asarray(table["image"], dtype=np.float32))
    masks = torch.from_numpy(np.asarray(table["mask"]).astype(np.uint8))
    return images, masks
