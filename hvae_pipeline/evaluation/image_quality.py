"""The image-quality table: PSNR/SSIM against unpaired real slices, FID, MS-SSIM diversity and tumour-area JSD.

Per generator, ``num_samples`` pairs are drawn as for augmentation (:mod:`.synthetic`, same cache: an output folder
shared with the augmentation command reuses its samples) and compared with the real test slices. Each generator's
result is a record in ``OUT/runs/image-quality__<generator>.json`` (resumable); the table is rebuilt from them into
``OUT/image_quality.json`` and ``OUT/image_quality.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import (InceptionFeatureExtractor, feature_statistics, frechet_distance, ms_ssim_diversity,
                       tumour_area_jsd, unpaired_psnr_ssim)
from ..metrics.ssim import MS_SSIM_WEIGHTS
from .generators import GeneratorSpec, check_generators
from .real_data import RealDataSpec, RealSplit
from ..storage.atomic_write import write_json_atomically, write_text_atomically
from .records import RecordStore
from .reporting import image_quality_markdown
from .synthetic import SamplingSettings, SyntheticPairs

# MS-SSIM halves the image 4 times; the window must fit the coarsest scale (side / 16). 7 px suits 128 x 128.
_COARSEST_SCALE = 2 ** (len(MS_SSIM_WEIGHTS) - 1)
_LARGEST_MS_SSIM_KERNEL = 7


@dataclass(frozen=True)
class ImageQualitySettings:
    """How generated samples are scored.

    Args:
        num_samples: samples K per generator (paper-like default 1000).
        seed: sampling seed (also seeds the random pairings of PSNR/SSIM and MS-SSIM).
        compute_fid: compute FID (Inception-v3 on CPU: about a minute per 1000 images at 128 x 128 on 2 cores).
        diversity_pairs: random pairs of distinct samples averaged by the MS-SSIM diversity.
        area_bin_width: tumour-area histogram bin width in pixels (paper: 25).
        area_bins_start: left edge of the first regular area bin (paper: 200; smaller areas share one bin).
    """

    num_samples: int = 1000
    seed: int = 0
    compute_fid: bool = True
    diversity_pairs: int = 1000
    area_bin_width: int = 25
    area_bins_start: int = 200

    def __post_init__(self) -> None:
        if self.num_samples < 2 or self.diversity_pairs < 1 or self.area_bin_width < 1 or self.area_bins_start < 0:
            raise ValueError(
                f"need num_samples >= 2, diversity_pairs >= 1, area_bin_width >= 1, area_bins_start >= 0; got "
                f"{self.num_samples}, {self.diversity_pairs}, {self.area_bin_width}, {self.area_bins_start}"
            )


def ms_ssim_kernel_size(side: int) -> int | None:
    """Largest MS-SSIM window (<= 7 px) that fits 5 scales of ``side``-pixel images; ``None`` below 32 px."""
    kernel = min(_LARGEST_MS_SSIM_KERNEL, side // _COARSEST_SCALE)
    return kernel if kernel >= 2 else None


class RealFeatureStatistics:
    """Inception-v3 feature mean and covariance of the real test slices, computed once for all generators."""

    def __init__(self, real_images: torch.Tensor) -> None:
        self.real_images = real_images
        self._statistics: tuple[np.ndarray, np.ndarray] | None = None

    def fid(self, generated_images: torch.Tensor) -> float:
        """FID of ``generated_images`` against the real slices (same definition as ``frechet_inception_distance``).

        Raises:
            ImportError: the Inception weights (eval extra) are not installed.
        """
        extractor = InceptionFeatureExtractor()
        if self._statistics is None:
            self._statistics = feature_statistics(extractor(self.real_images))
        return frechet_distance(*self._statistics, *feature_statistics(extractor(generated_images)))


def score_samples(generated_images: torch.Tensor, generated_masks: torch.Tensor, real: RealSplit,
                  settings: ImageQualitySettings, real_features: RealFeatureStatistics | None = None) -> dict[str, Any]:
    """All image-quality metrics of one generator's samples against the real test slices.

    Args:
        generated_images: samples ``(K, C, H, W)`` in ``[0, 1]``.
        generated_masks: their binary masks ``(K, H, W)``.
        real: the real slices (test part used).
        settings: metric settings.
        real_features: the real slices' Inception statistics, shared between generators (made here if ``None``).

    Returns:
        ``psnr_mean/std``, ``ssim_mean/std``, ``fid``, ``ms_ssim_diversity``, ``tumour_area_jsd`` (``None`` for a
        metric not computed) and ``not_computed``: metric name -> reason.
    """
    not_computed: dict[str, str] = {}
    similarity = unpaired_psnr_ssim(generated_images, real.test_images, seed=settings.seed)
    fid = None
    if not settings.compute_fid:
        not_computed["FID"] = "disabled (--no-fid)"
    else:
        try:
            fid = (real_features or RealFeatureStatistics(real.test_images)).fid(generated_images)
        except ImportError as error:  # the Inception weights come with the optional eval extra
            not_computed["FID"] = str(error)
    diversity = None
    kernel = ms_ssim_kernel_size(min(generated_images.shape[-2:]))
    if kernel is None:
        not_computed["MS-SSIM"] = (f"images of {tuple(generated_images.shape[-2:])} px are too small for 5-scale "
                                   f"MS-SSIM (needs >= {2 * _COARSEST_SCALE} px a side)")
    else:
        diversity = ms_ssim_diversity(generated_images, num_pairs=settings.diversity_pairs, kernel_size=kernel,
                                      seed=settings.seed)
    jsd = tumour_area_jsd(real.test_masks, generated_masks, bin_width=settings.area_bin_width,
                          start=settings.area_bins_start)
    return {
        "psnr_mean": similarity.psnr_mean, "psnr_std": similarity.psnr_std,
        "ssim_mean": similarity.ssim_mean, "ssim_std": similarity.ssim_std,
        "fid": fid, "ms_ssim_diversity": diversity, "ms_ssim_kernel_size": kernel, "tumour_area_jsd": jsd,
        "not_computed": not_computed,
    }


@dataclass
class ImageQualityOutcome:
    """What :func:`run_image_quality` did: the summary it wrote, generators scored now and found finished."""

    summary: dict[str, Any]
    scored_generators: int
    skipped_generators: int
    files: dict[str, Path]


def run_image_quality(
    real: RealSplit,
    data_spec: RealDataSpec,
    generators: list[GeneratorSpec],
    out_dir: Path,
    settings: ImageQualitySettings = ImageQualitySettings(),
    sampling: SamplingSettings = SamplingSettings(),
    progress: bool = True,
) -> ImageQualityOutcome:
    """Score every generator (or reuse its finished record) and write ``image_quality.json`` and ``.md``.

    Args:
        real: real slices; only the test slices are used.
        data_spec: the spec ``real`` was loaded from (part of each record's settings).
        generators: the generators to score (distinct names, at least one).
        out_dir: output folder (created).
        settings: metric settings.
        sampling: how samples are drawn (as for augmentation).
        progress: show progress bars.

    Raises:
        ValueError: no generator, repeated names, a generator's image shape differs from the real slices'.
        SettingsMismatch: ``out_dir`` holds a finished record made with other settings.
    """
    check_generators(generators, tuple(real.test_images.shape[1:]))
    out_dir = Path(out_dir)
    store = RecordStore(out_dir / "runs")
    sources = {g.name: SyntheticPairs(g, sampling, out_dir / "synthetic", progress) for g in generators}

    def settings_of(generator: GeneratorSpec) -> dict[str, Any]:
        return {"data": data_spec.identity(), "metrics": asdict(settings), "sampling": sampling.identity(),
                "generator_fingerprint": sources[generator.name].fingerprint}

    keys = {g.name: f"image-quality__{g.name}" for g in generators}
    records = {g.name: store.finished(keys[g.name], settings_of(g)) for g in generators}
    pending = [g for g in generators if records[g.name] is None]
    real_features = RealFeatureStatistics(real.test_images)
    for generator in tqdm(pending, desc="image quality", unit="generator", disable=not progress):
        images, masks = sources[generator.name].pairs(settings.num_samples, settings.seed)
        scores = score_samples(images, masks, real, settings, real_features)
        records[generator.name] = store.save(keys[generator.name], settings_of(generator),
                                             {"generator": generator.name, "num_samples": len(images), **scores})
    summary = {
        "experiment": "image quality of generated pairs against real test slices",
        "data": real.description,
        "num_real_test_slices": len(real.test_images),
        "settings": {**asdict(settings), "sampling": sampling.identity()},
        "generators": {g.name: {"path": str(g.path)} for g in generators},
        "results": {name: {k: v for k, v in record.items() if k not in ("key", "settings")}
                    for name, record in records.items()},
    }
    files = {"json": out_dir / "image_quality.json", "markdown": out_dir / "image_quality.md"}
    write_json_atomically(files["json"], summary)
    write_text_atomically(files["markdown"], image_quality_markdown(summary))
    return ImageQualityOutcome(summary, len(pending), len(generators) - len(pending), files)
