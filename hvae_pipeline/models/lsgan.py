"""The LSGAN baseline of the paper: a least-squares GAN whose generator emits (image, mask) pairs.

The generator is the HVAE's decoder architecture fed with ``z ~ N(0, I)`` of the same latent shape, so that
:class:`~hvae_pipeline.pipeline.HVAEPipeline` samples it exactly like the HVAE and the VAE (``latent_shape``,
``decode``), and the comparison is between objectives, not networks. Discriminator and generator live in one diffusers
model so that one Accelerate loop, one checkpoint and one ``save_pretrained`` serve both.

Reference: X. Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017.
This module's path is recorded in saved pipelines (``model_index.json``): do not move the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from .inputs import NETWORK_CONFIG_KINDS, ConfigFileChecked, check_config_types, pair_to_channels
from .blocks import Decoder
from .hvae import HVAEDecoderOutput, split_decoder_logits


@dataclass
class LSGANOutput(BaseOutput):
    """Output of :meth:`LSGANModel.forward`.

    Args:
        loss: ``generator_loss + discriminator_loss`` (each only reaches its own network's parameters).
        generator_loss: ``0.5 E[(D(G(z)) - 1)^2]``, the expectation over samples and patch scores.
        discriminator_loss: ``0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]``.
        real_score: Mean discriminator patch score on real pairs (target 1).
        fake_score: Mean discriminator patch score on generated pairs (target 0).

    Fields after ``loss`` default to ``None`` only so that Accelerate's mixed-precision wrapper can rebuild the output
    from a dict; the model always fills every field.
    """

    loss: torch.Tensor
    generator_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None
    real_score: torch.Tensor | None = None
    fake_score: torch.Tensor | None = None


class Discriminator(nn.Module):
    """Spectrally normalised strided convolutions (LeakyReLU) ending in a map of least-squares scores, one per patch.

    One score per patch (PatchGAN, Isola et al., CVPR 2017) gives the generator a signal per region instead of one
    per image. Spectral normalisation (Miyato et al., ICLR 2018) bounds the discriminator's Lipschitz constant: with
    GroupNorm in its place, the discriminator scored real BraTS pairs ~1 and generated ones ~0 from step 20 on;
    normalisation layers are left out because they would undo the bound. Neither alone made BraTS training stable:
    that took the recipe of ``training/configs/lsgan-cpu-128.yaml`` as well (RESULTS.md lists what failed).
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)),
                                   nn.LeakyReLU(0.2)]
        previous = channels[0]
        for width in channels:
            layers += [spectral_norm(nn.Conv2d(previous, width, kernel_size=4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            previous = width
        layers.append(spectral_norm(nn.Conv2d(previous, 1, kernel_size=3, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Scores of shape ``(B, H / 2^levels, W / 2^levels)``; the losses average over patches and samples."""
        return self.layers(pairs)[:, 0]


# The kind of each constructor argument (see hvae_pipeline.models.inputs.CONFIG_KINDS).
CONFIG_KINDS = {**NETWORK_CONFIG_KINDS, "discriminator_channels": "counts", "discriminator_noise_std": "number >= 0"}


class LSGANModel(ConfigFileChecked, ModelMixin, ConfigMixin):
    r"""Least-squares GAN over (image, mask) pairs.

    Args:
        image_channels: Number of image channels.
        mask_channels: 1 for a binary mask, ``C > 1`` for ``C`` classes (background included).
        sample_size: Height and width of the slices.
        block_out_channels: Generator levels, as the HVAE decoder's (reversed internally).
        layers_per_block: Residual blocks per generator level.
        attention_levels: Self-attention per level, as the HVAE's.
        latent_channels: Channels of the latent map ``z`` (shape as the HVAE's latent).
        num_attention_heads: Heads of the generator's attention.
        attention_head_dim: Channels per attention head.
        norm_num_groups: Groups of the generator's GroupNorms.
        discriminator_channels: Widths of the discriminator's strided convolutions.
        discriminator_noise_std: Standard deviation of the Gaussian "instance noise" added to real and generated pairs
            before the discriminator scores them (0 disables it). Real masks are exactly 0/1 and real backgrounds
            exactly 0, generated ones never are; without noise the discriminator separates them by value alone, wins
            within a few dozen steps and leaves the generator no gradient (seen on BraTS at 128 x 128). Noise makes
            the two distributions overlap (Sonderby et al. 2017, "Amortised MAP inference for image super-resolution").
    """

    @register_to_config
    def __init__(
        self,
        image_channels: int = 1,
        mask_channels: int = 1,
        sample_size: int = 128,
        block_out_channels: Sequence[int] = (16, 32, 64, 64),
        layers_per_block: int = 1,
        attention_levels: Sequence[bool] = (False, False, False, True),
        latent_channels: int = 3,
        num_attention_heads: int = 2,
        attention_head_dim: int = 32,
        norm_num_groups: int = 8,
        discriminator_channels: Sequence[int] = (32, 64, 128, 128),
        discriminator_noise_std: float = 0.1,
    ) -> None:
        check_config_types(locals(), CONFIG_KINDS)  # before any arithmetic: a saved "32" or 2.5 fails by its name
        super().__init__()
        if len(attention_levels) != len(block_out_channels):
            raise ValueError("`attention_levels` must have one entry per level of `block_out_channels`")
        if sample_size % 2 ** (len(block_out_channels) - 1) != 0:
            raise ValueError(f"`sample_size`={sample_size} must be a multiple of 2^(levels - 1)")
        self.generator = Decoder(
            latent_channels,
            image_channels + mask_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_levels=tuple(attention_levels),
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
        )
        self.discriminator = Discriminator(image_channels + mask_channels, discriminator_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one latent sample, as the HVAE's: ``(latent_channels, s, s)``."""
        side = self.config.sample_size // 2 ** (len(self.config.block_out_channels) - 1)
        return (self.config.latent_channels, side, side)

    @apply_forward_hook  # moves the weights to the execution device under `enable_model_cpu_offload()`
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> HVAEDecoderOutput | tuple:
        """Generate pairs from latents ``z`` of shape ``(B, *latent_shape)`` (same output as the HVAE's decode)."""
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"`z` must have shape (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        output = split_decoder_logits(self.generator(z.to(self.dtype)), self.config.image_channels)
        return output if return_dict else output.to_tuple()

    def _soft_pairs(self, decoded: HVAEDecoderOutput) -> torch.Tensor:
        """Generated pairs as the discriminator sees real ones: mask probabilities in place of 0/1 or one-hot planes."""
        if self.config.mask_channels == 1:
            mask_planes = torch.sigmoid(decoded.mask_logits)
        else:
            mask_planes = decoded.mask_logits.softmax(dim=1)
        return torch.cat([decoded.images, mask_planes], dim=1)

    def _noisy(self, pairs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``pairs`` plus the discriminator's instance noise (``discriminator_noise_std``)."""
        std = self.config.discriminator_noise_std
        if std == 0:
            return pairs
        return pairs + std * randn_tensor(pairs.shape, generator=generator, device=pairs.device, dtype=pairs.dtype)

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> LSGANOutput | tuple:
        """Both least-squares losses on one batch, for simultaneous updates with one optimiser.

        The generator loss scores fakes through a *detached copy* of the discriminator's parameters and the
        discriminator loss scores *detached* fakes, so ``loss.backward()`` gives each network the gradient of its own
        objective only.

        Args:
            images: ``(B, image_channels, H, W)`` real images in ``[0, 1]``.
            masks: ``(B, H, W)`` real masks (0/1 or class ids).
            generator: Random generator for the latents and the instance noise.
            return_dict: Return an :class:`LSGANOutput` rather than a tuple.
        """
        config = self.config
        real, _ = pair_to_channels(images, masks, config.image_channels, config.mask_channels, config.sample_size)
        real = real.to(self.dtype)
        z = randn_tensor((real.shape[0], *self.latent_shape), generator=generator, device=real.device, dtype=real.dtype)
        fake = self._noisy(self._soft_pairs(self.decode(z)), generator)
        real = self._noisy(real, generator)
        frozen = {name: parameter.detach() for name, parameter in self.discriminator.named_parameters()}
        generator_loss = 0.5 * (functional_call(self.discriminator, frozen, (fake,)) - 1).pow(2).mean()
        real_scores = self.discriminator(real)
        fake_scores = self.discriminator(fake.detach())
        discriminator_loss = 0.5 * (real_scores - 1).pow(2).mean() + 0.5 * fake_scores.pow(2).mean()
        output = LSGANOutput(
            loss=generator_loss + discriminator_loss,
            generator_loss=generator_loss,
            discriminator_loss=discriminator_loss,
            real_score=real_scores.mean().detach(),
            fake_score=fake_scores.mean().detach(),
        )
        return output if return_dict else output.to_tuple()
