"""Networks and models: the HVAE (and the LSGAN baseline) as diffusers models."""

from .hvae import HVAEDecoderOutput, HVAEEncoderOutput, HVAEModel, HVAEOutput

__all__ = ["HVAEModel", "HVAEOutput", "HVAEEncoderOutput", "HVAEDecoderOutput"]
