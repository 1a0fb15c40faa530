"""Convolution, SiLU and GroupNorm with hand-written second derivatives (hvae_pipeline.models.second_order): the same
values, first and second derivatives as PyTorch's ``F.conv2d`` / ``F.silu`` / ``F.group_norm``, alone and inside the
exact HVAE's training gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from model_helpers import random_pairs
from torch.autograd import gradcheck, gradgradcheck

from hvae_pipeline import HVAEModel
from hvae_pipeline.models.second_order import conv2d, group_norm, silu


def float64_norm(channels: int = 6, groups: int = 3, seed: int = 0) -> nn.GroupNorm:
    """A group norm with non-trivial affine parameters (the defaults 1 and 0 would hide weight/bias terms)."""
    torch.manual_seed(seed)
    norm = nn.GroupNorm(groups, channels, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize(
    "settings", [dict(padding=1), dict(stride=2, padding=1), dict(padding=(0, 1), dilation=2, groups=2)],
    ids=["same", "strided", "dilated-grouped"],
)
def test_conv2d_first_and_second_derivatives_are_exact(settings):
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4 // settings.get("groups", 1), 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)

    def ours(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return conv2d(hidden, weight, bias, **settings)

    assert torch.allclose(ours(hidden, weight, bias), F.conv2d(hidden, weight, bias, **settings), rtol=0, atol=1e-12)
    # gradgradcheck perturbs the cotangents of dx, dW and db: every branch of the double backward.
    assert gradcheck(ours, (hidden, weight, bias))
    assert gradgradcheck(ours, (hidden, weight, bias))
    assert gradgradcheck(lambda h: conv2d(h, weight.detach(), None, **settings), (hidden,))


def test_conv2d_input_gradient_pass_computes_no_weight_gradient():
    """The flow's ``grad_z U`` (input gradients only, kept for a double backward) must not pay for weight gradients;
    the training backward that follows gets all of them."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 3, 5, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    (grad_hidden,) = torch.autograd.grad(conv2d(hidden, weight, bias, padding=1).square().sum(), hidden,
                                         create_graph=True)
    assert grad_hidden.grad_fn.output_mask == [True, False, False]
    grad_hidden.square().sum().backward()
    assert weight.grad is not None and hidden.grad is not None
    reference_weight = weight.detach().requires_grad_()
    (reference,) = torch.autograd.grad(F.conv2d(hidden, reference_weight, bias, padding=1).square().sum(), hidden,
                                       create_graph=True)
    reference.square().sum().backward()
    assert torch.allclose(weight.grad, reference_weight.grad, rtol=1e-5, atol=1e-5)


def test_silu_first_and_second_derivatives_are_exact():
    hidden = (torch.randn(2, 3, 4, 4, dtype=torch.float64) * 3).requires_grad_()
    assert torch.equal(silu(hidden), F.silu(hidden))
    assert gradcheck(silu, (hidden,))
    assert gradgradcheck(silu, (hidden,))


def norm_with(norm: nn.GroupNorm, weight: torch.Tensor, bias: torch.Tensor) -> nn.GroupNorm:
    """``norm``'s groups and eps with ``weight``/``bias`` tensors that gradcheck can perturb."""
    copy = nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps)
    del copy.weight, copy.bias
    copy.weight, copy.bias = weight, bias
    return copy


@pytest.mark.parametrize("shape", [(3, 6, 5, 5), (2, 6, 7)], ids=["images", "sequences"])
def test_group_norm_first_and_second_derivatives_are_exact(shape):
    norm = float64_norm()
    hidden = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = norm.weight.detach().clone().requires_grad_()
    bias = norm.bias.detach().clone().requires_grad_()

    def ours(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return group_norm(hidden, norm_with(norm, weight, bias))

    reference = F.group_norm(hidden, norm.num_groups, weight, bias, norm.eps)
    assert torch.allclose(ours(hidden, weight, bias), reference, rtol=0, atol=1e-12)
    # gradgradcheck perturbs the cotangents of dx, dgamma and dbeta too: every branch of the double backward.
    assert gradcheck(ours, (hidden, weight, bias))
    assert gradgradcheck(ours, (hidden, weight, bias))


def test_group_norm_second_derivative_when_only_the_input_requires_grad():
    norm = float64_norm()
    for parameter in norm.parameters():
        parameter.requires_grad_(False)
    hidden = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda h: silu(group_norm(h, norm)), (hidden,))


def test_group_norm_and_conv2d_under_autocast_are_pytorchs_own():
    norm = nn.GroupNorm(2, 4)
    weight = torch.randn(3, 4, 3, 3)
    hidden = torch.randn(2, 4, 8, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pairs = [(group_norm(hidden, norm), norm(hidden)),
                 (conv2d(hidden, weight, padding=1), F.conv2d(hidden, weight, padding=1))]
    for ours, reference in pairs:
        assert ours.dtype == reference.dtype
        assert torch.equal(ours, reference)


def exact_hvae_gradients(tiny_config: dict, second_order_ops: bool) -> dict[str, torch.Tensor]:
    """Parameter gradients of one exact-HVAE loss (second order through the flow) in float64."""
    torch.manual_seed(0)
    model = HVAEModel(**tiny_config, n_leapfrog=3, beta_zero=0.3, step_size=0.05, learn_step_size=True,
                      learn_beta_zero=True).double()
    assert model.decoder.second_order_ops  # an exact HVAE's decoder uses them by default
    model.decoder.use_second_order_ops(second_order_ops)
    images, masks = random_pairs(3, 16)
    output = model(images.double(), masks, generator=torch.Generator().manual_seed(1))
    output.loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def test_exact_hvae_gradients_equal_those_with_pytorchs_own_ops(tiny_config):
    ours = exact_hvae_gradients(tiny_config, second_order_ops=True)
    reference = exact_hvae_gradients(tiny_config, second_order_ops=False)
    assert ours.keys() == reference.keys()
    # The flow's step sizes and the decoder's weights get second-order terms: they must agree too.
    assert any("step_size" in name for name in ours)
    for name in ours:
        assert torch.allclose(ours[name], reference[name], rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("settings", [dict(n_leapfrog=0, beta_zero=1.0), dict(n_leapfrog=3, flow_gradient="detached")],
                         ids=["vae", "detached-flow"])
def test_models_without_a_double_backward_keep_pytorchs_ops(tiny_config, settings):
    model = HVAEModel(**tiny_config, **settings)
    flags = [module.second_order_ops for module in model.modules() if hasattr(module, "second_order_ops")]
    assert flags and not any(flags)
