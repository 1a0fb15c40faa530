import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import ms_ssim_diversity, psnr, ssim, unpaired_psnr_ssim

from synthetic_images import smooth_images


def test_unpaired_scores_follow_the_documented_pairing():
    generated, real = smooth_images(3, 64, seed=1), smooth_images(5, 64, seed=2)
    result = unpaired_psnr_ssim(generated, real, num_pairs=7, seed=3)
    generated_index = np.arange(7) % 3
    real_index = np.random.default_rng(3).integers(0, 5, size=7)
    expected_psnr = psnr(generated[generated_index], real[real_index]).numpy()
    expected_ssim = ssim(generated[generated_index], real[real_index]).numpy()
    assert result.num_pairs == 7
    assert result.psnr_mean == pytest.approx(expected_psnr.mean())
    assert result.psnr_std == pytest.approx(expected_psnr.std())
    assert result.ssim_mean == pytest.approx(expected_ssim.mean(), abs=1e-6)
    assert result.ssim_std == pytest.approx(expected_ssim.std(), abs=1e-6)


def test_unpaired_default_pairs_each_generated_slice_once_and_is_seeded():
    generated, real = smooth_images(4, 64, seed=1), smooth_images(6, 64, seed=2)
    first, again = unpaired_psnr_ssim(generated, real), unpaired_psnr_ssim(generated, real)
    assert first.num_pairs == 4
    assert first == again


def test_unpaired_copy_of_the_real_set_is_perfect():
    real = smooth_images(1, 64, seed=4)
    result = unpaired_psnr_ssim(real.repeat(3, 1, 1), real)
    assert np.isinf(result.psnr_mean) and np.isnan(result.psnr_std)
    assert result.ssim_mean == pytest.approx(1.0, abs=1e-5)
    assert result.ssim_std == pytest.approx(0.0, abs=1e-6)


def test_identical_samples_have_diversity_one():
    samples = smooth_images(1, 128, seed=5).repeat(4, 1, 1)
    assert ms_ssim_diversity(samples, num_pairs=8) == pytest.approx(1.0, abs=1e-5)


def test_diverse_samples_score_lower_than_near_duplicates():
    distinct = smooth_images(4, 128, seed=6)
    noise = 0.02 * torch.randn(4, 128, 128, generator=torch.Generator().manual_seed(0))
    near_duplicates = (distinct[:1] + noise).clamp(0, 1)
    assert ms_ssim_diversity(distinct, num_pairs=12) < ms_ssim_diversity(near_duplicates, num_pairs=12) < 1.0


def test_diversity_is_seeded_and_needs_two_samples():
    samples = smooth_images(5, 128, seed=7)
    assert ms_ssim_diversity(samples, num_pairs=6, seed=1) == ms_ssim_diversity(samples, num_pairs=6, seed=1)
    with pytest.raises(ValueError, match="samples"):
        ms_ssim_diversity(samples[:1])
