"""The downstream-augmentation experiment: DSC of a U-Net trained on real slices plus N synthetic pairs.

For every generator, every N in ``counts`` and every seed, a U-Net is trained from scratch on the real train
slices plus the first N synthetic pairs of that (generator, seed) and scored on the test patients' slices. N = 0
(real slices only) does not depend on the generator: it runs once per seed, as ``real-only``, and is the N = 0
point of every generator.

The default U-Net protocol gives every run the same number of optimiser updates, so a generator's gain over real-only
at the same seed is what its pairs add. The paper's protocol trains a fixed number of epochs, so adding N pairs also
adds updates; its optional equal-update control separates the two: for each chosen N, real-only runs trained for as
many updates as a run with N pairs (``real-only-equal-updates``, epochs from :func:`equal_update_epochs`). Either way
the summary states each generator's paired gain (by seed) over its like-for-like baseline with a 95 % interval.

Finished runs are stored as records (:mod:`.records`) and skipped when the experiment is run again; the summary is
rebuilt from the records of the current grid.

Output folder layout::

    OUT/runs/augmentation__<generator>__n<N>__seed<s>.json   one record per finished run
    OUT/synthetic/<generator>/seed<s>-<key>.npz              cached synthetic pairs (see .synthetic)
    OUT/augmentation.json, OUT/augmentation.md, OUT/augmentation.png   summary, table, plot
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .generators import (EQUAL_UPDATES, REAL_ONLY, GeneratorSpec, check_distinct_names, check_image_shape,
                         patients_seen_in_training)
from .real_data import RealDataSpec, RealSplit
from ..storage.atomic_write import write_json_atomically, write_text_atomically
from .records import RecordStore
from .reporting import augmentation_markdown, plot_augmentation
from .segmentation import UNetSettings, check_image_side, slice_dice, train_segmenter
from .synthetic import SamplingSettings, SyntheticPairs

DEFAULT_COUNTS = (0, 100, 300, 500, 1000, 2000)
DEFAULT_NUM_SEEDS = 5


@dataclass(frozen=True)
class AugmentationGrid:
    """Which runs make up the experiment.

    Args:
        generators: the generators compared (may be empty when ``counts`` is ``(0,)``).
        counts: numbers N of synthetic pairs added to the real train slices, distinct, >= 0.
        seeds: run seeds (U-Net initialisation, shuffling order and which synthetic pairs are drawn).
        equal_update_counts: the N (> 0) whose equal-update control is run: real-only U-Nets trained for as many
            optimiser updates as with N synthetic pairs. Control runs are real-only runs, planned when ``counts``
            holds 0 (so a process given only N > 0 leaves them to the one given N = 0).
    """

    generators: tuple[GeneratorSpec, ...]
    counts: tuple[int, ...] = DEFAULT_COUNTS
    seeds: tuple[int, ...] = tuple(range(DEFAULT_NUM_SEEDS))
    equal_update_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.counts:
            raise ValueError("the list of synthetic counts N is empty; give at least one (e.g. 0 100 500)")
        negative = [n for n in self.counts if n < 0]
        if negative:
            raise ValueError(f"synthetic counts N must be >= 0, got {negative}")
        if len(set(self.counts)) != len(self.counts):
            raise ValueError(f"synthetic counts N are repeated: {list(self.counts)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"need at least one seed and no repeated seed, got {list(self.seeds)}")
        controls = self.equal_update_counts
        if min(controls, default=1) < 1 or len(set(controls)) != len(controls):
            raise ValueError(f"equal-update control counts N must be distinct and > 0, got {list(controls)}")
        if max(self.counts) > 0 and not self.generators:
            raise ValueError("synthetic counts N > 0 need at least one generator (--generator NAME=PATH)")
        check_distinct_names(list(self.generators))

    @property
    def sorted_counts(self) -> tuple[int, ...]:
        """The counts in increasing order."""
        return tuple(sorted(self.counts))

    @property
    def planned_equal_update_counts(self) -> tuple[int, ...]:
        """The equal-update control counts this grid runs, in increasing order (none unless ``counts`` holds 0)."""
        return tuple(sorted(self.equal_update_counts)) if 0 in self.counts else ()


@dataclass(frozen=True)
class PlannedRun:
    """One U-Net training: ``generator`` is ``REAL_ONLY`` for N = 0, ``EQUAL_UPDATES`` for a control run (real
    slices only, trained for as many updates as with ``count`` synthetic pairs)."""

    generator: str
    count: int
    seed: int

    @property
    def key(self) -> str:
        """Record name of the run."""
        return f"augmentation__{self.generator}__n{self.count}__seed{self.seed}"

    @property
    def num_synthetic(self) -> int:
        """Synthetic pairs in its training set: ``count``, except for a control run (real slices only)."""
        return 0 if self.generator == EQUAL_UPDATES else self.count


@dataclass
class AugmentationOutcome:
    """What :func:`run_augmentation` did: the summary it wrote, and how many runs it trained or found finished."""

    summary: dict[str, Any]
    trained_runs: int
    skipped_runs: int
    files: dict[str, Path] = field(default_factory=dict)


def equal_update_epochs(settings: UNetSettings, num_real: int, count: int) -> int:
    """Epochs over ``num_real`` real slices that give (to rounding) the optimiser updates of ``settings.epochs``
    epochs over ``num_real + count`` slices (the last batch of an epoch may be partial, as in the training loop)."""
    updates = settings.epochs * math.ceil((num_real + count) / settings.batch_size)
    return max(1, round(updates / math.ceil(num_real / settings.batch_size)))


def plan_runs(grid: AugmentationGrid) -> list[PlannedRun]:
    """Every run of the grid: the real-only runs first, then the equal-update controls, then per generator and seed,
    N increasing.

    Runs of one (generator, seed) follow each other so its synthetic pairs are drawn once, for the largest N.
    """
    runs = [PlannedRun(REAL_ONLY, 0, seed) for seed in grid.seeds if 0 in grid.counts]
    runs += [PlannedRun(EQUAL_UPDATES, count, seed)
             for seed in grid.seeds for count in grid.planned_equal_update_counts]
    for generator in grid.generators:
        for seed in grid.seeds:
            runs += [PlannedRun(generator.name, count, seed) for count in grid.sorted_counts if count > 0]
    return runs


def run_augmentation(
    real: RealSplit,
    data_spec: RealDataSpec,
    grid: AugmentationGrid,
    out_dir: Path,
    unet: UNetSettings = UNetSettings(),
    sampling: SamplingSettings = SamplingSettings(),
    progress: bool = True,
    device: str = "cpu",
    allow_training_patients: bool = False,
) -> AugmentationOutcome:
    """Run (or resume) the augmentation experiment and write its summary JSON, markdown table and plot.

    Args:
        real: the real train and test slices (from :func:`~.real_data.load_real_split` of ``data_spec``).
        data_spec: the spec ``real`` was loaded from (stored with every record; changing it needs a new folder).
        grid: generators, counts N and seeds.
        out_dir: output folder (created); finished runs found there are not redone. Several processes may share
            it (e.g. one per generator, to use more cores): each looks for a run's record again just before
            training it, so a run another process finished meanwhile is not redone.
        unet: U-Net architecture and training settings.
        sampling: how synthetic pairs are drawn.
        progress: show progress bars (overall, per run over epochs, sampling).
        device: where the U-Nets train (synthetic pairs are drawn where ``sampling.device`` says). Recorded per run,
            not part of the settings: a grid may resume on another device.
        allow_training_patients: run generators trained on some of the test patients instead of refusing them (the
            reports then say their scores are not held-out).

    Raises:
        ValueError: no train slices, slices that do not fit the U-Net, a generator's image shape differs from the
            real slices'.
        SettingsMismatch: ``out_dir`` holds finished runs made with other settings (checked before any training).
    """
    if len(real.train_images) == 0:
        raise ValueError("the augmentation experiment needs train patients (--train-patients)")
    if unet.fixed_updates and grid.equal_update_counts:
        raise ValueError(
            f"--equal-update-control {list(grid.equal_update_counts)}: with a fixed number of U-Net updates "
            f"({unet.updates}) every run already has the same updates, so there is nothing to control; the control "
            "is for the epoch-based paper protocol (--protocol paper)")
    check_image_side(unet, *real.train_images.shape[-2:])
    for generator in grid.generators:
        check_image_shape(generator, real.train_images.shape[1:])
    seen = patients_seen_in_training(list(grid.generators), data_spec.test_patients, allow_training_patients)
    out_dir = Path(out_dir)
    store = RecordStore(out_dir / "runs")
    sources = {g.name: SyntheticPairs(g, sampling, out_dir / "synthetic", progress) for g in grid.generators}

    def unet_of(run: PlannedRun) -> UNetSettings:
        if run.generator == EQUAL_UPDATES:
            return replace(unet, epochs=equal_update_epochs(unet, len(real.train_images), run.count))
        return unet

    def settings_of(run: PlannedRun) -> dict[str, Any]:
        settings = {"data": data_spec.identity(), "unet": unet_of(run).as_dict()}
        if run.num_synthetic == 0:  # no pairs drawn: the sampling settings do not apply
            return settings
        fingerprint = sources[run.generator].fingerprint
        return {**settings, "sampling": sampling.identity(), "generator_fingerprint": fingerprint}

    runs = plan_runs(grid)
    # Look at every existing record before training anything, so a settings mismatch stops the command at once.
    records = {run.key: store.finished(run.key, settings_of(run)) for run in runs}
    pending = [run for run in runs if records[run.key] is None]
    overall = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="augmentation runs", unit="run",
                   disable=not progress)
    with overall:
        trained = 0
        for run in pending:
            overall.set_postfix(generator=run.generator, N=run.count, seed=run.seed)
            # Look again: another process sharing this folder may have finished the run since the plan was made.
            settings = settings_of(run)
            records[run.key] = store.finished(run.key, settings)
            if records[run.key] is None:
                records[run.key] = _train_and_score(run, real, unet_of(run), sources, store, settings, progress, device)
                trained += 1
            overall.update()
    summary = {**summarise(grid, records, real.description, unet, sampling), "seen_in_training": seen}
    files = write_augmentation_reports(summary, out_dir)
    return AugmentationOutcome(summary, trained_runs=trained, skipped_runs=len(runs) - trained, files=files)


def _train_and_score(run: PlannedRun, real: RealSplit, unet: UNetSettings, sources: dict[str, SyntheticPairs],
                     store: RecordStore, settings: dict[str, Any], progress: bool, device: str) -> dict[str, Any]:
    images, masks = real.train_images, real.train_masks
    if run.num_synthetic > 0:
        synthetic_images, synthetic_masks = sources[run.generator].pairs(run.count, run.seed)
        images = torch.cat([images, synthetic_images])
        masks = torch.cat([masks, synthetic_masks])
    trained = train_segmenter(images, masks, unet, run.seed, progress,
                              description=f"U-Net {run.generator} N={run.count} seed={run.seed}", device=device)
    dice = slice_dice(trained.network, real.test_images, real.test_masks, unet.prediction_threshold)
    return store.save(run.key, settings, {
        "generator": run.generator,
        "num_synthetic": run.num_synthetic,
        **({"equal_updates_as_num_synthetic": run.count} if run.generator == EQUAL_UPDATES else {}),
        "seed": run.seed,
        "epochs": unet.epochs,
        "updates": unet.updates_for(len(images)),
        "dice_mean": float(dice.mean()),
        "dice_per_slice": dice.round(6).tolist(),
        "num_real_train_slices": len(real.train_images),
        "num_test_slices": len(real.test_images),
        "final_train_loss": trained.final_loss,
        "train_seconds": round(trained.seconds, 3),
        "device": str(device),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })


def summarise(grid: AugmentationGrid, records: dict[str, dict[str, Any]], data_description: str,
              unet: UNetSettings, sampling: SamplingSettings) -> dict[str, Any]:
    """Summary of the grid's records: per generator and N, DSC mean, sample standard deviation and 95 % interval of
    the mean over seeds; per generator and N > 0, the paired gain (:func:`paired_gains`).

    The N = 0 entry of every generator is the real-only runs. ``std`` uses ``ddof=1`` (``None`` with one seed).
    The equal-update control, when planned, is ``equal_update_control``: per N, the same statistics plus the epochs.
    """
    def statistics(run_list: list[PlannedRun]) -> dict[str, Any]:
        per_seed = {str(run.seed): records[run.key]["dice_mean"] for run in run_list}
        values = np.array(list(per_seed.values()), dtype=float)
        std = float(values.std(ddof=1)) if len(values) > 1 else None
        interval = interval95(values.tolist())
        return {"mean": float(values.mean()), "std": std, "low": interval["low"], "high": interval["high"],
                "num_runs": len(values), "per_seed": per_seed}

    generator_names = [g.name for g in grid.generators] or [REAL_ONLY]
    results: dict[str, Any] = {}
    for generator in generator_names:
        results[generator] = {
            str(count): statistics([PlannedRun(REAL_ONLY if count == 0 else generator, count, seed)
                                    for seed in grid.seeds])
            for count in grid.sorted_counts
        }
    control = {}
    for count in grid.planned_equal_update_counts:
        runs = [PlannedRun(EQUAL_UPDATES, count, seed) for seed in grid.seeds]
        control[str(count)] = {**statistics(runs), "epochs": records[runs[0].key]["epochs"]}
    seconds = [record["train_seconds"] for record in records.values()]
    gains = paired_gains(grid, records, unet)
    return {
        "experiment": "downstream augmentation: U-Net DSC on held-out patients vs number of synthetic pairs",
        "data": data_description,
        "generators": {g.name: {"path": str(g.path)} for g in grid.generators},
        "counts": list(grid.sorted_counts),
        "seeds": list(grid.seeds),
        "unet": unet.as_dict(),
        "sampling": sampling.identity(),
        "nested_subsets": "the N pairs of a (generator, seed) are the first N of one draw: smaller N are subsets",
        "dice": results,
        **({"equal_update_control": control} if control else {}),
        **({"paired_gain": gains} if gains else {}),
        "total_train_seconds": round(float(sum(seconds)), 1),
    }


def interval95(values: list[float]) -> dict[str, Any]:
    """Mean and two-sided 95 % Student-t interval of the mean of ``values`` (bounds ``None`` for one value)."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "low": None, "high": None, "num_seeds": len(array)}
    half_width = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return {"mean": mean, "low": mean - half_width, "high": mean + half_width, "num_seeds": len(array)}


def paired_gains(grid: AugmentationGrid, records: dict[str, dict[str, Any]],
                 unet: UNetSettings) -> dict[str, dict[str, Any]]:
    """Per generator and N > 0: DSC gain over the like-for-like baseline, paired by seed, with a 95 % interval.

    The baseline is the real-only run of the same seed when every run has the same number of updates (fixed-update
    protocol), else the equal-update control at that N when it was run. With the paper's epoch-based protocol and no
    control there is no like-for-like baseline, and the gain is reported against real-only as ``"raw"`` (it includes
    the extra updates).
    """
    if 0 not in grid.counts:
        return {}
    control_counts = set(grid.planned_equal_update_counts)
    gains: dict[str, dict[str, Any]] = {}
    for generator in grid.generators:
        by_count = {}
        for count in (n for n in grid.sorted_counts if n > 0):
            if unet.fixed_updates:
                baseline, name = REAL_ONLY, "real-only (same updates)"
            elif count in control_counts:
                baseline, name = EQUAL_UPDATES, "real-only with equal updates"
            else:
                baseline, name = REAL_ONLY, "real-only (raw: fewer updates)"
            differences = {
                str(seed): records[PlannedRun(generator.name, count, seed).key]["dice_mean"]
                - records[PlannedRun(baseline, 0 if baseline == REAL_ONLY else count, seed).key]["dice_mean"]
                for seed in grid.seeds
            }
            by_count[str(count)] = {**interval95(list(differences.values())), "baseline": name,
                                    "per_seed": differences}
        gains[generator.name] = by_count
    return gains


def write_augmentation_reports(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``augmentation.json``, ``augmentation.md`` and ``augmentation.png`` into ``out_dir`` (atomically)."""
    files = {"json": out_dir / "augmentation.json", "markdown": out_dir / "augmentation.md",
             "plot": out_dir / "augmentation.png"}
    write_json_atomically(files["json"], summary)
    write_text_atomically(files["markdown"], augmentation_markdown(summary))
    plot_augmentation(summary, files["plot"])
    return files
