"""Synthetic pairs (paper sampling, nested subsets, disk cache) and the seeded U-Net protocol."""

from __future__ import annotations

import math

import pytest
import torch
from evaluation_helpers import TINY_MIN_TUMOUR_AREA, TINY_SIZE, save_tiny_generator

import hvae_pipeline.evaluation.synthetic as synthetic
from hvae_pipeline.evaluation import AugmentationGrid, GeneratorSpec, RealDataSpec, SamplingSettings, UNetSettings
from hvae_pipeline.evaluation.segmentation import slice_dice, train_segmenter
from hvae_pipeline.evaluation.synthetic import SAMPLES_PER_CHUNK, SyntheticPairs


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> GeneratorSpec:
    return GeneratorSpec("tiny", save_tiny_generator(tmp_path_factory.mktemp("generator") / "pipeline"))


def test_pairs_follow_the_sampling_rules_and_smaller_counts_are_nested(generator, tmp_path):
    source = SyntheticPairs(generator, SamplingSettings(min_tumour_area=TINY_MIN_TUMOUR_AREA), tmp_path,
                            progress=False)
    images, masks = source.pairs(SAMPLES_PER_CHUNK + 5, seed=3)  # two chunks
    assert images.shape == (SAMPLES_PER_CHUNK + 5, 1, TINY_SIZE, TINY_SIZE) and images.dtype == torch.float32
    assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}
    assert (masks.flatten(1).sum(1) >= TINY_MIN_TUMOUR_AREA).all()
    few_images, few_masks = source.pairs(7, seed=3)
    assert torch.equal(few_images, images[:7]) and torch.equal(few_masks, masks[:7])
    other_seed, _ = source.pairs(7, seed=4)
    assert not torch.equal(other_seed, few_images)


def test_cached_pairs_are_reused_without_sampling(generator, tmp_path, monkeypatch):
    settings = SamplingSettings(min_tumour_area=TINY_MIN_TUMOUR_AREA)
    first = SyntheticPairs(generator, settings, tmp_path, progress=False).pairs(10, seed=0)
    assert len(list((tmp_path / "tiny").glob("seed0-*.npz"))) == 1

    def no_sampling(spec):
        raise AssertionError("the generator was loaded although the cache holds the pairs")

    monkeypatch.setattr(synthetic, "load_generator", no_sampling)
    again = SyntheticPairs(generator, settings, tmp_path, progress=False).pairs(SAMPLES_PER_CHUNK, seed=0)
    assert torch.equal(again[0][:10], first[0]) and torch.equal(again[1][:10], first[1])
    # Another sampling setting is another cache file: it must sample, so it reaches the patched loader.
    with pytest.raises(AssertionError, match="the generator was loaded"):
        SyntheticPairs(generator, SamplingSettings(min_tumour_area=0), tmp_path, progress=False).pairs(10, seed=0)


def test_unet_training_is_set_by_its_seed():
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = (images[:, 0] > 0.5).to(torch.uint8)
    settings = UNetSettings(channels=(4, 8), num_res_units=1, updates=6, batch_size=4)
    first, again, other = (train_segmenter(images, masks, settings, seed, progress=False) for seed in (1, 1, 2))
    weights = [dict(run.network.state_dict()) for run in (first, again, other)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not all(torch.equal(weights[0][name], weights[2][name]) for name in weights[0])
    dice = slice_dice(first.network, images, masks)
    assert dice.shape == (12,) and ((0 <= dice) & (dice <= 1)).all()


def test_grid_and_data_spec_refuse_bad_values(generator):
    with pytest.raises(ValueError, match="list of synthetic counts N is empty"):
        AugmentationGrid((generator,), counts=())
    with pytest.raises(ValueError, match="need at least one generator"):
        AugmentationGrid((), counts=(0, 10))
    with pytest.raises(ValueError, match="generator names given more than once"):
        AugmentationGrid((generator, generator), counts=(0, 10))
    with pytest.raises(ValueError, match=r"test patients overlap the train patients: \['b'\]"):
        RealDataSpec("phantom", train_patients=("a", "b"), test_patients=("b", "c"))
    with pytest.raises(ValueError, match="needs a root folder"):
        RealDataSpec("brats", train_patients=("a",), test_patients=("b",))


def test_prior_setting_picks_the_latents_and_keeps_old_records_valid(tmp_path):
    from hvae_pipeline import GaussianLatentPrior, HVAEPipeline

    plain = save_tiny_generator(tmp_path / "plain")
    pipeline = HVAEPipeline.from_pretrained(str(plain))
    shifted = GaussianLatentPrior(pipeline.model.latent_shape)
    shifted.set_moments(torch.full_like(shifted.mean, 1.0), 0.5 * torch.eye(shifted.mean.numel()))
    HVAEPipeline(pipeline.model, shifted).save_pretrained(tmp_path / "fitted")
    fitted = GeneratorSpec("fitted", tmp_path / "fitted")

    def pairs(spec, prior):
        settings = SamplingSettings(min_tumour_area=0, prior=prior)
        return SyntheticPairs(spec, settings, tmp_path / "cache", progress=False).pairs(5, seed=0)[0]

    # "standard" samples N(0, I) from a pipeline with a fitted prior: exactly what the same weights without one do.
    assert torch.equal(pairs(fitted, "standard"), pairs(GeneratorSpec("plain", plain), "auto"))
    assert torch.equal(pairs(fitted, "auto"), pairs(fitted, "fitted"))
    assert not torch.equal(pairs(fitted, "auto"), pairs(fitted, "standard"))
    with pytest.raises(ValueError, match="generator plain: prior='fitted' but this pipeline has no fitted latent prior"):
        pairs(GeneratorSpec("plain", plain), "fitted")
    # "auto" is what the saved pipeline does, already pinned by its fingerprint: records keep their old settings.
    assert "prior" not in SamplingSettings().identity() and SamplingSettings(prior="standard").identity()["prior"]
    with pytest.raises(ValueError, match="sampling prior must be one of"):
        SamplingSettings(prior="posterior")


def test_sampling_device_is_recorded_apart_from_cpu_and_checked(generator, tmp_path):
    # CPU-drawn pairs keep the identity they had before the option existed; a GPU's are cached under another key,
    # since TF32 convolutions can flip a threshold pixel and so a rejection.
    assert "device" not in SamplingSettings().identity()
    assert SamplingSettings(device="cuda").identity()["device"] == "cuda"
    cpu = SyntheticPairs(generator, SamplingSettings(min_tumour_area=0), tmp_path, progress=False)
    explicit_cpu = SyntheticPairs(generator, SamplingSettings(min_tumour_area=0, device="cpu"), tmp_path,
                                  progress=False)
    gpu = SyntheticPairs(generator, SamplingSettings(min_tumour_area=0, device="cuda"), tmp_path, progress=False)
    assert cpu.cache_path(0) == explicit_cpu.cache_path(0) != gpu.cache_path(0)
    assert torch.equal(cpu.pairs(3, seed=0)[0], explicit_cpu.pairs(3, seed=0)[0])
    with pytest.raises(ValueError, match="sampling device 'gpu0' is not a torch device"):
        SamplingSettings(device="gpu0")


@pytest.mark.parametrize(("num_real", "count"), [(269, 100), (269, 500), (269, 2000), (32, 32), (10, 7), (100, 0)])
def test_equal_update_epochs_match_the_updates_of_the_augmented_run(num_real, count):
    from hvae_pipeline.evaluation.augmentation import equal_update_epochs

    settings = UNetSettings(epochs=40, batch_size=32)
    epochs = equal_update_epochs(settings, num_real, count)
    updates_augmented = 40 * math.ceil((num_real + count) / 32)
    updates_per_real_epoch = math.ceil(num_real / 32)
    # Within half an epoch of the augmented run's updates, which is the best whole epochs can do.
    assert abs(epochs * updates_per_real_epoch - updates_augmented) <= updates_per_real_epoch / 2
    if count == 0:
        assert epochs == 40


def test_equal_update_epochs_of_the_brats_grid():
    from hvae_pipeline.evaluation.augmentation import equal_update_epochs

    # 269 real slices, the paper's 40 epochs of batch 32: the controls run in RESULTS.md.
    assert [equal_update_epochs(UNetSettings(), 269, n) for n in (500, 1000, 2000)] == [111, 178, 316]
