"""Network building blocks of the HVAE encoder and decoder (residual blocks, self-attention, resampling).

A decoder that an exact HVAE differentiates twice is switched to ``Decoder.use_second_order_ops(True)``: its
convolutions, GroupNorms and SiLUs then come from :mod:`hvae_pipeline.models.second_order` (the same values and
gradients, a cheaper double backward); everything else, the encoder included (never differentiated twice), uses
PyTorch's own.

Attention is written with explicit matrix products rather than ``scaled_dot_product_attention``: the exact HVAE
differentiates the decoder twice (gradients of ``grad U``), and the fused CPU attention kernels have no double
backward.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .second_order import conv2d, group_norm, silu


def _normalise(hidden: torch.Tensor, norm: nn.GroupNorm, second_order_ops: bool) -> torch.Tensor:
    return group_norm(hidden, norm) if second_order_ops else norm(hidden)


def _normalise_and_activate(hidden: torch.Tensor, norm: nn.GroupNorm, second_order_ops: bool) -> torch.Tensor:
    """GroupNorm -> SiLU."""
    normalised = _normalise(hidden, norm, second_order_ops)
    return silu(normalised) if second_order_ops else F.silu(normalised)


def _norm(channels: int, norm_num_groups: int) -> nn.GroupNorm:
    if channels % norm_num_groups != 0:
        raise ValueError(f"channel count {channels} is not divisible by norm_num_groups={norm_num_groups}")
    return nn.GroupNorm(norm_num_groups, channels, eps=1e-6)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding) that uses :func:`hvae_pipeline.models.second_order.conv2d` when
    ``second_order_ops`` is set (see :meth:`Decoder.use_second_order_ops`). Same parameters and state-dict keys."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.second_order_ops = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.second_order_ops:
            return super().forward(hidden)
        return conv2d(hidden, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ResidualBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a (1x1-projected when needed) skip connection."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int = 8) -> None:
        super().__init__()
        self.second_order_ops = False  # see Decoder.use_second_order_ops
        self.norm1 = _norm(in_channels, norm_num_groups)
        self.conv1 = Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _norm(out_channels, norm_num_groups)
        self.conv2 = Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(_normalise_and_activate(hidden, self.norm1, self.second_order_ops))
        residual = self.conv2(_normalise_and_activate(residual, self.norm2, self.second_order_ops))
        return self.skip(hidden) + residual


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels with a residual connection (GroupNorm first)."""

    def __init__(self, channels: int, num_heads: int = 8, head_dim: int = 32, norm_num_groups: int = 8) -> None:
        super().__init__()
        self.second_order_ops = False  # see Decoder.use_second_order_ops
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.norm = _norm(channels, norm_num_groups)
        self.to_qkv = Conv2d(channels, 3 * inner, kernel_size=1)
        self.to_out = Conv2d(inner, channels, kernel_size=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = hidden.shape
        normalised = _normalise(hidden, self.norm, self.second_order_ops)
        qkv = self.to_qkv(normalised).reshape(batch, 3, self.num_heads, self.head_dim, height * width)
        query, key, value = qkv.unbind(dim=1)  # each (B, heads, head_dim, pixels)
        scores = torch.einsum("bhdi,bhdj->bhij", query, key) * self.head_dim**-0.5
        attended = torch.einsum("bhij,bhdj->bhdi", scores.softmax(dim=-1), value)
        return hidden + self.to_out(attended.reshape(batch, -1, height, width))


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden)


# Through nearest-neighbour upsampling, output row 2i + a of a 3x3 convolution (padding 1) reads input rows
# i - 1 + a + s, s = 0, 1, with the kernel's rows summed as _PHASE_TAPS[a, s] says (the same holds for columns).
_PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling then a 3x3 convolution (no checkerboard artefacts).

    Computed without the upsampled map: each of the four output phases (row and column parity) is a 2x2 convolution of
    the low-resolution input whose kernel sums the 3x3 kernel's taps, and the four run as one convolution with
    ``4 x channels`` outputs. The same function and parameters as ``conv(interpolate(x, 2))``, in 4/9 of its
    multiply-adds (tests/models/test_blocks.py compares both).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.second_order_ops = False  # see Decoder.use_second_order_ops
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight
        out_channels, batch, height, width = weight.shape[0], hidden.shape[0], hidden.shape[2], hidden.shape[3]
        taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype, device=weight.device)
        phase_kernels = torch.einsum("asi,btj,ocij->abocst", taps, taps, weight).reshape(4 * out_channels, -1, 2, 2)
        phase_bias = None if self.conv.bias is None else self.conv.bias.repeat(4)
        convolve = conv2d if self.second_order_ops else F.conv2d
        # Output (i, j) of phase (a, b) sits at (i + a, j + b) of this padded result.
        phases = convolve(hidden, phase_kernels, phase_bias, 1, 1)
        phases = phases.view(batch, 2, 2, out_channels, height + 1, width + 1)
        rows = [
            torch.stack([phases[:, a, b, :, a : a + height, b : b + width] for b in (0, 1)], dim=-1) for a in (0, 1)
        ]
        return torch.stack(rows, dim=-3).reshape(batch, out_channels, 2 * height, 2 * width)


def _level_blocks(
    in_channels: int, out_channels: int, layers: int, attention: bool, heads: int, head_dim: int, groups: int
) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for layer in range(layers):
        blocks.append(ResidualBlock(in_channels if layer == 0 else out_channels, out_channels, groups))
        if attention:
            blocks.append(SelfAttention(out_channels, heads, head_dim, groups))
    return blocks


def _bottleneck(channels: int, heads: int, head_dim: int, groups: int) -> list[nn.Module]:
    return [
        ResidualBlock(channels, channels, groups),
        SelfAttention(channels, heads, head_dim, groups),
        ResidualBlock(channels, channels, groups),
    ]


class _CheckpointedSequence(nn.Module):
    """Runs a list of blocks; with gradient checkpointing on, each block's activations are recomputed in backward.

    diffusers' ``enable_gradient_checkpointing`` finds modules with a ``gradient_checkpointing`` attribute and gives
    them ``_gradient_checkpointing_func`` (non-reentrant ``torch.utils.checkpoint``, which supports double backward).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.blocks = nn.ModuleList()

    def run_blocks(self, hidden: torch.Tensor, checkpoint_blocks: bool = True) -> torch.Tensor:
        """Run the blocks in order.

        Args:
            hidden: Input of the first block.
            checkpoint_blocks: Checkpoint each block when gradient checkpointing is on. ``False`` when the caller
                already checkpoints the whole computation around this call: nested block checkpoints would then only
                add recomputation.
        """
        checkpointed = checkpoint_blocks and self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            hidden = self._gradient_checkpointing_func(block, hidden) if checkpointed else block(hidden)
        return hidden


class Encoder(_CheckpointedSequence):
    """Maps a ``(B, in_channels, S, S)`` input to ``2 * latent_channels`` maps (mean, log-variance) at
    ``S / 2^(levels - 1)``: conv in, residual levels with downsampling between them, bottleneck
    (Res -> Attn -> Res), GroupNorm -> SiLU -> conv out."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        block_out_channels: Sequence[int],
        layers_per_block: int,
        attention_levels: Sequence[bool],
        num_attention_heads: int,
        attention_head_dim: int,
        norm_num_groups: int,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        previous = block_out_channels[0]
        for level, (channels, attention) in enumerate(zip(block_out_channels, attention_levels)):
            self.blocks.extend(
                _level_blocks(
                    previous, channels, layers_per_block, attention, num_attention_heads, attention_head_dim,
                    norm_num_groups,
                )
            )
            if level < len(block_out_channels) - 1:
                self.blocks.append(Downsample(channels))
            previous = channels
        self.blocks.extend(_bottleneck(previous, num_attention_heads, attention_head_dim, norm_num_groups))
        self.norm_out = _norm(previous, norm_num_groups)
        self.conv_out = nn.Conv2d(previous, 2 * latent_channels, kernel_size=3, padding=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.run_blocks(self.conv_in(inputs))
        return self.conv_out(F.silu(self.norm_out(hidden)))


class Decoder(_CheckpointedSequence):
    """Mirror of :class:`Encoder`: maps a latent ``(B, latent_channels, s, s)`` to ``out_channels`` logit maps at
    ``s * 2^(levels - 1)``."""

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        block_out_channels: Sequence[int],
        layers_per_block: int,
        attention_levels: Sequence[bool],
        num_attention_heads: int,
        attention_head_dim: int,
        norm_num_groups: int,
    ) -> None:
        super().__init__()
        reversed_channels = list(reversed(block_out_channels))
        reversed_attention = list(reversed(attention_levels))
        self.conv_in = Conv2d(latent_channels, reversed_channels[0], kernel_size=3, padding=1)
        self.blocks.extend(_bottleneck(reversed_channels[0], num_attention_heads, attention_head_dim, norm_num_groups))
        previous = reversed_channels[0]
        for level, (channels, attention) in enumerate(zip(reversed_channels, reversed_attention)):
            self.blocks.extend(
                _level_blocks(
                    previous, channels, layers_per_block, attention, num_attention_heads, attention_head_dim,
                    norm_num_groups,
                )
            )
            if level < len(reversed_channels) - 1:
                self.blocks.append(Upsample(channels))
            previous = channels
        self.norm_out = _norm(previous, norm_num_groups)
        self.conv_out = Conv2d(previous, out_channels, kernel_size=3, padding=1)
        self.second_order_ops = False

    def use_second_order_ops(self, enabled: bool) -> None:
        """Use :mod:`hvae_pipeline.models.second_order`'s convolution, GroupNorm and SiLU (``True``, for a decoder
        that is differentiated twice: same values and gradients, a cheaper double backward) or PyTorch's (``False``,
        the default: cheaper when only first derivatives are taken)."""
        for module in self.modules():
            if hasattr(module, "second_order_ops"):
                module.second_order_ops = enabled

    def forward(self, latents: torch.Tensor, checkpoint_blocks: bool = True) -> torch.Tensor:
        """Decode latents into logit maps; ``checkpoint_blocks``: see :meth:`_CheckpointedSequence.run_blocks`."""
        hidden = self.run_blocks(self.conv_in(latents), checkpoint_blocks)
        return self.conv_out(_normalise_and_activate(hidden, self.norm_out, self.second_order_ops))
