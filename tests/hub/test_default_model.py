"""The bundled default model: loads offline from the package and samples plausible (image, tumour mask) pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hvae_pipeline import HVAEModel
from hvae_pipeline.bundled_model import load_pipeline
from hvae_pipeline.hub.bundled_checkpoint import BUNDLED_CHECKPOINT, has_bundled_checkpoint
from hvae_pipeline.hub.pipeline_files import GENERIC_LOADER_MODULE, GENERIC_LOADER_SOURCE

pytestmark = pytest.mark.skipif(not has_bundled_checkpoint(), reason="no default model is bundled in this checkout")


def test_bundled_model_loads_offline_and_samples_plausible_pairs(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipeline, description = load_pipeline(None)
    assert "bundled default model" in description
    assert isinstance(pipeline.model, HVAEModel) and pipeline.model.config.sample_size == 128
    pipeline.set_progress_bar_config(disable=True)
    samples = pipeline(num_samples=32, generator=torch.Generator().manual_seed(0), output_type="np")
    assert samples.images.shape == (32, 128, 128, 1)
    # A brain slice fills a good part of the field of view; the background is dark.
    foreground = (samples.images[..., 0] > 0.1).mean(axis=(1, 2))
    assert np.median(foreground) > 0.15
    assert np.median(samples.images[:, :8, :8, 0]) < 0.05
    # Tumours of plausible size (its training slices: median 446 px, 77 % above 200 px, none above ~2500 px): the
    # fitted prior is what makes them so; from N(0, I) the median is ~20 px.
    assert pipeline.resolve_prior() == "fitted"
    areas = samples.tumour_areas
    assert np.mean(areas > 0) > 0.75
    assert 100 < np.median(areas) < 1500 and np.mean(areas > 200) > 0.35
    assert areas.max() < 0.3 * 128 * 128
    selected = pipeline(num_samples=4, generator=torch.Generator().manual_seed(1), min_tumour_area=200,
                        output_type="np")
    assert np.all(selected.tumour_areas >= 200)


def test_bundled_model_card_names_data_licence_and_attribution():
    card = (BUNDLED_CHECKPOINT / "README.md").read_text()
    assert "CC BY-SA 4.0" in card and "Medical Segmentation Decathlon" in card and "Menze" in card
    index = json.loads((BUNDLED_CHECKPOINT / "model_index.json").read_text())
    assert index["model"] == ["hvae_pipeline.models.hvae", "HVAEModel"]
    assert index["latent_prior"] == ["hvae_pipeline.models.latent_prior", "GaussianLatentPrior"]
    size = sum(path.stat().st_size for path in BUNDLED_CHECKPOINT.rglob("*.safetensors"))
    assert size < 20 * 1024 * 1024


def test_bundled_folder_carries_the_current_loader_and_install_line():
    """The bundled folder is what `save_pretrained` writes today: its `pipeline.py`, and install instructions that
    resolve (there is no `hvae-pipeline` on PyPI)."""
    assert (BUNDLED_CHECKPOINT / f"{GENERIC_LOADER_MODULE}.py").read_text() == GENERIC_LOADER_SOURCE
    for text in (GENERIC_LOADER_SOURCE, (BUNDLED_CHECKPOINT / "README.md").read_text()):
        assert "pip install hvae-pipeline" not in text and "pip install -e ." in text


def test_bundled_model_has_a_learnt_flow_that_moves_z():
    model = load_pipeline(None)[0].model
    assert model.config.learn_step_size and model.config.learn_beta_zero and model.config.n_leapfrog == 3
    flow = model.flow_summary()
    # Learnt steps an order of magnitude above the paper's frozen 1e-3, below the K = 3 stability edge (~0.1).
    assert 5e-3 < flow["step_size_median"] < 0.05 and flow["step_size_max"] < 0.1 and 0.3 < flow["beta_zero"] < 1
    images = torch.rand(4, 1, 128, 128)
    masks = (torch.rand(4, 128, 128) > 0.95).long()
    with torch.no_grad():
        z = model(images, masks, generator=torch.Generator().manual_seed(0)).z
        z0 = model.encode(images, masks).latent_dist.sample(torch.Generator().manual_seed(0))
    assert (z - z0).abs().mean() > 3e-3  # the paper's step moves z by about K x 1e-3


@pytest.mark.shared_data
def test_bundled_models_flow_raises_the_held_out_elbo(shared_data):
    """On held-out BraTS slices the bundled model's ELBO with its flow exceeds the ELBO of the same weights with the
    flow off, from the same z_0 draws (RESULTS.md section 4: +42 nats/slice over 162 slices)."""
    from hvae_pipeline.data import load_brats_slices

    slices = load_brats_slices(shared_data / "brats-msd-flair", image_glob="images/{case}_Tumor.nii.gz",
                               label_glob="labels/{case}_Seg.nii.gz", patients=["BRATS_036", "BRATS_089"],
                               size=128, depth=64).with_format("torch")
    chosen = torch.linspace(0, len(slices) - 1, 12).round().long().tolist()
    images, masks = slices[chosen]["image"].float(), slices[chosen]["mask"].long()
    model = load_pipeline(None)[0].model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = generator.get_state()
        flow_on = model(images, masks, generator=generator).elbo
        generator.set_state(state)
        flow_off = model(images, masks, generator=generator, n_leapfrog=0).elbo
    gain = flow_on - flow_off
    assert gain.mean() > 10 and gain.mean() > 3 * gain.std() / len(gain) ** 0.5
