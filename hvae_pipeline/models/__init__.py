"""Networks and models: the HVAE (and its VAE baseline) and the LSGAN baseline, as diffusers models."""

from .hvae import HVAEDecoderOutput, HVAEEncoderOutput, HVAEModel, HVAEOutput
from .lsgan import LSGANModel, LSGANOutput

__all__ = ["HVAEModel", "HVAEOutput", "HVAEEncoderOutput", "HVAEDecoderOutput", "LSGANModel", "LSGANOutput"]
