"""FID with the real Inception-v3 (about 0.3 s per image on CPU, 1-5 s per 2048-d Frechet distance): tiny sets."""

import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import InceptionFeatureExtractor, frechet_distance, frechet_inception_distance
from hvae_pipeline.metrics import feature_statistics, inception_weights_path

from synthetic_images import smooth_images


@pytest.fixture(scope="module", autouse=True)
def _require_inception_weights():
    try:
        inception_weights_path()
    except (ImportError, RuntimeError) as error:
        pytest.skip(f"FID needs the eval extra: {error}")


def stripes(count: int, size: int, seed: int) -> torch.Tensor:
    """High-frequency stripe patterns at random angles and phases, clearly unlike smooth slices."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    angles, phases = rng.uniform(0, np.pi, count), rng.uniform(0, 2 * np.pi, count)
    waves = [np.cos(0.9 * (np.cos(a) * cols + np.sin(a) * rows) + p) for a, p in zip(angles, phases)]
    return torch.from_numpy((np.stack(waves) + 1) / 2).to(torch.float32)


def test_fid_of_a_set_with_itself_is_zero():
    images = smooth_images(6, 64, seed=0)
    assert frechet_inception_distance(images, images, batch_size=6) == pytest.approx(0.0, abs=1e-3)


def test_fid_ranks_different_sets_above_similar_sets():
    extractor = InceptionFeatureExtractor(batch_size=6)
    real = feature_statistics(extractor(smooth_images(6, 64, seed=1)))
    similar = feature_statistics(extractor(smooth_images(6, 64, seed=2)))
    different = feature_statistics(extractor(stripes(6, 64, seed=3)))
    assert frechet_distance(*real, *different) > frechet_distance(*real, *similar) > 0.0


def test_grey_images_are_fed_as_three_identical_channels_in_any_batch_size():
    grey = smooth_images(2, 64, seed=4)
    features = InceptionFeatureExtractor(batch_size=1)(grey)
    assert features.shape == (2, 2048) and features.dtype == np.float64 and np.isfinite(features).all()
    rgb_features = InceptionFeatureExtractor(batch_size=2)(grey.unsqueeze(1).repeat(1, 3, 1, 1))
    np.testing.assert_allclose(features, rgb_features, rtol=1e-4, atol=1e-4)


def test_fid_rejects_bad_input():
    images = smooth_images(2, 64, seed=5)
    with pytest.raises(ValueError, match="generated"):
        frechet_inception_distance(images, images[:1])
    with pytest.raises(ValueError, match="real"):
        frechet_inception_distance(images * 2, images)
    with pytest.raises(ValueError, match="channels"):
        InceptionFeatureExtractor()(images.unsqueeze(1).repeat(1, 2, 1, 1))
