"""flow_checkpoint_chunk_size="auto" on CPU (issue 25, item 6): chosen by free memory as on CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hvae_pipeline import HVAEModel
from hvae_pipeline.models import hvae as hvae_module
from hvae_pipeline.models.flow_checkpointing import (
    FALLBACK_CHUNK_SIZE,
    RECOMPUTE_BYTES_PER_ACTIVATION,
    RECOMPUTE_MEMORY_SHARE,
    choose_chunk_size,
    free_memory_bytes,
)


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="no /proc/meminfo on this system")
def test_cpu_free_memory_is_read_from_meminfo():
    free = free_memory_bytes(torch.device("cpu"))
    assert isinstance(free, int) and 0 < free
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    assert free <= total


def test_unknown_free_memory_falls_back_to_chunks_of_four():
    assert free_memory_bytes(torch.device("meta")) is None
    assert choose_chunk_size("cpu", 16, 10**6, None) == FALLBACK_CHUNK_SIZE


@given(batch=st.integers(1, 64), elements=st.integers(1, 10**8), free=st.integers(0, 2**40))
@settings(max_examples=300, deadline=None)
def test_the_cpu_rule_is_the_whole_batch_when_it_fits_else_the_largest_chunk_that_does(batch, elements, free):
    chosen = choose_chunk_size("cpu", batch, elements, free)
    assert chosen == choose_chunk_size("cuda", batch, elements, free)  # one rule on every device
    budget = RECOMPUTE_MEMORY_SHARE * free
    per_sample = RECOMPUTE_BYTES_PER_ACTIVATION * elements
    if chosen is None:
        assert batch * per_sample <= budget
    else:
        assert 1 <= chosen < batch or chosen == 1  # nothing fits: one sample at a time
        assert chosen == 1 or chosen * per_sample <= budget
        assert (chosen + 1) * per_sample > budget


def test_auto_resolves_by_the_free_memory_on_cpu(tiny_config, monkeypatch):
    model = HVAEModel(**tiny_config)
    z = torch.zeros(16, *model.latent_shape)
    assert model._resolved_chunk_size(z) is None  # the tiny model fits this machine's free memory
    per_sample = RECOMPUTE_BYTES_PER_ACTIVATION * model._count_decoder_activations()
    monkeypatch.setattr(hvae_module, "free_memory_bytes", lambda device: int(10 * per_sample / RECOMPUTE_MEMORY_SHARE))
    assert model._resolved_chunk_size(z) == 10
    monkeypatch.setattr(hvae_module, "free_memory_bytes", lambda device: None)
    assert model._resolved_chunk_size(z) == FALLBACK_CHUNK_SIZE


def test_auto_chunks_give_the_gradients_of_the_whole_batch(tiny_config, monkeypatch):
    """Whatever "auto" chooses, the gradients are those of the unchunked evaluation."""
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = (torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).long()
    gradients = []
    for free in (None, 0, 10**12):  # fallback 4, chunks of 1, the whole batch
        torch.manual_seed(0)
        model = HVAEModel(**tiny_config, n_leapfrog=2, step_size=0.01)
        model.enable_gradient_checkpointing()
        monkeypatch.setattr(hvae_module, "free_memory_bytes", lambda device, free=free: free)
        model(images, masks, generator=torch.Generator().manual_seed(2)).loss.backward()
        gradients.append(torch.cat([parameter.grad.flatten() for parameter in model.parameters()]))
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-4)
    assert torch.allclose(gradients[0], gradients[2], rtol=1e-4, atol=1e-4)
