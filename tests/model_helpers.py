"""Tiny model configurations and random (image, mask) batches for the model, pipeline and training tests."""

from __future__ import annotations

import torch

TINY_CONFIG = dict(
    sample_size=16,
    block_out_channels=(8, 16),
    layers_per_block=1,
    attention_levels=(False, True),
    num_attention_heads=2,
    attention_head_dim=4,
    norm_num_groups=4,
)


def random_pairs(batch: int, size: int, mask_channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] and random masks (class ids < max(2, mask_channels))."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=generator)
    number_of_values = max(2, mask_channels)
    masks = torch.randint(0, number_of_values, (batch, size, size), generator=generator)
    return images, masks
