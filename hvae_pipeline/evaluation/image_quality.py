"""The image-quality table: PSNR/SSIM against unpaired real slices, FID, KID, MS-SSIM diversity, tumour-area JSD and
TSTR.

Per generator, ``num_samples`` pairs are drawn as for augmentation (:mod:`.synthetic`, same cache: an output folder
shared with the augmentation command reuses its samples) and compared with the real test slices. TSTR (train on
synthetic, test on real) trains the downstream U-Net on those pairs alone and scores it on the real test patients: it
judges image and mask together, and no Inception network decides it. Its reference is a U-Net of the same protocol
trained on the real train slices (when train patients are given), and ``tstr_ratio`` = TSTR DSC / reference DSC is the
number to quote. Each generator's
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

from ..metrics import (InceptionFeatureExtractor, KernelDistance, feature_statistics, frechet_distance,
                       kernel_distance, ms_ssim_diversity, tumour_area_jsd, unpaired_psnr_ssim)
from ..metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE
from ..metrics.ssim import MS_SSIM_WEIGHTS
from .generators import GeneratorSpec, check_generators, patients_seen_in_training
from .real_data import RealDataSpec, RealSplit
from ..storage.atomic_write import write_json_atomically, write_text_atomically
from .records import RecordStore
from .segmentation import UNetSettings, check_image_side, slice_dice, train_segmenter
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
        kid_subset_size: features per set and subset of KID (capped at the smaller set's size).
        kid_subsets: random subsets KID is averaged over.
        tstr: train a U-Net on the samples alone and score it on the real test slices (and a real-only reference).
    """

    num_samples: int = 1000
    seed: int = 0
    compute_fid: bool = True
    diversity_pairs: int = 1000
    area_bin_width: int = 25
    area_bins_start: int = 200
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    kid_subsets: int = DEFAULT_NUM_SUBSETS
    tstr: bool = True

    def __post_init__(self) -> None:
        if self.kid_subset_size < 2 or self.kid_subsets < 1:
            raise ValueError(f"need kid_subset_size >= 2 and kid_subsets >= 1; got {self.kid_subset_size}, "
                             f"{self.kid_subsets}")
        if self.num_samples < 2 or self.diversity_pairs < 1 or self.area_bin_width < 1 or self.area_bins_start < 0:
            raise ValueError(
                f"need num_samples >= 2, diversity_pairs >= 1, area_bin_width >= 1, area_bins_start >= 0; got "
                f"{self.num_samples}, {self.diversity_pairs}, {self.area_bin_width}, {self.area_bins_start}"
            )


    def identity(self) -> dict[str, Any]:
        """The settings as recorded with results: the KID and TSTR settings only where they differ from what records
        made before they existed did (KID at its defaults, no TSTR), so those records keep matching."""
        settings = asdict(self)
        defaults = ImageQualitySettings()
        for name in ("kid_subset_size", "kid_subsets"):
            if settings[name] == getattr(defaults, name):
                del settings[name]
        if not self.tstr:
            del settings["tstr"]
        return settings


def ms_ssim_kernel_size(side: int) -> int | None:
    """Largest MS-SSIM window (<= 7 px) that fits 5 scales of ``side``-pixel images; ``None`` below 32 px."""
    kernel = min(_LARGEST_MS_SSIM_KERNEL, side // _COARSEST_SCALE)
    return kernel if kernel >= 2 else None


class RealFeatureStatistics:
    """Inception-v3 features of the real test slices (and their mean and covariance), computed once for all
    generators."""

    def __init__(self, real_images: torch.Tensor) -> None:
        self.real_images = real_images
        self._features: np.ndarray | None = None
        self._statistics: tuple[np.ndarray, np.ndarray] | None = None

    def distances(self, generated_images: torch.Tensor, settings: ImageQualitySettings) -> tuple[float, KernelDistance]:
        """FID (as ``frechet_inception_distance``) and KID of ``generated_images`` against the real slices, from the
        same features.

        Raises:
            ImportError: the Inception weights (eval extra) are not installed.
        """
        extractor = InceptionFeatureExtractor()
        if self._features is None:
            self._features = extractor(self.real_images)
            self._statistics = feature_statistics(self._features)
        generated = extractor(generated_images)
        fid = frechet_distance(*self._statistics, *feature_statistics(generated))
        kid = kernel_distance(self._features, generated, settings.kid_subset_size, settings.kid_subsets,
                              seed=settings.seed)
        return fid, kid


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
        ``psnr_mean/std``, ``ssim_mean/std``, ``fid``, ``kid_mean/std``, ``ms_ssim_diversity``,
        ``tumour_area_jsd`` (``None`` for a
        metric not computed) and ``not_computed``: metric name -> reason.
    """
    not_computed: dict[str, str] = {}
    similarity = unpaired_psnr_ssim(generated_images, real.test_images, seed=settings.seed)
    fid = kid = None
    if not settings.compute_fid:
        not_computed["FID"] = not_computed["KID"] = "disabled (--no-fid)"
    else:
        try:
            fid, kid = (real_features or RealFeatureStatistics(real.test_images)).distances(generated_images, settings)
        except ImportError as error:  # the Inception weights come with the optional eval extra
            not_computed["FID"] = not_computed["KID"] = str(error)
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
        "fid": fid, "kid_mean": None if kid is None else kid.mean, "kid_std": None if kid is None else kid.std,
        "kid_subset_size": None if kid is None else kid.subset_size, "ms_ssim_diversity": diversity,
        "ms_ssim_kernel_size": kernel, "tumour_area_jsd": jsd,
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
    unet: UNetSettings = UNetSettings(),
    allow_training_patients: bool = False,
) -> ImageQualityOutcome:
    """Score every generator (or reuse its finished record) and write ``image_quality.json`` and ``.md``.

    Args:
        real: real slices; the test slices are scored on, the train slices (if any) train the TSTR reference.
        data_spec: the spec ``real`` was loaded from (part of each record's settings).
        generators: the generators to score (distinct names, at least one).
        out_dir: output folder (created).
        settings: metric settings.
        sampling: how samples are drawn (as for augmentation).
        progress: show progress bars.
        unet: the U-Net protocol of TSTR and its real-only reference (seeded by ``settings.seed``).
        allow_training_patients: score generators trained on some of the test patients instead of refusing them
            (the reports then say so).

    Raises:
        ValueError: no generator, repeated names, a generator's image shape differs from the real slices', or one
            was trained on a test patient (without ``allow_training_patients``).
        SettingsMismatch: ``out_dir`` holds a finished record made with other settings.
    """
    check_generators(generators, tuple(real.test_images.shape[1:]))
    seen = patients_seen_in_training(generators, data_spec.test_patients, allow_training_patients)
    if settings.tstr:
        check_image_side(unet, *real.test_images.shape[-2:])
    out_dir = Path(out_dir)
    store = RecordStore(out_dir / "runs")
    sources = {g.name: SyntheticPairs(g, sampling, out_dir / "synthetic", progress) for g in generators}
    tstr_settings = {"tstr_unet": unet.as_dict()} if settings.tstr else {}

    def settings_of(generator: GeneratorSpec) -> dict[str, Any]:
        return {"data": data_spec.identity(), "metrics": settings.identity(), "sampling": sampling.identity(),
                "generator_fingerprint": sources[generator.name].fingerprint, **tstr_settings}

    keys = {g.name: f"image-quality__{g.name}" for g in generators}
    records = {g.name: store.finished(keys[g.name], settings_of(g)) for g in generators}
    pending = [g for g in generators if records[g.name] is None]
    real_features = RealFeatureStatistics(real.test_images)
    for generator in tqdm(pending, desc="image quality", unit="generator", disable=not progress):
        images, masks = sources[generator.name].pairs(settings.num_samples, settings.seed)
        scores = score_samples(images, masks, real, settings, real_features)
        if settings.tstr:
            scores["tstr_dice"] = _trained_dice(images, masks, real, unet, settings.seed, progress,
                                                f"TSTR U-Net {generator.name}")
        records[generator.name] = store.save(keys[generator.name], settings_of(generator),
                                             {"generator": generator.name, "num_samples": len(images), **scores})
    reference = _tstr_reference(real, data_spec, settings, unet, store, progress) if settings.tstr else None
    summary = {
        "experiment": "image quality of generated pairs against real test slices",
        "data": real.description,
        "num_real_test_slices": len(real.test_images),
        "seen_in_training": seen,
        "settings": {**settings.identity(), "sampling": sampling.identity(), **tstr_settings},
        "generators": {g.name: {"path": str(g.path)} for g in generators},
        "results": {name: {k: v for k, v in record.items() if k not in ("key", "settings")}
                    for name, record in records.items()},
    }
    if reference is not None:
        summary["tstr_reference_dice"] = reference
        for result in summary["results"].values():
            if result.get("tstr_dice") is not None:
                result["tstr_ratio"] = result["tstr_dice"] / reference if reference > 0 else None
    files = {"json": out_dir / "image_quality.json", "markdown": out_dir / "image_quality.md"}
    write_json_atomically(files["json"], summary)
    write_text_atomically(files["markdown"], image_quality_markdown(summary))
    return ImageQualityOutcome(summary, len(pending), len(generators) - len(pending), files)


def _trained_dice(images: torch.Tensor, masks: torch.Tensor, real: RealSplit, unet: UNetSettings, seed: int,
                  progress: bool, description: str) -> float:
    """Mean DSC over the real test slices of a U-Net trained on ``(images, masks)``."""
    trained = train_segmenter(images, masks, unet, seed, progress, description=description)
    return float(slice_dice(trained.network, real.test_images, real.test_masks, unet.prediction_threshold).mean())


def _tstr_reference(real: RealSplit, data_spec: RealDataSpec, settings: ImageQualitySettings, unet: UNetSettings,
                    store: RecordStore, progress: bool) -> float | None:
    """DSC of the same U-Net protocol trained on the real train slices (a record of its own); ``None`` without train
    patients."""
    if len(real.train_images) == 0:
        return None
    key = "image-quality__tstr-reference"
    recorded = {"data": data_spec.identity(), "tstr_unet": unet.as_dict(), "seed": settings.seed}
    record = store.finished(key, recorded)
    if record is None:
        dice = _trained_dice(real.train_images, real.train_masks, real, unet, settings.seed, progress,
                             "TSTR reference U-Net (real train slices)")
        record = store.save(key, recorded, {"dice_mean": dice, "num_real_train_slices": len(real.train_images)})
    return record["dice_mean"]
