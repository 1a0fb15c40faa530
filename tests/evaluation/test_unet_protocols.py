"""The U-Net protocols: the paper's settings kept exactly, the converged default (output head, Dice + BCE, Adam,
fixed updates), and the paired gains with their 95 % intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hvae_pipeline.evaluation import AugmentationGrid, GeneratorSpec, UNetSettings
from hvae_pipeline.evaluation.augmentation import PlannedRun, interval95, paired_gains
from hvae_pipeline.evaluation.generators import EQUAL_UPDATES, REAL_ONLY
from hvae_pipeline.evaluation.segmentation import build_unet, train_segmenter


def test_the_paper_protocol_keeps_the_papers_settings():
    paper = UNetSettings.for_protocol("paper")
    assert (paper.optimiser, paper.learning_rate, paper.loss, paper.dice_over_batch) == ("rmsprop", 1e-4, "dice", False)
    assert (paper.batch_size, paper.epochs, paper.updates, paper.output_head) == (32, 40, None, False)
    assert paper.channels == (16, 32, 64, 128, 256) and paper.num_res_units == 2
    assert UNetSettings.for_protocol("converged") == UNetSettings()
    with pytest.raises(ValueError, match="U-Net protocol 'nnunet': expected one of"):
        UNetSettings.for_protocol("nnunet")


def test_an_epoch_budget_replaces_the_fixed_updates_unless_both_are_given():
    assert UNetSettings.for_protocol("converged", epochs=3).updates is None
    assert UNetSettings.for_protocol("converged", epochs=3, updates=5).updates == 5
    assert UNetSettings.for_protocol("paper", updates=50).updates == 50
    assert UNetSettings.for_protocol("converged", learning_rate=None).learning_rate == 1e-3  # None: not given


def _one_channel_instance_norms(network: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.InstanceNorm2d) and m.num_features == 1 for m in network.modules())


def test_the_paper_network_standardises_its_one_output_channel_and_the_head_does_not():
    """The measured cause of the paper network's slow start: its top layer instance-normalises the single logit
    channel per image. The converged network keeps MONAI's U-Net but ends in an unnormalised 1x1 convolution."""
    paper = build_unet(1, UNetSettings.for_protocol("paper"))
    assert _one_channel_instance_norms(paper) == 1
    converged = build_unet(1, UNetSettings())
    assert _one_channel_instance_norms(converged) == 0
    head = list(converged.children())[-1]
    assert isinstance(head, torch.nn.Conv2d) and (head.in_channels, head.out_channels, head.kernel_size) == (16, 1, (1, 1))
    # The head's logits can take any offset: a bias of 7 shifts every logit by 7 (per-image normalisation would not).
    with torch.no_grad():
        image = torch.rand(2, 1, 32, 32)
        before = converged(image)
        head.bias += 7.0
        assert torch.allclose(converged(image) - before, torch.full_like(before, 7.0), atol=1e-5)


def _count_training_forwards(settings: UNetSettings, num_slices: int) -> int:
    images = torch.rand(num_slices, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = (images[:, 0] > 0.6).to(torch.uint8)
    calls = []
    original = torch.nn.Conv2d.forward

    def counting(module, x):
        calls.append(module)
        return original(module, x)

    trained_first = None
    try:
        torch.nn.Conv2d.forward = counting
        trained_first = train_segmenter(images, masks, settings, seed=0, progress=False)
    finally:
        torch.nn.Conv2d.forward = original
    head = list(trained_first.network.children())[-1] if settings.output_head else None
    return sum(call is head for call in calls) if head is not None else -1


@pytest.mark.parametrize(("updates", "num_slices", "batch_size"), [(7, 10, 4), (2, 10, 4), (5, 3, 4)])
def test_a_fixed_update_budget_makes_exactly_that_many_updates(updates, num_slices, batch_size):
    settings = UNetSettings(channels=(4, 8), num_res_units=1, batch_size=batch_size, updates=updates)
    assert settings.updates_for(num_slices) == updates == settings.updates_for(10 * num_slices)
    assert _count_training_forwards(settings, num_slices) == updates  # one head call per training batch


def test_an_epoch_budget_makes_epochs_times_batches_per_epoch_updates():
    settings = UNetSettings(channels=(4, 8), num_res_units=1, batch_size=4, updates=None, epochs=2)
    assert settings.updates_for(10) == 6
    assert _count_training_forwards(settings, 10) == 6


def test_interval95_is_the_student_t_interval_of_the_mean():
    values = [0.02, 0.05, 0.11, -0.01, 0.04]
    result = interval95(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert result["mean"] == pytest.approx(np.mean(values))
    assert (result["low"], result["high"]) == (pytest.approx(np.mean(values) - half), pytest.approx(np.mean(values) + half))
    assert interval95([0.3]) == {"mean": 0.3, "low": None, "high": None, "num_seeds": 1}


def _records(dice: dict[tuple[str, int, int], float]) -> dict[str, dict]:
    return {PlannedRun(name, count, seed).key: {"dice_mean": value} for (name, count, seed), value in dice.items()}


@pytest.mark.parametrize("protocol", ["converged", "paper"])
def test_paired_gains_pair_each_generator_run_with_its_like_for_like_baseline(protocol):
    generator = GeneratorSpec("G", "unused")
    seeds = (0, 1, 2)
    dice = {(REAL_ONLY, 0, s): 0.50 + 0.1 * s for s in seeds}
    dice |= {(EQUAL_UPDATES, 500, s): 0.55 + 0.1 * s for s in seeds}
    dice |= {("G", 500, s): 0.60 + 0.1 * s + 0.01 * s for s in seeds}
    unet = UNetSettings.for_protocol(protocol)
    controls = () if unet.fixed_updates else (500,)
    grid = AugmentationGrid((generator,), (0, 500), seeds, controls)
    gain = paired_gains(grid, _records(dice), unet)["G"]["500"]
    baseline = 0.50 if unet.fixed_updates else 0.55
    expected = [0.60 + 0.01 * s - baseline for s in seeds]  # the seed effect (0.1 s) cancels in the pairing
    assert gain["per_seed"] == {str(s): pytest.approx(e) for s, e in zip(seeds, expected)}
    assert gain["mean"] == pytest.approx(np.mean(expected))
    assert gain["low"] < gain["mean"] < gain["high"]
    assert gain["baseline"] == ("real-only (same updates)" if unet.fixed_updates else "real-only with equal updates")
    # The paper protocol without the control compares against real-only and says the gain is raw.
    if not unet.fixed_updates:
        raw = paired_gains(AugmentationGrid((generator,), (0, 500), seeds), _records(dice), unet)["G"]["500"]
        assert raw["baseline"] == "real-only (raw: fewer updates)"
        assert raw["mean"] == pytest.approx(np.mean([0.10 + 0.01 * s for s in seeds]))
