"""HVAEPipeline: sampling, output types, rejection by tumour area, save/load, Hub errors, reconstruction."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from model_helpers import random_pairs
from safetensors.torch import load_file

from hvae_pipeline import HVAEModel, HVAEPipeline, SamplingBudgetExceeded
from hvae_pipeline.pipeline import spherical_interpolation, tumour_area


def make_pipeline(config: dict, **overrides) -> HVAEPipeline:
    torch.manual_seed(0)
    pipeline = HVAEPipeline(HVAEModel(**config, **overrides).eval())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_types(tiny_config):
    pipeline = make_pipeline(tiny_config)
    np_out = pipeline(num_samples=5, generator=seeded(), output_type="np", batch_size=2)
    assert np_out.images.shape == (5, 16, 16, 1) and np_out.images.dtype == np.float32
    assert np_out.images.min() >= 0 and np_out.images.max() <= 1
    assert np_out.masks.shape == (5, 16, 16) and np_out.masks.dtype == np.uint8
    assert set(np.unique(np_out.masks)) <= {0, 1}
    assert np.array_equal(np_out.tumour_areas, np_out.masks.reshape(5, -1).sum(1))
    pt_out = pipeline(num_samples=5, generator=seeded(), output_type="pt", batch_size=2)
    assert torch.equal(pt_out.images, torch.from_numpy(np_out.images).permute(0, 3, 1, 2))
    pil_out = pipeline(num_samples=5, generator=seeded(), output_type="pil", batch_size=2)
    assert all(isinstance(image, PIL.Image.Image) and image.mode == "L" for image in pil_out.images)
    assert np.array_equal(np.array(pil_out.masks[0]) // 255, np_out.masks[0])
    images, masks = pipeline(num_samples=2, generator=seeded(), output_type="np", return_dict=False)
    assert images.shape[0] == masks.shape[0] == 2


def test_samples_match_a_bare_decoder_and_are_seeded(tiny_config):
    pipeline = make_pipeline(tiny_config)
    out = pipeline(num_samples=3, generator=seeded(4), output_type="pt", temperature=0.7)
    latents = 0.7 * torch.randn((3, *pipeline.model.latent_shape), generator=seeded(4))
    with torch.no_grad():
        decoded = pipeline.model.decode(latents)
    assert torch.allclose(out.images, decoded.images)
    assert torch.equal(out.masks, (torch.sigmoid(decoded.mask_logits[:, 0]) > 0.5).to(torch.uint8))
    again = pipeline(num_samples=3, generator=seeded(4), output_type="pt", temperature=0.7)
    assert torch.equal(out.images, again.images)
    other = pipeline(num_samples=3, generator=seeded(5), output_type="pt", temperature=0.7)
    assert not torch.equal(out.images, other.images)


def test_min_tumour_area_rejects_small_tumours_and_bounds_draws(tiny_config):
    pipeline = make_pipeline(tiny_config)
    everything = pipeline(num_samples=40, generator=seeded(), output_type="np")
    threshold = int(np.median(everything.tumour_areas))
    kept = pipeline(num_samples=6, generator=seeded(), output_type="np", min_tumour_area=threshold)
    assert len(kept.masks) == 6
    assert np.all(kept.tumour_areas >= threshold)
    with pytest.raises(SamplingBudgetExceeded, match=r"only \d+ of 3 samples"):
        pipeline(num_samples=3, generator=seeded(), min_tumour_area=16 * 16 + 1, max_draws=50)


def test_min_mask_area_is_a_deprecated_spelling_that_still_works(tiny_config):
    pipeline = make_pipeline(tiny_config)
    threshold = int(np.median(pipeline(num_samples=20, generator=seeded(), output_type="np").tumour_areas))
    expected = pipeline(num_samples=4, generator=seeded(), output_type="np", min_tumour_area=threshold)
    deprecation = r"`min_mask_area` is deprecated .* 0\.2\.0; use `min_tumour_area`"
    with pytest.warns(FutureWarning, match=deprecation) as caught:
        old = pipeline(num_samples=4, generator=seeded(), output_type="np", min_mask_area=threshold)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert np.array_equal(old.masks, expected.masks) and np.array_equal(old.images, expected.images)
    with pytest.raises(TypeError, match="unexpected keyword argument 'min_area'"):
        pipeline(num_samples=1, min_area=3)


def test_multiclass_masks_are_class_ids(tiny_config):
    pipeline = make_pipeline(tiny_config, mask_channels=4)
    out = pipeline(num_samples=6, generator=seeded(1), output_type="pt")
    latents = torch.randn((6, *pipeline.model.latent_shape), generator=seeded(1))
    with torch.no_grad():
        expected = pipeline.model.decode(latents).mask_logits.argmax(1).to(torch.uint8)
    assert torch.equal(out.masks, expected)
    assert out.masks.max() < 4
    # Class ids also round-trip through reconstruction.
    images, masks = random_pairs(2, 16, mask_channels=4)
    recon_images, recon_masks = pipeline.reconstruct(images, masks, num_samples=2, generator=seeded())
    assert recon_images.shape == (2, 2, 1, 16, 16) and recon_masks.shape == (2, 2, 16, 16)
    assert recon_masks.max() < 4


def test_save_and_load_round_trip_is_bit_identical(tiny_config, tmp_path):
    pipeline = make_pipeline(tiny_config, learn_step_size=True, mask_channels=3)
    pipeline.save_pretrained(tmp_path)
    weights_file = tmp_path / "model" / "diffusion_pytorch_model.safetensors"
    assert weights_file.is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))  # no pickle anywhere
    loaded = HVAEPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    saved_weights = load_file(weights_file)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, saved_weights[name]), name
        assert torch.equal(tensor, pipeline.model.state_dict()[name]), name
    assert loaded.model.config.mask_channels == 3 and loaded.model.config.learn_step_size
    first = pipeline(num_samples=4, generator=seeded(2), output_type="pt")
    second = loaded(num_samples=4, generator=seeded(2), output_type="pt")
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    model_only = HVAEModel.from_pretrained(tmp_path / "model")
    assert torch.equal(model_only.step_size_logit, pipeline.model.step_size_logit)


def test_hub_paths_fail_clearly_offline(tiny_config, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(OSError, match="neither an existing folder nor a pipeline that could be fetched"):
        HVAEPipeline.from_pretrained("nobody/no-such-hvae")
    pipeline = make_pipeline(tiny_config)
    with pytest.raises(ConnectionError, match="could not push to the Hub repository 'nobody/no-such-hvae'"):
        pipeline.push_to_hub("nobody/no-such-hvae", token="hf_not_a_real_token")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(num_samples=0), "num_samples"),
        (dict(num_samples=2, output_type="jpeg"), "output_type"),
        (dict(num_samples=2, mask_threshold=1.5), "mask_threshold"),
        (dict(num_samples=2, temperature=-1.0), "temperature"),
        (dict(num_samples=2, min_tumour_area=-3), "min_tumour_area"),
        (dict(num_samples=2, batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(tiny_config, arguments, message):
    pipeline = make_pipeline(tiny_config)
    with pytest.raises(ValueError, match=message):
        pipeline(**arguments)


def test_reconstruct_imputes_missing_masks(tiny_config):
    pipeline = make_pipeline(tiny_config)
    images, masks = random_pairs(3, 16)
    with_masks = pipeline.reconstruct(images, masks, num_samples=3, generator=seeded())
    imputed = pipeline.reconstruct(images, None, num_samples=1)
    assert with_masks[0].shape == (3, 3, 1, 16, 16)
    assert imputed[1].shape == (3, 1, 16, 16) and set(imputed[1].unique().tolist()) <= {0, 1}
    # The first reconstruction decodes the posterior mean: deterministic.
    again = pipeline.reconstruct(images, masks, num_samples=1)
    assert torch.equal(with_masks[0][:, 0], again[0][:, 0])
    with pytest.raises(ValueError, match="images"):
        pipeline.reconstruct(images * 2, masks)


def test_spherical_interpolation_endpoints_and_norm():
    generator = seeded()
    start, end = torch.randn(3, 8, 8, generator=generator), torch.randn(3, 8, 8, generator=generator)
    assert torch.allclose(spherical_interpolation(start, end, 0.0), start, atol=1e-5)
    assert torch.allclose(spherical_interpolation(start, end, 1.0), end, atol=1e-5)
    middle = spherical_interpolation(start, end, 0.5)
    assert middle.norm() > 0.5 * (start + end).norm()  # does not shrink like a linear blend
    assert torch.equal(tumour_area(torch.tensor([[[0, 1], [2, 0]]])), torch.tensor([2]))
