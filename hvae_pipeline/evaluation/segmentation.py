"""The downstream segmenter: a 2D U-Net trained on image/mask slices, scored by DSC on held-out slices.

Two protocols (:data:`UNET_PROTOCOLS`, :meth:`UNetSettings.for_protocol`):

- ``"converged"`` (default): MONAI's residual ``UNet`` with a 1x1 output head, Adam lr 1e-3, Dice (pooled over the
  batch) + binary cross-entropy, batch 32, a fixed number of optimiser updates whatever the training-set size, so
  runs with and without synthetic pairs get the same optimisation and their difference is the data's.
- ``"paper"``: the paper's settings exactly (author notebooks): 2D U-Net, 1 channel in, 1 out, Dice loss per slice,
  RMSprop lr 1e-4, batch 32, 40 epochs (adding pairs adds updates).

Why the head (RESULTS.md section 5): with residual units, MONAI's ``UNet`` ends its top up-sampling layer with an
instance norm over its single output channel, so every image's logit map is standardised before the last 1-channel
convolution. Logits then stay near 0 (soft Dice ~0.9, cross-entropy ~ln 2) and whether the paper's short budget
starts to segment depends on the seed. The head keeps MONAI's network and gives it ``channels[0]`` output features,
mapped to one unnormalised logit by a 1x1 convolution. MONAI comes with the ``eval`` extra.
"""

from __future__ import annotations

import itertools
from collections import deque
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from ..metrics import dice_score
from ..metrics._optional import import_optional
from .classic_augmentation import ClassicAugmentation, check_augmentation

UNET_PROTOCOLS = ("converged", "paper")
OPTIMISERS = ("adam", "rmsprop")
LOSSES = ("dice+bce", "dice")


@dataclass(frozen=True)
class UNetSettings:
    """U-Net architecture and training settings (defaults: the ``"converged"`` protocol).

    Args:
        channels: feature channels per level; each level after the first halves the resolution.
        num_res_units: residual units per block of MONAI's ``UNet``.
        output_head: end with a 1x1 convolution from ``channels[0]`` features to the logit (see the module notes);
            ``False`` is MONAI's plain one-channel output, as the paper.
        optimiser: ``"adam"`` or ``"rmsprop"`` (the paper's).
        learning_rate: the optimiser's learning rate.
        loss: ``"dice+bce"`` (soft Dice plus binary cross-entropy on the logits) or ``"dice"`` (the paper's).
        dice_over_batch: pool the soft Dice over all pixels of the batch (``True``) rather than averaging per-slice
            Dice values (``False``, the paper's).
        batch_size: slices per optimiser step.
        updates: optimiser updates per U-Net whatever the number of training slices (reshuffled passes; the last
            may stop mid-pass). ``None``: train ``epochs`` passes instead, as the paper.
        epochs: passes over the training set (real slices plus the synthetic pairs) when ``updates`` is ``None``.
        prediction_threshold: sigmoid probability above which a predicted pixel is tumour when scoring.
        augment: ``"none"`` or ``"classic"``: random flips, rotation, scaling, elastic deformation and intensity
            changes of every training batch, image and mask jointly (:mod:`.classic_augmentation`, seeded by the run
            seed).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    output_head: bool = True
    optimiser: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "dice+bce"
    dice_over_batch: bool = True
    batch_size: int = 32
    updates: int | None = 180
    epochs: int = 40
    prediction_threshold: float = 0.5
    augment: str = "none"

    def __post_init__(self) -> None:
        check_augmentation(self.augment)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"U-Net channels need at least two positive levels, got {self.channels}")
        if self.num_res_units < 0 or self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(
                f"need num_res_units >= 0, epochs >= 1, batch_size >= 1, learning_rate > 0; got {self.num_res_units}, "
                f"{self.epochs}, {self.batch_size}, {self.learning_rate}"
            )
        if self.updates is not None and self.updates < 1:
            raise ValueError(f"updates must be >= 1 (or None to train a number of epochs), got {self.updates}")
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"optimiser {self.optimiser!r}: expected one of {OPTIMISERS}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: expected one of {LOSSES}")
        if not 0.0 < self.prediction_threshold < 1.0:
            raise ValueError(f"prediction_threshold must be in (0, 1), got {self.prediction_threshold}")

    @classmethod
    def for_protocol(cls, protocol: str, **overrides: Any) -> UNetSettings:
        """Settings of a named protocol (:data:`UNET_PROTOCOLS`), with ``overrides`` (``None`` values ignored).

        An ``epochs`` override without an ``updates`` one trains that many epochs instead of a fixed number of updates.
        """
        if protocol not in UNET_PROTOCOLS:
            raise ValueError(f"U-Net protocol {protocol!r}: expected one of {UNET_PROTOCOLS}")
        settings: dict[str, Any] = {} if protocol == "converged" else dict(
            output_head=False, optimiser="rmsprop", learning_rate=1e-4, loss="dice", dice_over_batch=False,
            updates=None, epochs=40)
        given = {key: value for key, value in overrides.items() if value is not None}
        if "epochs" in given and "updates" not in given:
            settings["updates"] = None
        return cls(**{**settings, **given})

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: image sides must be multiples of it."""
        return 2 ** (len(self.channels) - 1)

    @property
    def fixed_updates(self) -> bool:
        """Whether every U-Net gets the same number of updates whatever the number of synthetic pairs."""
        return self.updates is not None

    def updates_for(self, num_slices: int) -> int:
        """Optimiser updates of a U-Net trained on ``num_slices`` slices."""
        return self.updates if self.updates is not None else self.epochs * -(-num_slices // self.batch_size)

    def describe(self) -> str:
        """One line for reports: architecture, loss, optimiser and budget."""
        dice = "Dice pooled over the batch" if self.dice_over_batch else "Dice per slice"
        loss = f"{dice} + BCE" if self.loss == "dice+bce" else f"{dice} loss"
        head = " + 1x1 output head" if self.output_head else ""
        budget = (f"{self.updates} updates for every run" if self.updates is not None
                  else f"{self.epochs} epochs over real + synthetic slices")
        optimiser = {"adam": "Adam", "rmsprop": "RMSprop"}[self.optimiser]
        augment = "" if self.augment == "none" else f", {self.augment} augmentation"
        return (f"MONAI UNet channels {list(self.channels)}, {self.num_res_units} residual units{head}, {loss}, "
                f"{optimiser} lr {self.learning_rate}, batch {self.batch_size}, {budget}{augment}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings. ``augment`` is left out when ``"none"``: records made before it existed (without
        augmentation) keep matching."""
        settings = {**asdict(self), "channels": list(self.channels)}
        if self.augment == "none":
            del settings["augment"]
        return settings


@dataclass(frozen=True)
class TrainedSegmenter:
    """A trained U-Net with what its training cost: ``final_loss`` is the mean training loss over its last pass's
    worth of batches."""

    network: torch.nn.Module
    final_loss: float
    seconds: float


def check_image_side(settings: UNetSettings, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``height x width`` slices fit the U-Net's downsampling (multiples of it)."""
    if height % settings.downsampling or width % settings.downsampling:
        raise ValueError(f"a U-Net with {len(settings.channels)} levels needs image sides divisible by "
                         f"{settings.downsampling}, got {height}x{width}; use fewer --unet-channels")


def build_unet(in_channels: int, settings: UNetSettings) -> torch.nn.Module:
    """MONAI 2D ``UNet`` with ``in_channels`` inputs and one output logit map (through the 1x1 head if asked)."""
    nets = import_optional("monai.networks.nets", "The downstream U-Net")
    features = settings.channels[0] if settings.output_head else 1
    unet = nets.UNet(spatial_dims=2, in_channels=in_channels, out_channels=features, channels=tuple(settings.channels),
                     strides=(2,) * (len(settings.channels) - 1), num_res_units=settings.num_res_units)
    return torch.nn.Sequential(unet, torch.nn.Conv2d(features, 1, kernel_size=1)) if settings.output_head else unet


def _loss_function(settings: UNetSettings) -> torch.nn.Module:
    losses = import_optional("monai.losses", "The downstream U-Net's Dice loss")
    if settings.loss == "dice+bce":
        return losses.DiceCELoss(sigmoid=True, batch=settings.dice_over_batch)
    return losses.DiceLoss(sigmoid=True, batch=settings.dice_over_batch)


def _optimiser(settings: UNetSettings, network: torch.nn.Module) -> torch.optim.Optimizer:
    kind = torch.optim.Adam if settings.optimiser == "adam" else torch.optim.RMSprop
    return kind(network.parameters(), lr=settings.learning_rate)


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, settings: UNetSettings, seed: int,
                    progress: bool = True, description: str = "U-Net", device: str = "cpu") -> TrainedSegmenter:
    """Train a U-Net from scratch on ``images`` ``(N, C, H, W)`` and binary ``masks`` ``(N, H, W)``.

    Args:
        images: training images in ``[0, 1]``.
        masks: their 0/1 masks.
        settings: architecture, loss, optimiser, budget (``settings.updates`` updates, else ``settings.epochs``
            passes over the slices) and augmentation.
        seed: seeds the weight initialisation, the shuffling order and the augmentation (same seed, same data: same
            network).
        progress: show a progress bar over the updates.
        description: label of the progress bar.
        device: where the U-Net trains (``"cpu"``, ``"cuda"``); initialisation and shuffling stay on the CPU.
    """
    if len(images) == 0 or len(images) != len(masks):
        raise ValueError(f"need as many masks as images (>= 1), got {len(images)} images and {len(masks)} masks")
    check_image_side(settings, *images.shape[-2:])
    loss_function = _loss_function(settings)
    torch.manual_seed(seed)  # the initial weights
    # channels_last: oneDNN's convolution gradients run ~10 % faster on CPU in that layout (BENCHMARKS.md, last
    # section); same network and data, results equal up to float rounding.
    network = build_unet(images.shape[1], settings).to(device, memory_format=torch.channels_last)
    optimiser = _optimiser(settings, network)
    loader = DataLoader(TensorDataset(images, masks), batch_size=settings.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    total_updates = settings.updates_for(len(images))
    # Reshuffled passes, cut after the last update: a fixed-update run may stop mid-pass.
    batches = itertools.islice(itertools.chain.from_iterable(loader for _ in itertools.count()), total_updates)
    start = time.perf_counter()
    network.train()
    recent: deque[float] = deque(maxlen=len(loader))  # the last pass's worth of batch losses (final_loss)
    augmentation = ClassicAugmentation(seed) if settings.augment == "classic" else None
    bar = tqdm(batches, total=total_updates, desc=description, unit="update", leave=False, disable=not progress)
    for batch_images, batch_masks in bar:
        optimiser.zero_grad(set_to_none=True)
        if augmentation is not None:
            batch_images, batch_masks = augmentation(batch_images, batch_masks)
        batch_images = batch_images.to(device, memory_format=torch.channels_last)
        batch_masks = batch_masks.to(device)
        loss = loss_function(network(batch_images), batch_masks[:, None].float())
        loss.backward()
        optimiser.step()
        recent.append(loss.item())
        bar.set_postfix(loss=f"{recent[-1]:.3f}", refresh=False)
    network.eval()
    return TrainedSegmenter(network, float(np.mean(recent)), time.perf_counter() - start)


@torch.inference_mode()
def predict_masks(network: torch.nn.Module, images: torch.Tensor, threshold: float = 0.5,
                  batch_size: int = 64) -> torch.Tensor:
    """Binary masks uint8 ``(N, H, W)`` on the CPU: ``sigmoid(logit) > threshold`` of the network on ``images``."""
    network.eval()
    device = next(network.parameters()).device
    predicted = [(torch.sigmoid(network(images[start:start + batch_size].to(device, memory_format=torch.channels_last)))
                  [:, 0] > threshold).cpu() for start in range(0, len(images), batch_size)]
    return torch.cat(predicted).to(torch.uint8)


def slice_dice(network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor,
               threshold: float = 0.5) -> np.ndarray:
    """Per-slice DSC (float64 ``(N,)``, in ``[0, 1]``) of the network's thresholded predictions against ``masks``.

    Uses :func:`hvae_pipeline.metrics.dice_score` (a slice where both prediction and target are empty scores 1).
    """
    return dice_score(predict_masks(network, images, threshold), masks).numpy()
