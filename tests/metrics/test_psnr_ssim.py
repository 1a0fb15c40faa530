import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import ms_ssim, psnr, ssim

from synthetic_images import smooth_images


@pytest.fixture
def images_128() -> torch.Tensor:
    return smooth_images(4, 128, seed=0)


def test_identical_images_give_infinite_psnr_and_unit_ssim(images_128):
    assert torch.isinf(psnr(images_128, images_128)).all()
    assert torch.isinf(psnr(images_128.numpy(), images_128.numpy())).all()
    assert torch.allclose(ssim(images_128, images_128), torch.ones(4), atol=1e-5)
    assert torch.allclose(ms_ssim(images_128, images_128), torch.ones(4), atol=1e-5)


def test_psnr_of_known_gaussian_noise_matches_the_mse_formula():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.25, 0.75, size=(4, 64, 64))
    noise_std = 0.02
    # max |noise| is far below 0.25, so no pixel leaves [0, 1] and the MSE is the noise variance.
    noisy = clean + rng.normal(0.0, noise_std, size=clean.shape)
    values = psnr(noisy, clean).numpy()
    expected_from_variance = 10 * np.log10(1.0 / noise_std**2)
    np.testing.assert_allclose(values, expected_from_variance, atol=0.3)
    exact = 10 * np.log10(1.0 / ((noisy - clean) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(values, exact, rtol=1e-12)


def test_psnr_is_invariant_to_the_intensity_scale(images_128):
    other = images_128.flip(-1)
    np.testing.assert_allclose(psnr(images_128 * 255, other * 255, data_range=255.0), psnr(images_128, other))


def test_psnr_averages_over_channels():
    first = torch.zeros(1, 2, 8, 8)
    second = torch.zeros(1, 2, 8, 8)
    second[:, 1] = 0.1  # half of the values differ by 0.1
    assert psnr(first, second).item() == pytest.approx(10 * np.log10(1 / (0.1**2 / 2)), rel=1e-6)


def test_ssim_is_symmetric_and_below_one_for_different_images(images_128):
    other = images_128.roll(1, dims=0)
    forward, backward = ssim(images_128, other), ssim(other, images_128)
    assert torch.allclose(forward, backward, atol=1e-6)
    assert (forward < 0.99).all()


def test_ssim_decreases_with_the_noise_level(images_128):
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images_128.shape, generator=generator)
    scores = [ssim(images_128, (images_128 + level * noise).clamp(0, 1)).mean().item() for level in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2]


def test_ssim_agrees_with_scikit_image_gaussian_ssim(images_128):
    metrics = pytest.importorskip("skimage.metrics")
    noisy = (images_128 + 0.1 * torch.randn(images_128.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    reference = [
        metrics.structural_similarity(
            a.numpy(), b.numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for a, b in zip(noisy, images_128)
    ]
    np.testing.assert_allclose(ssim(noisy, images_128).numpy(), reference, atol=1e-4)


def test_ms_ssim_is_symmetric_and_below_one(images_128):
    other = images_128.roll(1, dims=0)
    forward = ms_ssim(images_128, other)
    assert torch.allclose(forward, ms_ssim(other, images_128), atol=1e-6)
    assert (forward < 0.99).all() and (forward >= 0).all()


def test_ms_ssim_explains_the_minimum_image_size(images_128):
    with pytest.raises(ValueError, match="kernel_size"):
        ms_ssim(images_128, images_128, kernel_size=11)
    small = images_128[:, :64, :64]
    assert torch.allclose(ms_ssim(small, small, kernel_size=4), torch.ones(4), atol=1e-5)
