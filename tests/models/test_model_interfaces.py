"""The generator protocol the pipeline is typed with, model CPU offload, and the HVAE's keyword-only config check."""

from __future__ import annotations

import inspect

import pytest
import torch
from model_helpers import random_pairs

from hvae_pipeline import HVAEModel, HVAEPipeline, LSGANModel, fit_latent_prior
from hvae_pipeline.models import PairAutoencoder, PairGenerator
from hvae_pipeline.models.hvae import _check_config


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quiet(pipeline: HVAEPipeline) -> HVAEPipeline:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_both_generators_satisfy_the_protocol_and_only_the_hvae_encodes(tiny_config):
    hvae, lsgan = HVAEModel(**tiny_config), LSGANModel(**tiny_config)
    assert isinstance(hvae, PairGenerator) and isinstance(hvae, PairAutoencoder)
    assert isinstance(lsgan, PairGenerator) and not isinstance(lsgan, PairAutoencoder)
    # diffusers checks components against the __init__ annotation: the protocol, not `Any`.
    assert HVAEPipeline._get_signature_types()["model"] == (PairGenerator,)


def test_lsgan_pipeline_samples_but_refuses_hvae_only_methods_clearly(tiny_config):
    torch.manual_seed(0)
    pipeline = quiet(HVAEPipeline(LSGANModel(**tiny_config).eval()))
    out = pipeline(num_samples=3, generator=seeded(), output_type="pt")
    assert out.images.shape == (3, 1, 16, 16)
    images, masks = random_pairs(2, 16)
    with pytest.raises(ValueError, match=r"reconstruct needs a generator with an encoder .* a LSGANModel has no "
                                         r"encoder"):
        pipeline.reconstruct(images, masks)
    with pytest.raises(ValueError, match="fitting a latent prior to the posterior needs a generator with an encoder"):
        fit_latent_prior(pipeline.model, images, masks, progress=False)


def test_pipeline_refuses_a_model_that_is_not_a_pair_generator(tiny_config):
    with pytest.raises(TypeError, match=r"`model` must be a pair generator .* a Linear lacks config, latent_shape"):
        HVAEPipeline(torch.nn.Linear(2, 2))


def test_check_config_is_keyword_only_in_the_constructors_order():
    parameters = inspect.signature(_check_config).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    constructor = list(inspect.signature(HVAEModel.__init__).parameters)
    assert list(parameters) == [name for name in constructor if name in parameters]
    with pytest.raises(TypeError, match="positional"):
        _check_config(1, 1, 16, (8, 16), 1, (False, True), 3, 3, 1e-3, 0.3, False, "bernoulli", 0.5, "exact")


def test_model_cpu_offload_needs_an_accelerator_unless_a_device_is_named(tiny_config):
    """diffusers refuses `enable_model_cpu_offload()` without a GPU/accelerator; naming the CPU as the execution
    device installs the same accelerate hooks, which is what can be checked here."""
    pipeline = quiet(HVAEPipeline(HVAEModel(**tiny_config).eval()))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="requires accelerator"):
            pipeline.enable_model_cpu_offload()
    pipeline.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipeline.model, "_hf_hook")
    assert pipeline._execution_device == torch.device("cpu", 0)


@pytest.mark.parametrize("model_class", [HVAEModel, LSGANModel])
def test_offloaded_sampling_runs_the_hook_on_decode_and_gives_the_same_pairs(tiny_config, model_class):
    torch.manual_seed(0)
    pipeline = quiet(HVAEPipeline(model_class(**tiny_config).eval()))
    expected = pipeline(num_samples=4, generator=seeded(3), output_type="pt", batch_size=2)
    pipeline.enable_model_cpu_offload(device="cpu")
    moves = []
    hook = pipeline.model._hf_hook
    original = hook.pre_forward
    hook.pre_forward = lambda module, *args, **kwargs: (moves.append(module), original(module, *args, **kwargs))[1]
    got = pipeline(num_samples=4, generator=seeded(3), output_type="pt", batch_size=2)
    assert torch.equal(got.images, expected.images) and torch.equal(got.masks, expected.masks)
    # decode is no forward: only apply_forward_hook moves the weights to the execution device, once per batch.
    assert moves == [pipeline.model, pipeline.model]
    assert hasattr(pipeline.model, "_hf_hook")  # re-armed by maybe_free_model_hooks for the next call


def test_offloaded_reconstruction_runs_the_hook_on_encode(tiny_config):
    torch.manual_seed(0)
    pipeline = quiet(HVAEPipeline(HVAEModel(**tiny_config).eval()))
    images, masks = random_pairs(2, 16)
    expected = pipeline.reconstruct(images, masks, num_samples=1)
    pipeline.enable_model_cpu_offload(device="cpu")
    moves = []
    hook = pipeline.model._hf_hook
    original = hook.pre_forward
    hook.pre_forward = lambda module, *args, **kwargs: (moves.append("moved"), original(module, *args, **kwargs))[1]
    got = pipeline.reconstruct(images, masks, num_samples=1)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert len(moves) == 2  # encode, then decode


def test_latents_are_drawn_on_the_execution_device(tiny_config, monkeypatch):
    """Under offload the model waits on the CPU while it runs elsewhere: latents follow `_execution_device`, not
    `device` (the meta device stands in for an accelerator here)."""
    pipeline = quiet(HVAEPipeline(HVAEModel(**tiny_config).eval()))
    monkeypatch.setattr(HVAEPipeline, "_execution_device", property(lambda self: torch.device("meta")))
    assert pipeline.device.type == "cpu"
    latents = pipeline.prior_latents(2, generator=seeded())
    assert latents.device.type == "meta" and latents.shape == (2, *pipeline.model.latent_shape)
