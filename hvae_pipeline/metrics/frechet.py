"""Fréchet distance between two Gaussians, the core of FID (needs only numpy and scipy)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._validation import ArrayLike

# Eigenvalues of a covariance matrix below -_PSD_TOLERANCE * (its largest eigenvalue) mean it is not positive
# semi-definite; smaller negative ones are round-off (common: with fewer samples than dimensions the covariance
# is singular) and are set to 0.
_PSD_TOLERANCE = 1e-6


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of a feature matrix ``(N, D)`` with ``N >= 2``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (N, D), got {features.shape}")
    if len(features) < 2:
        raise ValueError(f"`features` needs at least 2 rows to estimate a covariance, got {len(features)}")
    if not np.isfinite(features).all():
        raise ValueError("`features` contains NaN or infinite values")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _check_gaussian(mu: ArrayLike, sigma: ArrayLike, mu_name: str, sigma_name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise ValueError(f"`{mu_name}` must be a vector (D,), got shape {mu.shape}")
    if sigma.shape != (len(mu), len(mu)):
        expected = (len(mu), len(mu))
        raise ValueError(f"`{sigma_name}` must have shape {expected} to match `{mu_name}`, got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"`{mu_name}` and `{sigma_name}` must be finite")
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * max(np.abs(sigma).max(), 1.0)):
        raise ValueError(f"`{sigma_name}` must be a symmetric covariance matrix")
    return mu, (sigma + sigma.T) / 2


def _clip_round_off(eigenvalues: np.ndarray, name: str) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with round-off negatives set to 0; real negatives raise."""
    scale = max(np.abs(eigenvalues).max(), np.finfo(np.float64).tiny)
    if eigenvalues.min() < -_PSD_TOLERANCE * scale:
        raise ValueError(f"`{name}` is not positive semi-definite (eigenvalue {eigenvalues.min():.3g})")
    return np.clip(eigenvalues, 0.0, None)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``d = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, the FID formula.

    The trace of the matrix square root is computed as ``tr((S1^(1/2) sigma2 S1^(1/2))^(1/2))`` with
    ``S1^(1/2)`` the symmetric square root of ``sigma1``: the two matrices have the same eigenvalues, but the second
    is symmetric positive semi-definite, so symmetric eigen-decompositions give it exactly, with no complex round-off
    to discard (``scipy.linalg.sqrtm`` of the non-symmetric ``sigma1 @ sigma2``, as in pytorch-fid, returns
    spurious imaginary parts for the singular covariances of small sample sets) and several times faster at 2048
    dimensions (only the range of ``sigma1`` enters the second decomposition). Eigenvalues of ``sigma1`` or of
    that product below ``-1e-6`` times the largest raise ``ValueError`` (not a covariance); smaller negative ones
    are round-off and count as 0. The result is clipped at 0, which round-off could otherwise cross for equal
    inputs.

    Args:
        mu1: Mean ``(D,)`` of the first Gaussian (a scalar for ``D = 1``).
        sigma1: Covariance ``(D, D)`` of the first Gaussian, symmetric positive semi-definite.
        mu2: Mean ``(D,)`` of the second Gaussian.
        sigma2: Covariance ``(D, D)`` of the second Gaussian.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "mu1", "sigma1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "mu2", "sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"`mu1` and `mu2` must have the same dimension, got {mu1.shape} and {mu2.shape}")
    eigenvalues, eigenvectors = scipy.linalg.eigh(sigma1)
    eigenvalues = _clip_round_off(eigenvalues, "sigma1")
    support = eigenvalues > 0
    # With S1^(1/2) = V diag(sqrt(l)) V^T and B = V_r diag(sqrt(l_r)) over the r non-zero eigenvalues, the
    # (r, r) matrix B^T sigma2 B has the non-zero eigenvalues of S1^(1/2) sigma2 S1^(1/2): exact, and much cheaper
    # than (D, D) products when sigma1 is singular (fewer images than the 2048 Inception features).
    scaled_basis = eigenvectors[:, support] * np.sqrt(eigenvalues[support])
    product = scaled_basis.T @ sigma2 @ scaled_basis
    trace_sqrt_product = 0.0  # sigma1 = 0 (a point mass): the product vanishes
    if product.size:
        # Symmetrised because the matrix products are only symmetric up to round-off.
        product_eigenvalues = scipy.linalg.eigh((product + product.T) / 2, eigvals_only=True)
        trace_sqrt_product = np.sqrt(_clip_round_off(product_eigenvalues, "sigma2")).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product
    return float(max(distance, 0.0))
