"""Sample diversity: mean MS-SSIM between distinct generated samples."""

from __future__ import annotations

import numpy as np

from ._pairs import score_pairs
from ._validation import ArrayLike, as_image_batch, check_positive_int
from .ssim import ms_ssim


def ms_ssim_diversity(
    samples: ArrayLike,
    num_pairs: int = 1000,
    data_range: float = 1.0,
    kernel_size: int = 7,
    seed: int = 0,
) -> float:
    """Mean MS-SSIM between random pairs of distinct generated samples: lower means more diverse.

    Pair ``k`` is ``(samples[i_k], samples[j_k])`` with ``i_k`` uniform over ``range(N)`` and ``j_k`` uniform over
    the other ``N - 1`` indices, drawn with replacement by ``numpy.random.default_rng(seed)``. A model that always
    outputs the same image scores 1 (mode collapse); see :func:`~hvae_pipeline.metrics.ms_ssim` for the 5-scale
    MS-SSIM and why the default window is 7 pixels (it fits 128 x 128; pass ``kernel_size=4`` for 64 x 64).

    Args:
        samples: Generated images ``(N, H, W)`` or ``(N, C, H, W)`` in ``[0, data_range]``, ``N >= 2``.
        num_pairs: Number of random pairs to average over.
        data_range: Largest possible pixel value, 1.0 for images in ``[0, 1]``.
        kernel_size: Side of the Gaussian window of MS-SSIM.
        seed: Seed of the generator that draws the pairs.
    """
    samples = as_image_batch(samples, "samples", data_range)
    check_positive_int(num_pairs, "num_pairs")
    if len(samples) < 2:
        raise ValueError(f"`samples` must hold at least 2 images to form distinct pairs, got {len(samples)}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(samples), size=num_pairs)
    # Shifting by 1 .. N-1 (mod N) draws the partner uniformly among the other samples, never the same one.
    second = (first + rng.integers(1, len(samples), size=num_pairs)) % len(samples)
    scores = score_pairs(lambda a, b: ms_ssim(a, b, data_range, kernel_size), samples, samples, first, second)
    return float(scores.mean())
