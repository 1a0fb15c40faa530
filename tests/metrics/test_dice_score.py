import math

import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import dice_score


def square(top: int, left: int, side: int, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_dice_of_hand_computable_overlaps():
    prediction = torch.stack([square(0, 0, 2), square(0, 0, 4), square(0, 0, 2), square(0, 0, 4)])
    target = torch.stack([square(0, 0, 4), square(0, 0, 4), square(4, 4, 2), square(2, 2, 4)])
    # overlaps 4, 16, 0, 4 pixels; sizes 4+16, 16+16, 4+4, 16+16
    expected = [2 * 4 / 20, 1.0, 0.0, 2 * 4 / 32]
    np.testing.assert_allclose(dice_score(prediction, target).numpy(), expected)
    np.testing.assert_allclose(dice_score(target.numpy().astype(bool), prediction.numpy()).numpy(), expected)


def test_empty_against_empty_is_one_by_default_and_configurable():
    empty, tumour = torch.zeros(1, 8, 8), square(0, 0, 2).unsqueeze(0)
    assert dice_score(empty, empty).item() == 1.0
    assert math.isnan(dice_score(empty, empty, empty_score=float("nan")).item())
    assert dice_score(tumour, empty).item() == 0.0
    assert dice_score(empty, tumour).item() == 0.0


def test_multi_class_dice_is_per_foreground_class():
    target = square(0, 0, 4) + square(4, 4, 2) * 2  # class 1: 16 px, class 2: 4 px, class 3 absent
    prediction = square(0, 0, 2) + square(4, 4, 2) * 3  # class 1: 4 px inside, class 2 missed, class 3: 4 px
    scores = dice_score(prediction[None], target[None], num_classes=4)
    assert scores.shape == (1, 3)
    np.testing.assert_allclose(scores[0].numpy(), [2 * 4 / 20, 0.0, 0.0])
    both_empty = dice_score(target[None], target[None], num_classes=4)
    np.testing.assert_allclose(both_empty[0].numpy(), [1.0, 1.0, 1.0])


def test_dice_agrees_with_monai_dice_metric():
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    prediction = torch.from_numpy(rng.integers(0, 3, size=(5, 16, 16)))
    target = torch.from_numpy(rng.integers(0, 3, size=(5, 16, 16)))
    target[0] = 0  # an empty target for both classes
    prediction[0] = 0
    one_hot = lambda labels: torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2)  # noqa: E731
    metric = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    reference = metric(one_hot(prediction), one_hot(target))
    np.testing.assert_allclose(dice_score(prediction, target, num_classes=3).numpy(), reference.numpy(), rtol=1e-6)


def test_dice_rejects_bad_masks():
    mask = square(0, 0, 2).unsqueeze(0)
    with pytest.raises(ValueError, match="prediction.*target"):
        dice_score(mask, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="prediction"):
        dice_score(mask * 0.7, mask)
    with pytest.raises(ValueError, match="target"):
        dice_score(mask, mask * 3)
    with pytest.raises(ValueError, match="num_classes"):
        dice_score(mask, mask, num_classes=1)
