"""Data loading: medical volumes and 2D image/mask pairs as typed 2D slice datasets.

Every loader returns a :class:`datasets.Dataset` with the features of :func:`slice_features` (see
:mod:`hvae_pipeline.data.features` for the int64 note on ``with_format``). Display convention of all slices
(:mod:`hvae_pipeline.data.volume`): radiological, row 0 anterior (nose up), column 0 the patient's right,
``slice_index`` inferior -> superior.
"""

from ..storage.output_folder import atomic_directory
from .balance import balance_by_area
from .brats import load_brats_slices
from .errors import DataFormatError, MissingDataError
from .features import collate_slices, slice_features, slices_to_torch
from .hecktor import load_hecktor_slices, read_bbox_csv
from .pairs import load_pair_slices
from .phantom import make_phantom_slices, write_phantom_tree
from .split import split_by_patient
from .volume import axial_slices

__all__ = [
    "DataFormatError",
    "MissingDataError",
    "atomic_directory",
    "axial_slices",
    "balance_by_area",
    "collate_slices",
    "load_brats_slices",
    "load_hecktor_slices",
    "load_pair_slices",
    "make_phantom_slices",
    "read_bbox_csv",
    "slice_features",
    "slices_to_torch",
    "split_by_patient",
    "write_phantom_tree",
]
