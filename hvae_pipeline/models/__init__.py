"""Networks and models: the HVAE (and its VAE baseline), its fitted latent prior and the
LSGAN baseline, as diffusers models, and the generator interface they share with the pipeline."""

from .generator import PairAutoencoder, PairGenerator
from .hvae import HVAEDecoderOutput, HVAEEncoderOutput, HVAEModel, HVAEOutput
from .latent_prior import GaussianLatentPrior, fit_latent_prior
from .lsgan import LSGANModel, LSGANOutput

__all__ = ["HVAEModel", "HVAEOutput", "HVAEEncoderOutput", "HVAEDecoderOutput", "LSGANModel", "LSGANOutput",
           "GaussianLatentPrior", "fit_latent_prior", "PairGenerator", "PairAutoencoder"]
