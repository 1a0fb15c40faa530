"""Fixtures for the data tests: shared real data (skipped when absent) and SYNTHETIC phantom trees."""

from pathlib import Path

import pytest

from hvae_pipeline.data import write_phantom_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the repo on developer/CI machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_trees(tmp_path_factory) -> dict:
    """One phantom tree per official layout (written once per session; tests must not modify them)."""
    root = tmp_path_factory.mktemp("phantoms")
    return {layout: root / layout for layout in ("brats2021", "brats2023", "msd", "glob", "hecktor2021", "hecktor2022", "hecktor-pet", "lgg")
            if write_phantom_tree(root / layout, layout)}
