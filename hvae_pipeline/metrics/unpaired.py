"""The paper's image-quality protocol: PSNR and SSIM of generated slices against unpaired real test slices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._pairs import score_pairs
from ._validation import ArrayLike, as_image_batch, check_positive_int, check_same_image_size
from .psnr import psnr
from .ssim import ssim


@dataclass(frozen=True)
class UnpairedSimilarity:
    """Summary of :func:`unpaired_psnr_ssim`: mean and standard deviation (``ddof=0``) over the drawn pairs."""

    psnr_mean: float
    psnr_std: float
    ssim_mean: float
    ssim_std: float
    num_pairs: int


def unpaired_psnr_ssim(
    generated: ArrayLike,
    real: ArrayLike,
    num_pairs: int | None = None,
    data_range: float = 1.0,
    seed: int = 0,
) -> UnpairedSimilarity:
    """PSNR and SSIM between generated slices and randomly drawn, unrelated real slices (the paper's protocol).

    A generated sample has no real counterpart, so the paper scores it against real test slices chosen at random:
    the values measure how close generated images are to real ones in intensity and structure, not reconstruction.
    Exactly: pair ``k`` (``k = 0 .. num_pairs - 1``) is ``(generated[k % N_gen], real[r_k])`` with ``r_k`` drawn
    uniformly with replacement from ``range(N_real)`` by ``numpy.random.default_rng(seed)``; each pair gets
    :func:`~hvae_pipeline.metrics.psnr` and :func:`~hvae_pipeline.metrics.ssim` (11-pixel Gaussian window), and the
    result is their mean and population standard deviation over the pairs. A generated slice identical to a real
    one (memorisation) gives an infinite PSNR, hence an infinite PSNR mean and a NaN PSNR std.

    Args:
        generated: Generated images ``(N_gen, H, W)`` or ``(N_gen, C, H, W)`` in ``[0, data_range]``.
        real: Real test images with the same ``(C, H, W)``; their number may differ.
        num_pairs: Number of pairs; ``None`` pairs every generated slice once (``num_pairs = N_gen``).
        data_range: Largest possible pixel value, 1.0 for images in ``[0, 1]``.
        seed: Seed of the generator that draws the real slices.
    """
    generated = as_image_batch(generated, "generated", data_range)
    real = as_image_batch(real, "real", data_range)
    check_same_image_size(generated, real, "generated", "real")
    check_positive_int(num_pairs, "num_pairs", allow_none=True)
    num_pairs = len(generated) if num_pairs is None else int(num_pairs)

    generated_index = np.arange(num_pairs) % len(generated)
    real_index = np.random.default_rng(seed).integers(0, len(real), size=num_pairs)
    psnr_all = score_pairs(lambda a, b: psnr(a, b, data_range), generated, real, generated_index, real_index)
    ssim_all = score_pairs(lambda a, b: ssim(a, b, data_range), generated, real, generated_index, real_index)
    with np.errstate(invalid="ignore"):  # infinite PSNRs (exact copies) make the PSNR std NaN, as documented
        psnr_std = float(psnr_all.std())
    return UnpairedSimilarity(
        psnr_mean=float(psnr_all.mean()),
        psnr_std=psnr_std,
        ssim_mean=float(ssim_all.mean()),
        ssim_std=float(ssim_all.std()),
        num_pairs=num_pairs,
    )
