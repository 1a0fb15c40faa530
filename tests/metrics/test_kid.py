"""KID: the unbiased polynomial-kernel MMD^2 against a direct double loop, ~0 for a set with itself, > 0 for shifts."""

import numpy as np
import pytest

from hvae_pipeline.metrics import kernel_distance, polynomial_mmd


def direct_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 estimator written out term by term."""
    kernel = lambda a, b: (a @ b / len(a) + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    within_x = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    within_y = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    cross = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return within_x + within_y - 2 * cross


def test_polynomial_mmd_equals_the_direct_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
    assert polynomial_mmd(x, y) == pytest.approx(direct_mmd(x, y), rel=1e-10)


def test_one_whole_set_subset_is_the_full_set_estimate():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)), rng.normal(1.0, 1.0, size=(12, 4))
    result = kernel_distance(x, y, subset_size=50, num_subsets=1)
    assert result.subset_size == 12 and result.std == 0.0
    assert result.mean == pytest.approx(direct_mmd(x, y), rel=1e-10)


def test_kid_of_a_set_with_itself_is_about_zero_and_shifted_sets_score_higher():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(400, 16))
    same = kernel_distance(features, features, subset_size=100, num_subsets=50)
    # Within the subset-to-subset spread of 0 (subsets of one set share features, which pulls it slightly below 0).
    assert abs(same.mean) < 3 * same.std
    shifted = [kernel_distance(features, features + shift, subset_size=100, num_subsets=50)
               for shift in (0.25, 0.5, 1.0)]
    assert 0.0 < shifted[0].mean < shifted[1].mean < shifted[2].mean
    assert shifted[1].mean > abs(same.mean) + 3 * shifted[1].std


def test_bad_features_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="real_features"):
        kernel_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        polynomial_mmd(np.zeros((3, 3)), np.zeros((3, 4)))
