"""Convolution, SiLU and GroupNorm with hand-written second derivatives, for the exact HVAE's double backward.

The exact HVAE differentiates the decoder twice: ``grad_z U`` is computed with ``create_graph=True`` and the loss is
then differentiated through it. Under ``create_graph`` PyTorch records the backward of ``F.silu`` and of
``F.group_norm`` as chains of small element-wise operations (their "infinitely differentiable" forms) and
differentiates those chains op by op; on CPU this element-wise work is about a fifth of an exact step
(BENCHMARKS.md). Here each backward is one fused ATen kernel (``silu_backward``, ``native_group_norm_backward``)
recorded as a single autograd node whose own backward is written out, with the group statistics reduced to per-channel
sums so that the double backward of a group norm costs nine element-wise passes. A convolution's double backward is
written with oneDNN's own data- and weight-gradient kernels: PyTorch's computes the weight part as a convolution of
batch-transposed copies (a kernel as large as the image), 2-3x slower on CPU.

Values and first and second derivatives equal PyTorch's (``tests/models/test_second_order.py``: ``gradcheck`` and
``gradgradcheck`` in float64, and an exact HVAE's parameter gradients equal to those with PyTorch's ops). Third
derivatives are not provided (``once_differentiable``). :meth:`hvae_pipeline.models.blocks.Decoder.use_second_order_ops`
switches a decoder to them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


# ----------------------------------------------------------------------------------------------------- Convolution
def _will_compute_gradient(ctx: Any, index: int) -> bool:
    """Whether the running backward pass needs the gradient of the ``index``-th input of ``ctx``'s function.

    ``ctx.needs_input_grad`` only says whether the input requires grad; the flow's ``grad_z U`` pass needs input
    gradients alone, and a weight gradient computed there would cost as much as the input gradient. The engine knows
    which nodes the pass executes (``_will_engine_execute_node``, the check PyTorch's own multi-gradient hooks use).
    """
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    if node is None or will_execute is None:
        return True
    try:
        return will_execute(node)
    except RuntimeError:  # a leaf that ``autograd.grad`` was asked for: its gradient is captured, hence needed
        return True


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                settings: tuple[list[int], list[int], list[int], int]) -> torch.Tensor:
        stride, padding, dilation, groups = settings
        ctx.save_for_backward(hidden, weight)
        ctx.settings = settings
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return torch.ops.aten.convolution(hidden, weight, bias, stride, padding, dilation, False, [0, 0], groups)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight = ctx.saved_tensors
        output_mask = [
            _will_compute_gradient(ctx, 0),
            _will_compute_gradient(ctx, 1),
            ctx.bias_sizes is not None and _will_compute_gradient(ctx, 2),
        ]
        grads = _Conv2dBackward.apply(grad_output, hidden, weight, ctx.settings, ctx.bias_sizes, output_mask)
        return (*grads, None)


class _Conv2dBackward(torch.autograd.Function):
    """``(dy, x, W) -> (dx, dW, db)`` of ``y = conv(x, W) + b``, the outputs in ``output_mask`` only.

    ``dx`` is linear in ``(dy, W)`` and ``dW`` in ``(dy, x)``, so for cotangents ``v_x``, ``v_W``, ``v_b``:

        d/d dy = conv(v_x, W) + conv(x, v_W) + v_b,
        d/dx = conv_input_grad(dy, v_W),   d/dW = conv_weight_grad(v_x, dy).
    """

    @staticmethod
    def forward(ctx: Any, grad_output: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                settings: tuple[list[int], list[int], list[int], int], bias_sizes: list[int] | None,
                output_mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
        ctx.set_materialize_grads(False)
        stride, padding, dilation, groups = settings
        ctx.save_for_backward(grad_output, hidden, weight)
        ctx.settings = settings
        ctx.output_mask = output_mask
        return torch.ops.aten.convolution_backward(
            grad_output, hidden, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups, output_mask
        )

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, cotangent_hidden: torch.Tensor | None, cotangent_weight: torch.Tensor | None,
                 cotangent_bias: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        grad_output, hidden, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.settings

        def convolve(inputs: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
            return torch.ops.aten.convolution(inputs, kernel, None, stride, padding, dilation, False, [0, 0], groups)

        def convolution_backward(inputs: torch.Tensor, kernel: torch.Tensor, mask: list[bool]) -> tuple:
            return torch.ops.aten.convolution_backward(
                grad_output, inputs, kernel, None, stride, padding, dilation, False, [0, 0], groups, mask
            )

        grad_grad_output = grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            terms = []
            if cotangent_hidden is not None:
                terms.append(convolve(cotangent_hidden, weight))
            if cotangent_weight is not None:
                terms.append(convolve(hidden, cotangent_weight))
            if cotangent_bias is not None:
                terms.append(cotangent_bias.reshape(1, -1, *([1] * (grad_output.dim() - 2))).expand_as(grad_output))
            grad_grad_output = sum(terms[1:], terms[0]) if terms else None
        if ctx.needs_input_grad[1] and cotangent_weight is not None:
            grad_hidden = convolution_backward(hidden, cotangent_weight, [True, False, False])[0]
        if ctx.needs_input_grad[2] and cotangent_hidden is not None:
            grad_weight = convolution_backward(cotangent_hidden, weight, [False, True, False])[1]
        return grad_grad_output, grad_hidden, grad_weight, None, None, None


def _pair(value: int | Sequence[int]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def conv2d(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
           groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` (numeric padding) with a cheaper double backward (see the module docstring).

    Under autocast it is ``F.conv2d`` itself (as :func:`group_norm`).
    """
    if torch.is_autocast_enabled(hidden.device.type):
        return F.conv2d(hidden, weight, bias, stride, padding, dilation, groups)
    settings = (_pair(stride), _pair(padding), _pair(dilation), groups)
    return _Conv2d.apply(hidden, weight, bias, settings)


# ------------------------------------------------------------------------------------------------------------ SiLU
class _SiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hidden)
        return F.silu(hidden)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (hidden,) = ctx.saved_tensors
        return _SiLUBackward.apply(grad_output, hidden)


class _SiLUBackward(torch.autograd.Function):
    """``(dy, h) -> dy SiLU'(h)``. For a cotangent ``v``: ``d/d dy = v SiLU'(h)`` (the same fused kernel) and
    ``d/dh = v dy SiLU''(h)`` with ``SiLU''(h) = s (1 - s) (2 + h - 2 h s)``, ``s = sigmoid(h)``."""

    @staticmethod
    def forward(ctx: Any, grad_output: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad_output, hidden)
        return torch.ops.aten.silu_backward(grad_output, hidden)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, cotangent: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        grad_output, hidden = ctx.saved_tensors
        grad_grad_output = grad_hidden = None
        if ctx.needs_input_grad[0]:
            grad_grad_output = torch.ops.aten.silu_backward(cotangent, hidden)
        if ctx.needs_input_grad[1]:
            sigmoid = torch.sigmoid(hidden)
            # sigmoid_backward(g, s) = g s (1 - s), fused.
            grad_hidden = torch.ops.aten.sigmoid_backward(cotangent * grad_output, sigmoid) * torch.addcmul(
                hidden + 2, hidden, sigmoid, value=-2
            )
        return grad_grad_output, grad_hidden


def silu(hidden: torch.Tensor) -> torch.Tensor:
    """``F.silu(hidden)`` with a cheaper double backward (see the module docstring)."""
    return _SiLU.apply(hidden)


# ------------------------------------------------------------------------------------------------------- GroupNorm
def _grouped(tensor: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(B, C, ...)`` viewed as ``(B, G, C / G, pixels)``."""
    return tensor.reshape(tensor.shape[0], num_groups, tensor.shape[1] // num_groups, -1)


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
                eps: float) -> torch.Tensor:
        hidden = hidden.contiguous()
        batch, channels = hidden.shape[:2]
        output, mean, inverse_std = torch.native_group_norm(
            hidden, weight, bias, batch, channels, hidden[0, 0].numel(), num_groups, eps
        )
        ctx.save_for_backward(hidden, weight, mean, inverse_std)
        ctx.num_groups = num_groups
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, mean, inverse_std = ctx.saved_tensors
        grads = _GroupNormBackward.apply(grad_output, hidden, weight, mean, inverse_std, ctx.num_groups)
        return (*grads, None, None)


class _GroupNormBackward(torch.autograd.Function):
    """``(dy, x, gamma) -> (dx, dgamma, dbeta)`` of a group norm, differentiable once.

    Per sample and group, with means ``M[.]`` over the group's ``n`` elements, ``r`` its inverse standard deviation,
    ``x_hat = (x - mean) r`` and ``a = gamma dy``:

        dx = r (a - M[a] - x_hat M[a x_hat]),   dgamma = sum(dy x_hat),   dbeta = sum(dy)   (sums over batch, pixels).

    For cotangents ``v`` of dx and ``w_gamma``, ``w_beta`` of dgamma, dbeta:

        d/d dy     = gamma r (v - M[v] - x_hat M[v x_hat]) + w_gamma x_hat + w_beta
        d/d gamma  = sum(r (v - M[v] - x_hat M[v x_hat]) dy)
        d/dx       = r (g - M[g] - x_hat (M[g x_hat] + M[v dx])),
                     g = -r M[a x_hat] v - r M[v x_hat] a + w_gamma dy   (the explicit derivative in x_hat),
                     M[v dx] = r (M[v a] - M[v] M[a] - M[v x_hat] M[a x_hat])   (dx's dependence on r),

    and every group mean of a product is a sum of per-channel sums, so ``M[g]`` and ``M[g x_hat]`` cost no pass.
    """

    @staticmethod
    def forward(ctx: Any, grad_output: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                inverse_std: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        grad_output = grad_output.contiguous()
        batch, channels = hidden.shape[:2]
        grad_hidden, grad_weight, grad_bias = torch.ops.aten.native_group_norm_backward(
            grad_output, hidden, mean, inverse_std, weight, batch, channels, hidden[0, 0].numel(), num_groups,
            [True, True, True],
        )
        ctx.save_for_backward(grad_output, hidden, weight, mean, inverse_std)
        ctx.num_groups = num_groups
        return grad_hidden, grad_weight, grad_bias

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, cotangent_hidden: torch.Tensor | None, cotangent_weight: torch.Tensor | None,
                 cotangent_bias: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        grad_output, hidden, weight, mean, inverse_std = ctx.saved_tensors
        groups = ctx.num_groups
        shape = hidden.shape
        batch = shape[0]
        dy, x = _grouped(grad_output, groups), _grouped(hidden, groups)
        count = x.shape[2] * x.shape[3]  # n, the elements of one group
        r = inverse_std.reshape(batch, groups, 1, 1)
        x_hat = torch.addcmul(-mean.reshape(batch, groups, 1, 1) * r, x, r)
        gamma = weight.reshape(1, groups, -1, 1)

        def channel_sums(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.sum(dim=3, keepdim=True)  # (B, G, C / G, 1)

        def group_mean(channel_sum: torch.Tensor) -> torch.Tensor:
            return channel_sum.sum(dim=2, keepdim=True) / count  # (B, G, 1, 1)

        sum_dy, sum_dy_xhat = channel_sums(dy), channel_sums(dy * x_hat)
        mean_a, mean_a_xhat = group_mean(gamma * sum_dy), group_mean(gamma * sum_dy_xhat)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        w_gamma = zero if cotangent_weight is None else cotangent_weight.reshape(1, groups, -1, 1)
        w_beta = zero if cotangent_bias is None else cotangent_bias.reshape(1, groups, -1, 1)
        if cotangent_hidden is not None:
            v = _grouped(cotangent_hidden, groups)
            sum_v, sum_v_xhat, sum_v_dy = channel_sums(v), channel_sums(v * x_hat), channel_sums(v * dy)
            mean_v, mean_v_xhat = group_mean(sum_v), group_mean(sum_v_xhat)
            mean_v_a = group_mean(gamma * sum_v_dy)
            mean_v_dx = r * (mean_v_a - mean_v * mean_a - mean_v_xhat * mean_a_xhat)
        else:
            v = None
            sum_v_dy = mean_v = mean_v_xhat = mean_v_dx = zero

        grad_dy = grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            offset = w_beta - gamma * r * mean_v
            grad_dy = torch.addcmul(offset, x_hat, w_gamma - gamma * r * mean_v_xhat)
            if v is not None:
                grad_dy = torch.addcmul(grad_dy, v, gamma * r)
            grad_dy = grad_dy.expand_as(x).reshape(shape)
        if ctx.needs_input_grad[1]:
            # g = alpha v + beta dy, alpha per group, beta per channel.
            alpha = -r * mean_a_xhat
            beta = w_gamma - r * mean_v_xhat * gamma
            mean_g = alpha * mean_v + group_mean(beta * sum_dy)
            mean_g_xhat = alpha * mean_v_xhat + group_mean(beta * sum_dy_xhat)
            grad_x = torch.addcmul(-r * mean_g, x_hat, -r * (mean_g_xhat + mean_v_dx))
            grad_x = torch.addcmul(grad_x, dy, r * beta)
            if v is not None:
                grad_x = torch.addcmul(grad_x, v, r * alpha)
            grad_hidden = grad_x.reshape(shape)
        if ctx.needs_input_grad[2]:
            grad_weight = (r * (sum_v_dy - mean_v * sum_dy - mean_v_xhat * sum_dy_xhat)).sum(dim=(0, 3)).reshape(-1)
        return grad_dy, grad_hidden, grad_weight, None, None, None


def group_norm(hidden: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``norm(hidden)`` (an affine ``nn.GroupNorm``) with a cheaper double backward (see the module docstring).

    Under autocast it is ``norm(hidden)`` itself: autocast's dtype rules for group norms differ by device, and mixed
    precision is a GPU setting, where this element-wise work is not the bottleneck.
    """
    if torch.is_autocast_enabled(hidden.device.type):
        return norm(hidden)
    return _GroupNorm.apply(hidden, norm.weight, norm.bias, norm.num_groups, norm.eps)
