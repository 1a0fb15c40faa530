"""Kernel Inception Distance (KID): an unbiased polynomial-kernel MMD^2 between feature sets (Binkowski et al. 2018).

FID's Gaussian fit is biased upward for small sets (its value depends on how many images were used); KID's estimator
is unbiased at any size, so it compares generators scored on our few hundred real test slices fairly. Features are
those of FID (:class:`~.inception.InceptionFeatureExtractor`). As in the reference implementations (the authors',
torchmetrics, clean-fid): kernel ``k(x, y) = (x . y / d + 1) ** 3``, the unbiased MMD^2 averaged over random subsets
of both sets, reported with its standard deviation over the subsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import ArrayLike, check_positive_int

DEFAULT_SUBSET_SIZE = 1000
DEFAULT_NUM_SUBSETS = 100


@dataclass(frozen=True)
class KernelDistance:
    """KID over subsets: ``mean`` and ``std`` of the unbiased MMD^2 estimates, ``subset_size`` features per set and
    subset, ``num_subsets`` subsets."""

    mean: float
    std: float
    subset_size: int
    num_subsets: int


def _features(values: ArrayLike, name: str) -> np.ndarray:
    features = np.asarray(values, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"`{name}` must be a feature matrix (N, D) with N >= 2, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    return features


def polynomial_mmd(first: ArrayLike, second: ArrayLike) -> float:
    """Unbiased MMD^2 between two feature sets ``(m, D)`` and ``(n, D)`` (``m, n >= 2``) with the cubic polynomial
    kernel ``(x . y / D + 1) ** 3``: within-set kernel means without the diagonal, minus twice the cross mean.

    Can be slightly negative when the sets come from the same distribution (it is unbiased, not clipped).
    """
    x, y = _features(first, "first"), _features(second, "second")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
    dimension = x.shape[1]
    k_xx = (x @ x.T / dimension + 1.0) ** 3
    k_yy = (y @ y.T / dimension + 1.0) ** 3
    k_xy = (x @ y.T / dimension + 1.0) ** 3
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_distance(real_features: ArrayLike, generated_features: ArrayLike,
                    subset_size: int = DEFAULT_SUBSET_SIZE, num_subsets: int = DEFAULT_NUM_SUBSETS,
                    seed: int = 0) -> KernelDistance:
    """KID between two feature sets: :func:`polynomial_mmd` on ``num_subsets`` random subsets of each.

    Args:
        real_features: features ``(N_real, D)`` of the real images.
        generated_features: features ``(N_generated, D)`` of the generated images.
        subset_size: features drawn per set and subset, without replacement; capped at the smaller set's size (so
            with ``subset_size >= N`` each subset is a whole set, and one subset gives the full-set estimate).
        num_subsets: subsets averaged.
        seed: seeds the subset draws.
    """
    check_positive_int(subset_size, "subset_size")
    check_positive_int(num_subsets, "num_subsets")
    real, generated = _features(real_features, "real_features"), _features(generated_features, "generated_features")
    size = min(subset_size, len(real), len(generated))
    rng = np.random.default_rng(seed)
    estimates = [polynomial_mmd(real[rng.choice(len(real), size, replace=False)],
                                generated[rng.choice(len(generated), size, replace=False)])
                 for _ in range(num_subsets)]
    return KernelDistance(float(np.mean(estimates)), float(np.std(estimates)), size, num_subsets)
