"""Network blocks (hvae_pipeline.models.blocks) computed in another form than the textbook one: the same function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradgradcheck

from hvae_pipeline.models.blocks import Upsample


def textbook_upsample(module: Upsample, hidden: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling by 2, then the module's 3x3 convolution."""
    return module.conv(F.interpolate(hidden, scale_factor=2.0, mode="nearest"))


@pytest.mark.parametrize("second_order_ops", [False, True], ids=["pytorch-conv", "second-order-conv"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 3, 5, 3)], ids=["square", "odd-rectangle"])
def test_phase_decomposed_upsample_is_upsample_then_convolution(shape, second_order_ops):
    torch.manual_seed(0)
    module = Upsample(3).double()
    module.second_order_ops = second_order_ops
    hidden = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours, reference = module(hidden), textbook_upsample(module, hidden)
    assert ours.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
    assert torch.allclose(ours, reference, rtol=0, atol=1e-12)
    # First and second derivatives (the exact HVAE differentiates the decoder twice), parameters included.
    cotangent = torch.randn_like(ours)
    for parameter in (hidden, module.conv.weight, module.conv.bias):
        (first,) = torch.autograd.grad((ours * cotangent).sum(), parameter, create_graph=True)
        (first_reference,) = torch.autograd.grad((reference * cotangent).sum(), parameter, create_graph=True)
        assert torch.allclose(first, first_reference, rtol=0, atol=1e-10)
    assert gradgradcheck(lambda h: module(h), (hidden,))


def test_upsample_keeps_its_state_dict_keys():
    """Checkpoints written before the phase decomposition load unchanged: the parameters are the 3x3 convolution's."""
    assert set(Upsample(4).state_dict()) == {"conv.weight", "conv.bias"}
