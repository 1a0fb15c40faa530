"""Evaluation of generators: downstream segmentation with synthetic augmentation, and image quality.

- :mod:`.real_data`: the real train/test slices (:class:`RealDataSpec`, :func:`load_real_split`).
- :mod:`.generators`: ``NAME=PATH`` generators and model fingerprints.
- :mod:`.synthetic`: paper-style synthetic pairs, drawn in fixed chunks and cached (nested subsets).
- :mod:`.segmentation`: the paper's U-Net protocol (Dice loss, RMSprop) and per-slice DSC.
- :mod:`.classic_augmentation`: random flips, rotation, scaling, elastic and intensity transforms of U-Net batches.
- :mod:`.augmentation`: DSC vs number of synthetic pairs, resumable grid over generators, N and seeds.
- :mod:`.scarcity`: DSC vs number K of real patients: classic augmentation and generators trained on the same K
  patients (:mod:`.splits`: the fixed patient splits and draws, packaged in ``splits/*.json``).
- :mod:`.image_quality`: PSNR/SSIM (unpaired), FID, MS-SSIM diversity, tumour-area JSD per generator.
- :mod:`.likelihood`: held-out importance-sampled ``log p(x, m)`` and ELBO of HVAE/VAE generators.
- :mod:`.records`, :mod:`.reporting`: atomic per-run records, markdown tables and plots.

The command line is ``hvae-evaluate`` (:mod:`hvae_pipeline.cli.evaluate`). The U-Net and SSIM metrics need the
``eval`` extra (MONAI).
"""

from .augmentation import DEFAULT_COUNTS, DEFAULT_NUM_SEEDS, AugmentationGrid, AugmentationOutcome, run_augmentation
from .generators import GeneratorSpec, parse_generator
from .image_quality import ImageQualityOutcome, ImageQualitySettings, run_image_quality
from .likelihood import LikelihoodOutcome, LikelihoodSettings, run_likelihood
from .real_data import RealDataSpec, RealSplit, load_real_split
from .records import SettingsMismatch
from .segmentation import UNET_PROTOCOLS, UNetSettings
from .synthetic import SamplingSettings

__all__ = [
    "DEFAULT_COUNTS",
    "DEFAULT_NUM_SEEDS",
    "AugmentationGrid",
    "AugmentationOutcome",
    "GeneratorSpec",
    "ImageQualityOutcome",
    "ImageQualitySettings",
    "LikelihoodOutcome",
    "LikelihoodSettings",
    "RealDataSpec",
    "RealSplit",
    "SamplingSettings",
    "SettingsMismatch",
    "UNET_PROTOCOLS",
    "UNetSettings",
    "load_real_split",
    "parse_generator",
    "run_augmentation",
    "run_image_quality",
    "run_likelihood",
]
