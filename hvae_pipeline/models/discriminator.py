"""The PatchGAN discriminator of the discriminative HVAE: it scores (image, mask) pairs patch by patch.

Used only while training (``training/objectives.py``, option ``objectives.adversarial``): it judges the HVAE's
*reconstructions* against the real pairs, and its hinge loss sharpens the decoder. It is saved with the training
checkpoints, never with the exported pipeline, which samples without it.

Reference: P. Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017 (the
PatchGAN); the discriminative HVAE of Kebaili et al. (arXiv 2406.11659) judges its reconstructions with one.
This module's path is recorded in saved discriminators (``config.json``): do not move the class.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config


class PatchDiscriminator(ModelMixin, ConfigMixin):
    r"""Strided 4 x 4 convolutions (GroupNorm, LeakyReLU) ending in one realism logit per patch.

    The first convolution (stride 2) has no normalisation, the last maps to one channel; between them ``num_layers``
    convolutions double the width up to ``8 x base_channels``, all at stride 2 but the last (stride 1), as pix2pix's
    70 x 70 PatchGAN for three layers. GroupNorm instead of pix2pix's
    BatchNorm: a patch's score then does not depend on the other pairs of the batch, so the real and reconstructed
    batches can be scored apart and the scores are the same at any batch size.

    Args:
        in_channels: Channels of the scored pairs: image channels plus mask channels.
        base_channels: Width of the first convolution.
        num_layers: Convolutions after the first (all strided but the last); an ``H x W`` pair gets
            ``(H / 2^num_layers - 2) x (W / 2^num_layers - 2)`` logits.
        norm_num_groups: Groups of every GroupNorm (must divide every width).
    """

    @register_to_config
    def __init__(self, in_channels: int = 2, base_channels: int = 64, num_layers: int = 3,
                 norm_num_groups: int = 8) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or num_layers < 1:
            raise ValueError(f"`in_channels`, `base_channels` and `num_layers` must be >= 1, got {in_channels}, "
                             f"{base_channels}, {num_layers}")
        widths = [base_channels * min(2**level, 8) for level in range(num_layers + 1)]
        if any(width % norm_num_groups for width in widths[1:]):
            raise ValueError(f"`norm_num_groups`={norm_num_groups} must divide every width {widths[1:]}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for level in range(1, num_layers + 1):
            stride = 2 if level < num_layers else 1
            layers += [nn.Conv2d(widths[level - 1], widths[level], 4, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(norm_num_groups, widths[level]), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Realism logits of shape ``(B, 1, h, w)``, one per patch (positive: judged real).

        Args:
            pairs: ``(B, in_channels, H, W)``: image channels in ``[0, 1]`` then mask channels (0/1 planes for real
                pairs, probabilities for reconstructions).
        """
        if pairs.ndim != 4 or pairs.shape[1] != self.config.in_channels:
            raise ValueError(f"`pairs` must have shape (B, {self.config.in_channels}, H, W), got {tuple(pairs.shape)}")
        return self.layers(pairs)
