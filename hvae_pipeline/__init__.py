"""hvae-pipeline: paired medical image + tumour mask generation with a Hamiltonian VAE (diffusers-compatible)."""

from .models import HVAEDecoderOutput, HVAEEncoderOutput, HVAEModel, HVAEOutput, LSGANModel
from .pipeline import HVAEPipeline, HVAEPipelineOutput, SamplingBudgetExceeded

__version__ = "0.1.0"

__all__ = [
    "HVAEModel",
    "HVAEOutput",
    "HVAEEncoderOutput",
    "HVAEDecoderOutput",
    "LSGANModel",
    "HVAEPipeline",
    "HVAEPipelineOutput",
    "SamplingBudgetExceeded",
]
