"""Where the bundled default pipeline lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINT = Path(__file__).parents[1] / "checkpoints" / "default"


def has_bundled_checkpoint() -> bool:
    """Whether the package ships a trained default pipeline."""
    return (BUNDLED_CHECKPOINT / "model_index.json").is_file()
