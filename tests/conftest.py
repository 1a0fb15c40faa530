"""Shared fixtures: tiny model configurations and the optional real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from model_helpers import TINY_CONFIG

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY_CONFIG)


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repository; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only present on the project's machines)")
    return SHARED_DATA
