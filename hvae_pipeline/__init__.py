"""hvae-pipeline: paired medical image + tumour mask generation with a Hamiltonian VAE (diffusers-compatible)."""

from .models import (
    GaussianLatentPrior,
    HVAEDecoderOutput,
    HVAEEncoderOutput,
    HVAEModel,
    HVAEOutput,
    LSGANModel,
    fit_latent_prior,
)
from .pipeline import HVAEPipeline, HVAEPipelineOutput, SamplingBudgetExceeded

__version__ = "0.1.0"

__all__ = [
    "HVAEModel",
    "HVAEOutput",
    "HVAEEncoderOutput",
    "HVAEDecoderOutput",
    "LSGANModel",
    "GaussianLatentPrior",
    "fit_latent_prior",
    "HVAEPipeline",
    "HVAEPipelineOutput",
    "SamplingBudgetExceeded",
]
