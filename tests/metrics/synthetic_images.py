"""Small synthetic image batches shared by the metric tests (a plain module: a second conftest.py would shadow
the ``conftest`` that other test folders import by name)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter


def smooth_images(count: int, size: int, seed: int, blur: float = 3.0) -> torch.Tensor:
    """``(count, size, size)`` float32 images in ``[0, 1]``: blurred noise, a stand-in for smooth MR slices."""
    noise = np.random.default_rng(seed).normal(size=(count, size, size))
    blurred = np.stack([gaussian_filter(image, blur) for image in noise])
    low = blurred.min(axis=(1, 2), keepdims=True)
    high = blurred.max(axis=(1, 2), keepdims=True)
    return torch.from_numpy((blurred - low) / (high - low)).to(torch.float32)
