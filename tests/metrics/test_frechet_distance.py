import numpy as np
import pytest
import scipy.linalg

from hvae_pipeline.metrics import feature_statistics, frechet_distance


def random_covariance(dim: int, seed: int) -> np.ndarray:
    factor = np.random.default_rng(seed).normal(size=(dim, dim))
    return factor @ factor.T / dim


def test_identical_gaussians_have_distance_zero():
    mu, sigma = np.arange(16.0), random_covariance(16, seed=0)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("mu1", "std1", "mu2", "std2"), [(0.0, 1.0, 2.0, 2.0), (-1.5, 0.3, 0.5, 0.3), (1.0, 0.0, 1.0, 4.0)]
)
def test_one_dimensional_gaussians_match_the_closed_form(mu1, std1, mu2, std2):
    expected = (mu1 - mu2) ** 2 + (std1 - std2) ** 2
    assert frechet_distance(mu1, std1**2, mu2, std2**2) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.1, 2.0, size=5), rng.uniform(0.1, 2.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-9)


def test_full_covariances_agree_with_scipy_sqrtm():
    sigma1, sigma2 = random_covariance(12, seed=2), random_covariance(12, seed=3)
    mu1, mu2 = np.zeros(12), np.ones(12)
    reference = 12.0 + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)).real
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(frechet_distance(mu2, sigma2, mu1, sigma1))


def test_singular_covariances_from_few_samples_are_handled():
    features = np.random.default_rng(4).normal(size=(5, 64))  # 5 samples in 64 dimensions: rank 4
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    shifted_mu, shifted_sigma = feature_statistics(features + 1.0)
    assert frechet_distance(mu, sigma, shifted_mu, shifted_sigma) == pytest.approx(64.0, rel=1e-6)


def test_invalid_gaussians_raise_value_errors():
    sigma = random_covariance(3, seed=5)
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(3), np.diag([1.0, -1.0, 1.0]), np.zeros(3), sigma)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), sigma, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(3), np.triu(sigma), np.zeros(3), sigma)
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.full(3, np.nan), sigma, np.zeros(3), sigma)
    with pytest.raises(ValueError, match="features"):
        feature_statistics(np.zeros((1, 3)))
