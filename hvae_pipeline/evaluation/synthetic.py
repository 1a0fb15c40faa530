"""Synthetic (image, mask) pairs drawn as the paper does, cached on disk so that evaluations resume cheaply.

Sampling follows the paper: ``z`` from the prior, decoded, mask = ``sigmoid(logit) > 0.5``, and samples whose mask
has 200 px or fewer are rejected (``min_tumour_area=201`` here, because the pipeline keeps areas
``>= min_tumour_area``).
The prior is the pipeline's default unless ``prior`` says otherwise: its fitted latent prior when it has one,
``N(0, I)`` (the paper's) when not.

Samples are drawn in fixed chunks of :data:`SAMPLES_PER_CHUNK`, chunk ``j`` of seed ``s`` from its own random
stream ``SeedSequence([s, j])``. So sample ``k`` of a (generator, seed) is the same whatever count is asked for:
the ``N`` pairs used for a smaller ``N`` are the first ``N`` of a larger one (nested subsets), and a cache holding
fewer pairs than needed is extended with new chunks, never redrawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..storage.atomic_write import atomic_file
from ..pipeline import PAPER_MIN_TUMOUR_AREA, PRIORS, HVAEPipeline, SamplingBudgetExceeded
from .generators import GeneratorSpec, load_generator, model_fingerprint

SAMPLES_PER_CHUNK = 100


@dataclass(frozen=True)
class SamplingSettings:
    """How synthetic pairs are drawn.

    Args:
        min_tumour_area: keep samples with at least this many tumour pixels (paper: area > 200 px, i.e. 201).
        mask_threshold: probability above which a mask pixel is tumour (paper: 0.5).
        batch_size: latents decoded per forward pass (part of the definition of the samples: with rejection,
            which latents are drawn together depends on it).
        prior: ``"auto"`` (the pipeline's default), ``"standard"`` (``N(0, I)``, the paper's) or ``"fitted"``.
        device: where latents are decoded (``"cpu"``, ``"cuda"``). The noise is always drawn on the CPU, but
            decoders round differently on a GPU (TF32 convolutions), which can flip a mask pixel at the threshold and
            so a rejection: GPU-drawn pairs are recorded and cached apart from CPU-drawn ones.
    """

    min_tumour_area: int = PAPER_MIN_TUMOUR_AREA
    mask_threshold: float = 0.5
    batch_size: int = 32
    prior: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.min_tumour_area < 0:
            raise ValueError(f"min_tumour_area must be >= 0, got {self.min_tumour_area}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.batch_size < 1:
            raise ValueError(f"sampling batch_size must be >= 1, got {self.batch_size}")
        if self.prior not in PRIORS:
            raise ValueError(f"sampling prior must be one of {PRIORS}, got {self.prior!r}")
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(
                f"sampling device {self.device!r} is not a torch device (e.g. cpu, cuda): {error}") from None

    def identity(self) -> dict[str, Any]:
        """The settings as recorded with results and cached samples. ``prior="auto"`` is left out: it means "as the
        saved pipeline samples", which the model fingerprint already pins; ``device="cpu"`` is left out too. So
        records made before these options existed stay valid. For the same reason the minimum tumour area is recorded
        under the key records and caches have always used, ``min_mask_area``."""
        settings = asdict(self)
        settings["min_mask_area"] = settings.pop("min_tumour_area")
        if self.prior == "auto":
            del settings["prior"]
        if self.device == "cpu":
            del settings["device"]
        return settings


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of chunk ``chunk`` of run seed ``seed``: independent streams, stable across counts and sessions."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def _save_npz_atomically(path: Path, images: np.ndarray, masks: np.ndarray) -> None:
    with atomic_file(path, "wb") as file:
        np.savez(file, images=images, masks=masks)


class SyntheticPairs:
    """Cached synthetic pairs of one generator.

    Args:
        generator: the generator (its pipeline is loaded only when new samples must be drawn).
        settings: sampling settings.
        cache_folder: folder of the cache files (one ``<name>/seed<s>-<key>.npz`` per generator and seed; ``key``
            hashes the model fingerprint and the settings, so a changed model or setting never reuses samples).
        progress: show a progress bar over the chunks being drawn.
    """

    def __init__(self, generator: GeneratorSpec, settings: SamplingSettings, cache_folder: Path,
                 progress: bool = True) -> None:
        self.generator = generator
        self.settings = settings
        self.cache_folder = Path(cache_folder)
        self.progress = progress
        self.fingerprint = model_fingerprint(generator.path)
        self._pipeline: HVAEPipeline | None = None

    def cache_path(self, seed: int) -> Path:
        """File holding the pairs of ``seed``."""
        identity = json.dumps({"model": self.fingerprint, "settings": self.settings.identity(),
                               "chunk": SAMPLES_PER_CHUNK}, sort_keys=True)
        key = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return self.cache_folder / self.generator.name / f"seed{seed}-{key}.npz"

    def _draw_chunk(self, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pipeline is None:
            self._pipeline = load_generator(self.generator).to(self.settings.device)
        try:
            output = self._pipeline(
                num_samples=SAMPLES_PER_CHUNK,
                generator=torch.Generator().manual_seed(chunk_seed(seed, chunk)),
                mask_threshold=self.settings.mask_threshold,
                min_tumour_area=self.settings.min_tumour_area,
                batch_size=self.settings.batch_size,
                output_type="np",
                prior=self.settings.prior,
            )
        except SamplingBudgetExceeded as error:
            raise SamplingBudgetExceeded(f"generator {self.generator.name}: {error}") from error
        except ValueError as error:  # prior="fitted" for a pipeline without one
            raise ValueError(f"generator {self.generator.name}: {error}") from error
        return np.ascontiguousarray(output.images.transpose(0, 3, 1, 2)), output.masks

    def pairs(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` pairs of ``seed``: images float32 ``(count, C, H, W)``, masks uint8 ``(count, H, W)``.

        Draws (and caches) only the chunks the cache lacks.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        path = self.cache_path(seed)
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        if path.is_file():
            with np.load(path) as cached:
                images.append(cached["images"])
                masks.append(cached["masks"])
        cached_count = len(images[0]) if images else 0
        missing_chunks = range(cached_count // SAMPLES_PER_CHUNK, -(-count // SAMPLES_PER_CHUNK))
        if len(missing_chunks):
            for chunk in tqdm(missing_chunks, desc=f"sampling {self.generator.name} seed {seed}", unit="chunk",
                              leave=False, disable=not self.progress):
                chunk_images, chunk_masks = self._draw_chunk(seed, chunk)
                images.append(chunk_images)
                masks.append(chunk_masks)
            _save_npz_atomically(path, np.concatenate(images), np.concatenate(masks))
        all_images, all_masks = np.concatenate(images), np.concatenate(masks)
        return torch.from_numpy(all_images[:count]), torch.from_numpy(all_masks[:count])

