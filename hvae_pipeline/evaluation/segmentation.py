"""The downstream segmenter of the paper: a 2D U-Net trained with a Dice loss, scored by DSC on held-out slices.

Paper protocol (author notebooks): 2D U-Net, 1 channel in, 1 out, Dice loss, RMSprop lr 1e-4, batch 32, 40 epochs.
The network is MONAI's residual ``UNet``; MONAI comes with the ``eval`` extra.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ..metrics import dice_score
from ..metrics._optional import import_optional


@dataclass(frozen=True)
class UNetSettings:
    """U-Net architecture and training settings (defaults: the paper's protocol).

    Args:
        channels: feature channels per level; each level after the first halves the resolution.
        num_res_units: residual units per block of MONAI's ``UNet``.
        epochs: passes over the training set (real slices plus the synthetic pairs).
        batch_size: slices per optimiser step.
        learning_rate: RMSprop learning rate.
        prediction_threshold: sigmoid probability above which a predicted pixel is tumour when scoring.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-4
    prediction_threshold: float = 0.5

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"U-Net channels need at least two positive levels, got {self.channels}")
        if self.num_res_units < 0 or self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(
                f"need num_res_units >= 0, epochs >= 1, batch_size >= 1, learning_rate > 0; got {self.num_res_units}, "
                f"{self.epochs}, {self.batch_size}, {self.learning_rate}"
            )
        if not 0.0 < self.prediction_threshold < 1.0:
            raise ValueError(f"prediction_threshold must be in (0, 1), got {self.prediction_threshold}")

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: image sides must be multiples of it."""
        return 2 ** (len(self.channels) - 1)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {**asdict(self), "channels": list(self.channels)}


@dataclass(frozen=True)
class TrainedSegmenter:
    """A trained U-Net with what its training cost: ``final_loss`` is the mean Dice loss of the last epoch."""

    network: torch.nn.Module
    final_loss: float
    seconds: float


def check_image_side(settings: UNetSettings, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``height x width`` slices fit the U-Net's downsampling (multiples of it)."""
    if height % settings.downsampling or width % settings.downsampling:
        raise ValueError(f"a U-Net with {len(settings.channels)} levels needs image sides divisible by "
                         f"{settings.downsampling}, got {height}x{width}; use fewer --unet-channels")


def build_unet(in_channels: int, settings: UNetSettings) -> torch.nn.Module:
    """MONAI 2D ``UNet`` with ``in_channels`` inputs and one output logit map."""
    nets = import_optional("monai.networks.nets", "The downstream U-Net")
    return nets.UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=tuple(settings.channels),
                     strides=(2,) * (len(settings.channels) - 1), num_res_units=settings.num_res_units)


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, settings: UNetSettings, seed: int,
                    progress: bool = True, description: str = "U-Net", device: str = "cpu") -> TrainedSegmenter:
    """Train a U-Net from scratch on ``images`` ``(N, C, H, W)`` and binary ``masks`` ``(N, H, W)``.

    Args:
        images: training images in ``[0, 1]``.
        masks: their 0/1 masks.
        settings: architecture and optimiser settings.
        seed: seeds the weight initialisation and the shuffling order (same seed, same data: same network).
        progress: show a progress bar over epochs.
        description: label of the progress bar.
        device: where the U-Net trains (``"cpu"``, ``"cuda"``); initialisation and shuffling stay on the CPU.
    """
    if len(images) == 0 or len(images) != len(masks):
        raise ValueError(f"need as many masks as images (>= 1), got {len(images)} images and {len(masks)} masks")
    check_image_side(settings, *images.shape[-2:])
    losses = import_optional("monai.losses", "The downstream U-Net's Dice loss")
    torch.manual_seed(seed)  # the initial weights
    network = build_unet(images.shape[1], settings).to(device)
    optimiser = torch.optim.RMSprop(network.parameters(), lr=settings.learning_rate)
    dice_loss = losses.DiceLoss(sigmoid=True)
    loader = DataLoader(TensorDataset(images, masks), batch_size=settings.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    network.train()
    epoch_loss = float("nan")
    bar = tqdm(range(settings.epochs), desc=description, unit="epoch", leave=False, disable=not progress)
    for _ in bar:
        total, seen = 0.0, 0
        for batch_images, batch_masks in loader:
            optimiser.zero_grad(set_to_none=True)
            batch_images, batch_masks = batch_images.to(device), batch_masks.to(device)
            loss = dice_loss(network(batch_images), batch_masks[:, None].float())
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch_images)
            seen += len(batch_images)
        epoch_loss = total / seen
        bar.set_postfix(dice_loss=f"{epoch_loss:.3f}")
    network.eval()
    return TrainedSegmenter(network, epoch_loss, time.perf_counter() - start)


@torch.inference_mode()
def predict_masks(network: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5,
                  batch_size: int = 64) -> torch.Tensor:
    """Binary masks uint8 ``(N, H, W)`` on the CPU: ``sigmoid(logit) > threshold`` of the network on ``images``."""
    network.eval()
    device = next(network.parameters()).device
    predicted = [(torch.sigmoid(network(images[start:start + batch_size].to(device)))[:, 0] > threshold).cpu()
                 for start in range(0, len(images), batch_size)]
    return torch.cat(predicted).to(torch.uint8)


def slice_dice(network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
               threshold: float = 0.5) -> np.ndarray:
    """Per-slice DSC (float64 ``(N,)``, in ``[0, 1]``) of the network's thresholded predictions against ``masks``.

    Uses :func:`hvae_pipeline.metrics.dice_score` (a slice where both prediction and target are empty scores 1).
    """
    return dice_score(predict_masks(network, images, threshold), masks).numpy()
