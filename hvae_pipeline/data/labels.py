"""Label conventions of the supported releases and the targets derived from them.

Raw label values are first mapped to release-independent class ids, then to the requested target.

BraTS class ids (used for ``label="multiclass"``): 0 background, 1 necrotic / non-enhancing core (NCR/NET),
2 oedema (ED/SNFH), 3 enhancing tumour (ET) -- i.e. the BraTS 2023+ numbering. Targets: ``whole_tumor`` = {1, 2, 3},
``tumor_core`` = {1, 3}, ``enhancing_tumor`` = {3}.

===============  ===========================  ==========================================
convention       raw values                   used for
===============  ===========================  ==========================================
``brats2017``    1 NCR/NET, 2 ED, 4 ET        BraTS 2017-2021 releases
``brats2023``    1 NCR, 2 ED, 3 ET            BraTS 2023+ (BraTS-GLI...), also shipped in the 2021 file layout
``msd``          1 ED, 2 non-enhancing, 3 ET  Medical Segmentation Decathlon Task01_BrainTumour
``binary``       1 whole tumour               already binarised masks (only ``whole_tumor``/``multiclass``)
===============  ===========================  ==========================================

HECKTOR class ids: 1 primary tumour (GTVp), 2 lymph nodes (GTVn); targets ``gtvp`` = {1}, ``gtvn`` = {2},
``gtv`` = {1, 2}. HECKTOR 2021 only annotates GTVt (primary): label 1, and ``gtvn`` is unavailable.

``label_convention="auto"`` (the default) is resolved per case by :func:`detect_brats_convention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import DataFormatError
from .volume import label_values

MULTICLASS = "multiclass"


@dataclass(frozen=True)
class LabelConvention:
    """How one release encodes its labels.

    Attributes:
        name: convention name.
        classes: raw label value -> class id.
        targets: target name -> class ids it covers.
    """

    name: str
    classes: Mapping[int, int]
    targets: Mapping[str, tuple[int, ...]]

    def target(self, labels: np.ndarray, label: str, path: Path) -> np.ndarray:
        """Map a raw label array to the requested target (uint8: 0/1, or class ids for ``"multiclass"``).

        Raises:
            DataFormatError: ``labels`` holds values the convention does not define (the message names ``path``).
            ValueError: ``label`` is not available in this convention.
        """
        values = set(label_values(labels))
        unknown = sorted(values - set(self.classes))
        if unknown:
            raise DataFormatError(
                f"{path}: unknown label value(s) {unknown} for the {self.name!r} convention "
                f"(expected {sorted(self.classes)}); pass label_convention= explicitly if the release is different"
            )
        if label != MULTICLASS and label not in self.targets:
            raise ValueError(
                f"label={label!r} is not available for {path} ({self.name!r} labels); choose from "
                f"{sorted(self.targets) + [MULTICLASS]}"
            )
        lookup = np.zeros(max(self.classes) + 1, dtype=np.uint8)
        for raw, class_id in self.classes.items():
            lookup[raw] = class_id
        class_ids = lookup[labels]
        if label == MULTICLASS:
            return class_ids
        return np.isin(class_ids, self.targets[label]).astype(np.uint8)


_BRATS_TARGETS = {"whole_tumor": (1, 2, 3), "tumor_core": (1, 3), "enhancing_tumor": (3,)}
BRATS_CONVENTIONS = {
    "brats2017": LabelConvention("brats2017", {1: 1, 2: 2, 4: 3}, _BRATS_TARGETS),
    "brats2023": LabelConvention("brats2023", {1: 1, 2: 2, 3: 3}, _BRATS_TARGETS),
    "msd": LabelConvention("msd", {1: 2, 2: 1, 3: 3}, _BRATS_TARGETS),
    "binary": LabelConvention("binary", {1: 1}, {"whole_tumor": (1,)}),
}
HECKTOR_CONVENTIONS = {
    "hecktor2021": LabelConvention("hecktor2021", {1: 1}, {"gtvp": (1,), "gtv": (1,)}),
    "hecktor2022": LabelConvention("hecktor2022", {1: 1, 2: 2}, {"gtvp": (1,), "gtvn": (2,), "gtv": (1, 2)}),
}
BRATS_LABELS = (*_BRATS_TARGETS, MULTICLASS)
HECKTOR_LABELS = ("gtvp", "gtvn", "gtv", MULTICLASS)


def detect_brats_convention(labels: np.ndarray, layout: str, path: Path) -> LabelConvention:
    """Choose the BraTS label convention of one case from its layout and label values.

    Rules: the MSD layout is always ``msd``. Otherwise a 4 means ``brats2017`` and a 3 means ``brats2023`` (both at
    once is an error). Values within {1, 2} mean the same in both BraTS conventions, so ``brats2023`` is used; with
    explicit glob patterns, masks holding only {0, 1} are taken as ``binary`` (already binarised, as in the shared
    ``brats-msd-flair`` folder). Pass ``label_convention=`` to override (e.g. MSD labels read through globs).
    """
    values = set(label_values(labels))
    if layout == "msd":
        return BRATS_CONVENTIONS["msd"]
    if {3, 4} <= values:
        raise DataFormatError(f"{path}: holds both label 3 and label 4; cannot tell the BraTS release (values {sorted(values)})")
    if 4 in values:
        return BRATS_CONVENTIONS["brats2017"]
    if layout == "glob" and values <= {1}:
        return BRATS_CONVENTIONS["binary"]
    return BRATS_CONVENTIONS["brats2023"]
