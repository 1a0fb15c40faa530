"""Shared fixtures: tiny model configurations that run in milliseconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_CONFIG = dict(
    sample_size=16,
    block_out_channels=(8, 16),
    layers_per_block=1,
    attention_levels=(False, True),
    num_attention_heads=2,
    attention_head_dim=4,
    norm_num_groups=4,
)


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY_CONFIG)


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repository; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only present on the project's machines)")
    return SHARED_DATA


def random_pairs(batch: int, size: int, mask_channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] and masks with blob-like tumours (class ids < max(2, mask_channels))."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=generator)
    number_of_values = max(2, mask_channels)
    masks = torch.randint(0, number_of_values, (batch, size, size), generator=generator)
    return images, masks
