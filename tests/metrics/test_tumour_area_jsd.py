import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import tumour_area_jsd, tumour_areas


def masks_with_areas(areas: list[int], size: int = 32) -> torch.Tensor:
    """Binary masks whose tumour covers the first ``area`` pixels in raster order."""
    masks = torch.zeros(len(areas), size * size, dtype=torch.bool)
    for mask, area in zip(masks, areas):
        mask[:area] = True
    return masks.reshape(len(areas), size, size)


def test_tumour_areas_count_foreground_pixels():
    assert tumour_areas(masks_with_areas([0, 7, 300])).tolist() == [0, 7, 300]
    assert tumour_areas(masks_with_areas([5]).unsqueeze(1).numpy().astype(np.float32)).tolist() == [5]


def test_identical_area_distributions_have_jsd_zero():
    real = masks_with_areas([210, 230, 260, 400])
    generated = masks_with_areas([400, 260, 230, 210, 211, 232, 262, 401])  # same bins, same proportions
    assert tumour_area_jsd(real, generated) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_area_distributions_have_jsd_one():
    assert tumour_area_jsd(masks_with_areas([210, 220]), masks_with_areas([500, 600])) == pytest.approx(1.0)


def test_partial_overlap_matches_the_definition():
    # bins of 25 px from 0: real areas fill bin 8 only, generated areas bins 8 and 12 equally.
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = (p + q) / 2
    kl = lambda a, b: np.sum(a[a > 0] * np.log2(a[a > 0] / b[a > 0]))  # noqa: E731
    expected = (kl(p, m) + kl(q, m)) / 2
    result = tumour_area_jsd(masks_with_areas([205, 210]), masks_with_areas([215, 310]))
    assert result == pytest.approx(expected)


def test_areas_below_start_share_one_bin_instead_of_being_dropped():
    real, generated = masks_with_areas([10, 10]), masks_with_areas([30, 30])
    assert tumour_area_jsd(real, generated, bin_width=25, start=0) == pytest.approx(1.0)
    assert tumour_area_jsd(real, generated, bin_width=25, start=200) == pytest.approx(0.0)


def test_bad_masks_and_bins_raise():
    masks = masks_with_areas([3, 4])
    with pytest.raises(ValueError, match="generated_masks"):
        tumour_area_jsd(masks, masks.float() * 0.5)
    with pytest.raises(ValueError, match="real_masks"):
        tumour_area_jsd(masks[:0], masks)
    with pytest.raises(ValueError, match="bin_width"):
        tumour_area_jsd(masks, masks, bin_width=0)
    with pytest.raises(ValueError, match="start"):
        tumour_area_jsd(masks, masks, start=-1)
