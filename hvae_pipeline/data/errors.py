"""Exceptions raised for bad input data.

Both subclass the built-in exception a caller would naturally catch (``ValueError`` for malformed content,
``FileNotFoundError`` for missing files), so ``except ValueError`` keeps working, while messages always name the
offending file or argument and what was expected.
"""


class DataFormatError(ValueError):
    """A file exists but its content is unusable (corrupt, NaN voxels, unknown labels, mismatched grids...)."""


class MissingDataError(FileNotFoundError):
    """A required file, modality or layout could not be found."""
