"""Data loading: medical volumes and 2D image/mask pairs as typed 2D slice datasets (see ``features``)."""

from .balance import balance_by_area
from .brats import load_brats_slices
from .cache import atomic_directory
from .errors import DataFormatError, MissingDataError
from .features import collate_slices, slice_features, slices_to_torch
from .hecktor import load_hecktor_slices

__all__ = [
    "DataFormatError",
    "MissingDataError",
    "atomic_directory",
    "balance_by_area",
    "collate_slices",
    "load_brats_slices",
    "load_hecktor_slices",
    "slice_features",
    "slices_to_torch",
]
