"""Tiny generators and command-line arguments shared by the evaluation tests (a plain module, not a conftest)."""

from __future__ import annotations

from pathlib import Path

import torch

from hvae_pipeline import HVAEModel, HVAEPipeline

TINY_SIZE = 32
# 32 x 32 SYNTHETIC phantoms: 16 slices per patient, so 64 slices make patients phantom-000 .. phantom-003.
PHANTOM_DATA = ["--data", "phantom", "--size", str(TINY_SIZE), "--num-phantom-slices", "64",
                "--train-patients", "phantom-000", "phantom-001", "--test-patients", "phantom-002"]
# A two-level U-Net trained for one epoch: each run takes a fraction of a second.
TINY_UNET = ["--unet-channels", "4", "8", "--unet-res-units", "1", "--epochs", "1", "--batch-size", "8"]
QUIET = ["--no-progress", "--num-threads", "1"]
# The paper's area > 200 px is for 128 x 128 slices; 32 x 32 slices have 1/16 of the pixels. The untrained tiny
# generator below makes masks of about 100-150 px, so this bound also exercises the rejection of small masks.
TINY_MIN_TUMOUR_AREA = 110
TINY_SAMPLING = ["--sampling-min-tumour-area", str(TINY_MIN_TUMOUR_AREA)]


def save_tiny_generator(folder: Path, seed: int = 0) -> Path:
    """Save an untrained two-level HVAE pipeline for 32 x 32 slices into ``folder`` and return it.

    Untrained (seed 0), its masks cover about 100-150 px: :data:`TINY_MIN_TUMOUR_AREA` rejects some of them.
    """
    torch.manual_seed(seed)
    model = HVAEModel(sample_size=TINY_SIZE, block_out_channels=(8, 16), layers_per_block=1,
                      attention_levels=(False, True), num_attention_heads=2, attention_head_dim=4, norm_num_groups=4)
    HVAEPipeline(model.eval()).save_pretrained(folder)
    return Path(folder)
