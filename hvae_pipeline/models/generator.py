"""The generator interface that :class:`~hvae_pipeline.HVAEPipeline` samples through.

The HVAE (and its VAE baseline) and the LSGAN baseline share it, so that one pipeline samples, saves and evaluates
them alike; only the autoencoders add an encoder (reconstruction, fitting a latent prior to the posterior).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .hvae import HVAEDecoderOutput, HVAEEncoderOutput

# The config entries the pipeline reads: channels of the two halves of a pair, and the side of the square slices.
GENERATOR_CONFIG_KEYS = ("image_channels", "mask_channels", "sample_size")


@runtime_checkable
class PairGenerator(Protocol):
    """A model that decodes latents into (image, tumour mask) pairs.

    Attributes:
        config: A diffusers config with ``image_channels``, ``mask_channels`` (1: a binary mask, ``C > 1``: ``C``
            classes, background included) and ``sample_size`` (see :data:`GENERATOR_CONFIG_KEYS`).
        latent_shape: ``(channels, height, width)`` of one latent.
        dtype: Dtype of the weights; latents are drawn in it.
        device: Device of the weights.
    """

    @property
    def config(self) -> Any: ...

    @property
    def latent_shape(self) -> tuple[int, int, int]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> HVAEDecoderOutput | tuple:
        """Decode latents ``(B, *latent_shape)`` into images in ``[0, 1]`` and mask logits."""
        ...


@runtime_checkable
class PairAutoencoder(PairGenerator, Protocol):
    """A :class:`PairGenerator` that also encodes pairs into a posterior over latents (the HVAE and the VAE)."""

    def encode(self, images: torch.Tensor, masks: torch.Tensor, return_dict: bool = True) -> HVAEEncoderOutput | tuple:
        """Encode ``(B, image_channels, H, W)`` images and ``(B, H, W)`` masks into ``q(z | x, m)``."""
        ...


def check_pair_generator(model: Any) -> None:
    """Refuse a model the pipeline cannot sample, naming what it lacks.

    Raises:
        TypeError: ``model`` lacks a member of :class:`PairGenerator` or a config entry of
            :data:`GENERATOR_CONFIG_KEYS`.
    """
    if not isinstance(model, PairGenerator):
        missing = [name for name in ("config", "latent_shape", "dtype", "device", "decode") if not hasattr(model, name)]
        raise TypeError(f"`model` must be a pair generator such as HVAEModel or LSGANModel; a {type(model).__name__} "
                        f"lacks {', '.join(missing)}")
    missing_keys = [key for key in GENERATOR_CONFIG_KEYS if key not in model.config]
    if missing_keys:
        raise TypeError(f"`model` ({type(model).__name__}) has no {', '.join(missing_keys)} in its config; the pipeline "
                        f"needs {', '.join(GENERATOR_CONFIG_KEYS)}")


def require_encoder(model: PairGenerator, purpose: str) -> PairAutoencoder:
    """Return ``model`` as an autoencoder, or say that ``purpose`` needs one.

    Args:
        model: The pipeline's generator.
        purpose: What needs the encoder, e.g. ``"reconstruct"`` (named in the message).

    Raises:
        ValueError: ``model`` only decodes (the LSGAN baseline).
    """
    if not isinstance(model, PairAutoencoder):
        raise ValueError(f"{purpose} needs a generator with an encoder (HVAEModel, or its VAE baseline); a "
                         f"{type(model).__name__} has no encoder: it only decodes latents into pairs")
    return model
