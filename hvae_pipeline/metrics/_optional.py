"""Optional dependencies (the ``eval`` extra): imported when a metric first needs them, with a clear message."""

from __future__ import annotations

import importlib
from types import ModuleType

EVAL_EXTRA_INSTALL = "pip install -e '.[eval]' in a checkout of hvae-pipeline (it is not on PyPI)"


def import_optional(module_name: str, purpose: str) -> ModuleType:
    """Import ``module_name`` or raise an ``ImportError`` that says which extra to install.

    Args:
        module_name: Importable module name, e.g. ``"monai"``.
        purpose: What the module is needed for, used in the error message.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the optional dependency `{module_name}`, which is not installed. "
            f"Install the evaluation extra with: {EVAL_EXTRA_INSTALL}"
        ) from error
