"""Hugging Face Hub helpers: clear errors when a model cannot be fetched (offline, unknown id)."""

from __future__ import annotations

import os
from typing import NoReturn


def raise_clear_hub_error(name_or_path: str, error: BaseException) -> NoReturn:
    """Re-raise a loading failure as an ``OSError`` saying what was looked for and what to do.

    Args:
        name_or_path: What the caller passed to ``from_pretrained``.
        error: The original exception (kept as the cause).
    """
    if os.path.isdir(name_or_path):
        raise OSError(f"could not load a pipeline from the folder {name_or_path!r}: {error}") from error
    raise OSError(
        f"{name_or_path!r} is neither an existing folder nor a pipeline that could be fetched from the Hugging Face "
        f"Hub ({error.__class__.__name__}). Offline (or with HF_HUB_OFFLINE=1) pass the path of a folder written by "
        "`save_pretrained`; online, check the repository id and your access token."
    ) from error
