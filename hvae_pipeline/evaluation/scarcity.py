"""The data-scarcity study: where do synthetic pairs help, against classic augmentation?

For each number K of real training patients and each recorded draw of which K (:mod:`.splits`), each generator kind
(:data:`RECIPES`: the HVAE recipe's stages, a VAE) is trained on those K patients only, by the trainer's command line
in a subprocess (``python -m hvae_pipeline.training.train_hvae``, one fresh folder per stage, resumed with
``--resume-from-checkpoint latest``). Then, per seed, U-Nets are trained on the K patients' real slices

- alone (``real-only``), without and with classic augmentation, and
- plus N synthetic pairs of each generator, with classic augmentation,

and scored on the split's test patients, none of whom is in any draw. The summary gives each arm's DSC and the paired
gains (same draw and seed) of the pairs over real-only with the same augmentation, and of classic augmentation over
none, with 95 % Student-t intervals over the draws x seeds.

Everything is resumable: a stage is done when its marker exists, a U-Net run when its record exists. Several
processes may share the output folder (e.g. two single-thread ones): each claims a generator or a run by a lock file
before working on it, skips what another process holds, and waits at the end for generators another process is
still training.

Output folder layout::

    OUT/generators/<kind>-k<K>-draw<d>/<stage>/            the trainer's run folder of each stage (pipeline/ inside)
    OUT/generators/<kind>-k<K>-draw<d>/<stage>.done.json   the stage's marker; <stage>.log its trainer output
    OUT/runs/scarcity__k<K>__draw<d>__<arm>__seed<s>.json  one record per U-Net run
    OUT/locks/                                             who works on what (removed when done)
    OUT/synthetic/<kind>-k<K>-draw<d>/...                  cached synthetic pairs (see .synthetic)
    OUT/scarcity.json, OUT/scarcity.md, OUT/scarcity.png   summary, table, plot of the gain vs K
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..storage.atomic_write import write_json_atomically, write_text_atomically
from .augmentation import interval95
from .generators import REAL_ONLY, GeneratorSpec
from .real_data import RealDataSpec, load_patient_slices
from .records import RecordStore
from .reporting import plot_scarcity, scarcity_markdown
from .segmentation import UNetSettings, check_image_side, slice_dice, train_segmenter
from .splits import ScarcitySplit
from .synthetic import SamplingSettings, SyntheticPairs

GENERATOR_KINDS = ("hvae", "vae")
# The K whose budgets are the configs' own (the bundled model's 10 training patients).
REFERENCE_PATIENTS = 10


@dataclass(frozen=True)
class Stage:
    """One trainer run of a recipe.

    Args:
        name: folder name of the stage.
        config: trainer config name under ``training/configs/``.
        min_steps: ``None`` keeps the config's ``max_steps`` whatever K; else ``max_steps`` scales with
            ``K / REFERENCE_PATIENTS``, at least ``min_steps``.
        warm_start: the stage starts from the previous stage's pipeline (``training.init_from``).
        vae_warmup: the stage is all VAE warm-up (``training.vae_warmup_steps`` = its steps).
    """

    name: str
    config: str
    min_steps: int | None
    warm_start: bool = False
    vae_warmup: bool = False


# The named recipes: the bundled model's three stages (training/build_default_model.sh) and the VAE baseline.
RECIPES: dict[str, tuple[Stage, ...]] = {
    "hvae": (Stage("warmup", "scarcity-hvae-warmup", 200, vae_warmup=True),
             Stage("flow", "scarcity-hvae-flow", None, warm_start=True),
             Stage("hvae", "scarcity-hvae", 10, warm_start=True)),
    "vae": (Stage("vae", "scarcity-vae", 350),),
}
REFERENCE_STEPS = {"scarcity-hvae-warmup": 1000, "scarcity-hvae-flow": 10, "scarcity-hvae": 45, "scarcity-vae": 1500}
# The scarcity configs' training.batch_size; a draw with fewer slices (one LGG patient has 11-15) trains on all of them
# at once, since the trainer refuses a batch larger than its data.
RECIPE_BATCH_SIZE = 16


def stage_steps(stage: Stage, k: int, scale: float = 1.0) -> int:
    """Optimiser steps of ``stage`` for a generator trained on ``k`` patients, times ``scale`` (at least one step)."""
    reference = REFERENCE_STEPS[stage.config]
    steps = reference if stage.min_steps is None else max(stage.min_steps, round(reference * k / REFERENCE_PATIENTS))
    return max(1, round(steps * scale))


class GeneratorTrainingError(RuntimeError):
    """The trainer exited with an error; the message names the stage's log file."""


@dataclass(frozen=True)
class ScarcityGrid:
    """Which runs make up the study.

    Args:
        ks: numbers K of real training patients.
        num_draws: draws per K (the first ones recorded in the split; fewer when the split records fewer, e.g. one
            when K is the whole pool).
        seeds: U-Net seeds (also which synthetic pairs are drawn).
        counts: numbers N of synthetic pairs added to the K patients' slices (> 0).
        kinds: generator kinds trained per draw (:data:`GENERATOR_KINDS`).
    """

    ks: tuple[int, ...] = (1, 2, 4, 10)
    num_draws: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    counts: tuple[int, ...] = (1000,)
    kinds: tuple[str, ...] = GENERATOR_KINDS

    def __post_init__(self) -> None:
        for name, values in (("--ks", self.ks), ("--seeds", self.seeds), ("--counts", self.counts),
                             ("--generators", self.kinds)):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{name}: need at least one value and no repeated value, got {list(values)}")
        if min(self.ks) < 1 or min(self.counts) < 1 or min(self.seeds) < 0 or self.num_draws < 1:
            raise ValueError(f"need --ks >= 1, --counts >= 1, --seeds >= 0 and --num-draws >= 1; got {list(self.ks)}, "
                             f"{list(self.counts)}, {list(self.seeds)}, {self.num_draws}")
        unknown = sorted(set(self.kinds) - set(GENERATOR_KINDS))
        if unknown:
            raise ValueError(f"--generators {unknown}: expected some of {GENERATOR_KINDS}")

    def draws(self, split: ScarcitySplit) -> list[tuple[int, int, tuple[str, ...]]]:
        """``(K, draw index, patients)`` of every draw the study uses, K increasing."""
        return [(k, index, split.draw(k, index)) for k in sorted(self.ks)
                for index in range(min(self.num_draws, len(split.draws.get(k, ())) or self.num_draws))]


@dataclass(frozen=True)
class Arm:
    """One U-Net arm: real slices alone (``kind`` None) or plus ``count`` pairs of a generator kind."""

    augment: str
    kind: str | None = None
    count: int = 0

    @property
    def name(self) -> str:
        """Label in tables and record names, e.g. ``real-only+classic``, ``hvae-n1000+classic``."""
        source = REAL_ONLY if self.kind is None else f"{self.kind}-n{self.count}"
        return source if self.augment == "none" else f"{source}+{self.augment}"


def arms(grid: ScarcityGrid) -> list[Arm]:
    """The study's arms: real-only without and with classic augmentation, then each kind and N with classic."""
    return [Arm("none"), Arm("classic")] + [Arm("classic", kind, n) for kind in grid.kinds for n in sorted(grid.counts)]


@dataclass(frozen=True)
class Job:
    """One U-Net run."""

    k: int
    draw: int
    arm: Arm
    seed: int

    @property
    def key(self) -> str:
        """Record name of the run."""
        return f"scarcity__k{self.k}__draw{self.draw}__{self.arm.name}__seed{self.seed}"

    @property
    def generator(self) -> str | None:
        """Name of the generator whose pairs it uses, if any."""
        return None if self.arm.kind is None else generator_name(self.arm.kind, self.k, self.draw)


def generator_name(kind: str, k: int, draw: int) -> str:
    """Folder and table name of a study generator, e.g. ``hvae-k2-draw1``."""
    return f"{kind}-k{k}-draw{draw}"


@dataclass(frozen=True)
class ScarcitySettings:
    """How the study runs (not what it measures).

    Args:
        num_threads: torch threads of this process and of every trainer subprocess (``OMP_NUM_THREADS`` too).
        generator_overrides: trainer ``section.key=value`` overrides appended to every stage (e.g. a smaller model
            for tests); they enter the generators' identity.
        generator_step_scale: every stage's steps times this, e.g. below 1 to give a costlier recipe (a wider
            network, extra loss terms) the default recipe's CPU time; it enters the identity through the steps.
        progress: show progress bars.
        device: where the U-Nets train.
        poll_seconds: how often to look again for a generator another process is training.
        report_only: train nothing: build the reports from the runs finished so far (a study in progress).
    """

    num_threads: int | None = None
    generator_overrides: tuple[str, ...] = ()
    generator_step_scale: float = 1.0
    progress: bool = True
    device: str = "cpu"
    poll_seconds: float = 30.0
    report_only: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.generator_step_scale) and self.generator_step_scale > 0):
            raise ValueError(f"--generator-step-scale must be a finite number > 0, got {self.generator_step_scale}")


@dataclass
class ScarcityOutcome:
    """What :func:`run_scarcity` did."""

    summary: dict[str, Any]
    trained_runs: int
    trained_generators: int
    files: dict[str, Path] = field(default_factory=dict)


class Lock:
    """A claim on a piece of work in a shared output folder: a file made with ``O_EXCL``, holding host and pid.

    A lock left by a process that died on this host is taken over; one of another host is respected.
    """

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / f"{key}.lock"

    def acquire(self) -> bool:
        """Claim the work; ``False`` when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(owner)
            return True
        return False

    def _stale(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return False  # being written by its owner right now
        if host != socket.gethostname() or int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        """Give the claim up."""
        self.path.unlink(missing_ok=True)


def trainer_data_overrides(spec: RealDataSpec, patients: tuple[str, ...]) -> list[str]:
    """Trainer ``data.*`` overrides that load ``patients``' slices as ``spec`` loads them (values in JSON, which
    YAML reads, so patterns with ``{case}`` stay strings)."""
    values: dict[str, Any] = {"kind": spec.kind, "root": spec.root, "patients": list(patients), "val_patients": None,
                              "size": spec.size, "depth": spec.depth, "min_tumour_area": spec.min_tumour_area,
                              "image_glob": spec.image_glob}
    if spec.kind == "pairs":
        values.update(mask_glob=spec.mask_glob, label_glob=None,
                      channels=list(spec.channels) if spec.channels is not None else None)
        if spec.channels is not None:
            values["modalities"] = ["flair"] if len(spec.channels) == 1 else [f"channel{c}" for c in spec.channels]
    else:
        values.update(label_glob=spec.label_glob)
        if spec.modalities:
            values["modalities"] = list(spec.modalities)
        if spec.label:
            values["label"] = spec.label
    return [f"data.{key}={json.dumps(value)}" for key, value in values.items()]


class GeneratorTrainer:
    """Trains (or finds finished) the study's generators under ``OUT/generators``.

    Args:
        out_dir: the study's output folder.
        spec: the real data (its loading settings; the patients come from each draw).
        settings: threads and extra trainer overrides.
    """

    def __init__(self, out_dir: Path, spec: RealDataSpec, settings: ScarcitySettings) -> None:
        self.folder = out_dir / "generators"
        self.locks = out_dir / "locks"
        self.spec = spec
        self.settings = settings

    def pipeline(self, kind: str, k: int, draw: int) -> Path:
        """The finished generator's pipeline folder (its last stage's export)."""
        return self.folder / generator_name(kind, k, draw) / RECIPES[kind][-1].name / "pipeline"

    def _marker(self, name: str, stage: Stage) -> Path:
        return self.folder / name / f"{stage.name}.done.json"

    def stage_overrides(self, kind: str, k: int, draw: int, patients: tuple[str, ...], stage: Stage,
                        num_slices: int) -> list[str]:
        """Every override of one stage's trainer run (its identity: a finished stage made with others is refused);
        ``num_slices`` is how many slices the patients have."""
        name = generator_name(kind, k, draw)
        steps = stage_steps(stage, k, self.settings.generator_step_scale)
        overrides = [f"training.output_dir={json.dumps(str(self.folder / name / stage.name))}",
                     f"training.max_steps={steps}", f"training.sample_steps={steps}",
                     *trainer_data_overrides(self.spec, patients)]
        if num_slices < RECIPE_BATCH_SIZE:
            overrides.append(f"training.batch_size={num_slices}")
        if stage.vae_warmup:
            overrides.append(f"training.vae_warmup_steps={steps}")
        if stage.warm_start:
            previous = RECIPES[kind][RECIPES[kind].index(stage) - 1]
            overrides.append(
                f"training.init_from={json.dumps(str(self.folder / name / previous.name / 'pipeline'))}")
        if self.settings.num_threads:
            overrides.append(f"training.num_threads={self.settings.num_threads}")
        return overrides + list(self.settings.generator_overrides)

    def finished(self, kind: str, k: int, draw: int, patients: tuple[str, ...], num_slices: int) -> bool:
        """Whether every stage is done, with the current overrides.

        Raises:
            SettingsMismatch: a finished stage was trained with other overrides (another recipe, data or patients).
        """
        from .records import SettingsMismatch

        name = generator_name(kind, k, draw)
        for stage in RECIPES[kind]:
            marker = self._marker(name, stage)
            if not marker.is_file():
                return False
            expected = self._identity(kind, k, draw, patients, stage, num_slices)
            if _identity_items(json.loads(marker.read_text()).get("overrides") or []) != expected:
                raise SettingsMismatch(f"{marker}: generator {name} stage {stage.name} was trained with other "
                                       f"settings than {expected}; use a new output folder")
        return True

    def _identity(self, kind: str, k: int, draw: int, patients: tuple[str, ...], stage: Stage,
                  num_slices: int) -> list[str]:
        return _identity_items(self.stage_overrides(kind, k, draw, patients, stage, num_slices))

    def train(self, kind: str, k: int, draw: int, patients: tuple[str, ...], num_slices: int) -> None:
        """Run (or resume) the stages of the generator that are not done, each in its own subprocess.

        Raises:
            GeneratorTrainingError: a stage's trainer failed (the message names its log).
        """
        name = generator_name(kind, k, draw)
        stages = RECIPES[kind]
        bar = tqdm(stages, desc=f"generator {name}", unit="stage", leave=False, disable=not self.settings.progress)
        for stage in bar:
            marker = self._marker(name, stage)
            if marker.is_file():
                continue
            overrides = self.stage_overrides(kind, k, draw, patients, stage, num_slices)
            bar.set_postfix(stage=stage.name, steps=_overridden_steps(overrides))
            log = self.folder / name / f"{stage.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "hvae_pipeline.training.train_hvae", "--config", stage.config,
                       "--resume-from-checkpoint", "latest", *overrides]
            environment = dict(os.environ)
            if self.settings.num_threads:
                environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(self.settings.num_threads)
            start = time.perf_counter()
            with open(log, "a") as output:  # appended: a resumed stage keeps the log of its interrupted part
                output.write(f"$ {' '.join(command)}\n")
                output.flush()
                result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
            if result.returncode != 0:
                raise GeneratorTrainingError(f"training generator {name}, stage {stage.name} failed (exit "
                                             f"{result.returncode}); see {log}")
            write_json_atomically(marker, {
                "generator": name, "stage": stage.name, "config": stage.config, "patients": list(patients),
                "steps": _overridden_steps(overrides), "overrides": self._identity(kind, k, draw, patients, stage,
                                                                                 num_slices),
                "seconds": round(time.perf_counter() - start, 1), "num_threads": self.settings.num_threads,
                "finished_at": _now()})


# Overrides that say where a stage runs or how fast, not what it trains: left out of a generator's identity so that a
# study resumes with other threads, or after its folder was moved or copied.
NOT_IDENTITY = ("training.num_threads=", "training.output_dir=", "training.init_from=")


def _identity_items(overrides: list[str]) -> list[str]:
    """``overrides`` less those of :data:`NOT_IDENTITY`."""
    return [item for item in overrides if not item.startswith(NOT_IDENTITY)]


def _overridden_steps(overrides: list[str]) -> int:
    """The ``training.max_steps`` a trainer run was given (the last override wins, as in the trainer)."""
    return int([item for item in overrides if item.startswith("training.max_steps=")][-1].split("=", 1)[1])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class DrawSlices:
    """The real slices of the pool and test patients, loaded once and cut per draw."""

    def __init__(self, spec: RealDataSpec, split: ScarcitySplit, patients: set[str]) -> None:
        pool = [p for p in split.pool if p in patients]
        self.images, self.masks, self.patient_ids = load_patient_slices(spec, pool)
        self.test_images, self.test_masks, _ = load_patient_slices(spec, split.test)

    def train(self, patients: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks of ``patients``."""
        chosen = torch.from_numpy(np.isin(self.patient_ids, list(patients)))
        if not bool(chosen.any()):
            raise ValueError(f"patients {list(patients)} have no slice with a tumour area >= min_tumour_area")
        return self.images[chosen], self.masks[chosen]


def plan_jobs(grid: ScarcityGrid, split: ScarcitySplit) -> list[Job]:
    """Every U-Net run: per draw (K increasing), the real-only arms' runs first, then the generators' arms."""
    jobs = []
    for k, draw, _ in grid.draws(split):
        for arm in arms(grid):
            jobs += [Job(k, draw, arm, seed) for seed in grid.seeds]
    return jobs


def run_scarcity(
    split: ScarcitySplit,
    spec: RealDataSpec,
    grid: ScarcityGrid,
    out_dir: Path,
    unet: UNetSettings = UNetSettings(),
    sampling: SamplingSettings = SamplingSettings(),
    settings: ScarcitySettings = ScarcitySettings(),
) -> ScarcityOutcome:
    """Run (or resume) the scarcity study and write ``scarcity.json``, ``scarcity.md`` and ``scarcity.png``.

    Args:
        split: pool, test patients and recorded draws.
        spec: how the real slices are loaded (its train/test patients are replaced by the split's).
        grid: K, draws, seeds, N and generator kinds.
        out_dir: output folder (created; reused to resume; shareable between processes).
        unet: the U-Net protocol (its ``augment`` is set per arm).
        sampling: how synthetic pairs are drawn.
        settings: threads, trainer overrides, progress bars, device.

    Raises:
        ValueError: a K the split has no draws for, slices that do not fit the U-Net.
        SettingsMismatch: a finished run or generator stage was made with other settings.
        GeneratorTrainingError: a generator's trainer failed.
    """
    out_dir = Path(out_dir)
    draws = grid.draws(split)
    used = {patient for _, _, patients in draws for patient in patients}
    spec = replace(spec, train_patients=tuple(p for p in split.pool if p in used), test_patients=split.test)
    slices = DrawSlices(spec, split, used)
    check_image_side(unet, *slices.test_images.shape[-2:])
    store = RecordStore(out_dir / "runs")
    trainer = GeneratorTrainer(out_dir, spec, settings)
    locks = out_dir / "locks"
    patients_of = {(k, draw): patients for k, draw, patients in draws}
    jobs = plan_jobs(grid, split)
    sources: dict[str, SyntheticPairs] = {}

    def source(job: Job) -> SyntheticPairs:
        if job.generator not in sources:
            path = trainer.pipeline(job.arm.kind, job.k, job.draw)
            sources[job.generator] = SyntheticPairs(GeneratorSpec(job.generator, path), sampling,
                                                    out_dir / "synthetic", settings.progress)
        return sources[job.generator]

    def record_settings(job: Job) -> dict[str, Any]:
        data = replace(spec, train_patients=patients_of[(job.k, job.draw)]).identity()
        recorded = {"data": data, "unet": replace(unet, augment=job.arm.augment).as_dict()}
        if job.arm.kind is None:
            return recorded
        return {**recorded, "sampling": sampling.identity(), "generator_fingerprint": source(job).fingerprint,
                "generator_recipe": [stage.config for stage in RECIPES[job.arm.kind]]}

    def slice_count(job: Job) -> int:
        return len(slices.train(patients_of[(job.k, job.draw)])[0])

    def generator_ready(job: Job) -> bool:
        return job.arm.kind is None or trainer.finished(job.arm.kind, job.k, job.draw, patients_of[(job.k, job.draw)],
                                                        slice_count(job))

    records: dict[str, dict[str, Any]] = {}
    for job in jobs:  # every finished record checked first: a settings mismatch stops the command at once
        if generator_ready(job):
            records[job.key] = store.finished(job.key, record_settings(job))
    trained_runs = trained_generators = 0
    if settings.report_only:
        jobs = []  # the reports below summarise what is finished
    overall = tqdm(total=len(jobs), initial=sum(r is not None for r in records.values()), desc="scarcity runs",
                   unit="run", disable=not settings.progress)
    with overall:
        while True:
            pending = [job for job in jobs if records.get(job.key) is None]
            if not pending:
                break
            progressed = False
            for job in pending:
                if not generator_ready(job):
                    patients = patients_of[(job.k, job.draw)]
                    lock = Lock(locks, f"generator__{job.generator}")
                    if not lock.acquire():
                        continue  # another process trains it; its runs wait
                    try:
                        overall.set_postfix(training=job.generator)
                        trainer.train(job.arm.kind, job.k, job.draw, patients, slice_count(job))
                        trained_generators += 1
                    finally:
                        lock.release()
                lock = Lock(locks, job.key)
                if not lock.acquire():
                    continue
                try:
                    records[job.key] = store.finished(job.key, record_settings(job))
                    if records[job.key] is None:
                        overall.set_postfix(K=job.k, draw=job.draw, arm=job.arm.name, seed=job.seed)
                        records[job.key] = _train_and_score(job, slices, patients_of, unet, source, store,
                                                            record_settings(job), settings)
                        trained_runs += 1
                finally:
                    lock.release()
                overall.update()
                progressed = True
            if not progressed:  # what is left waits on another process: look again later
                time.sleep(settings.poll_seconds)
                for job in pending:
                    if generator_ready(job):
                        records[job.key] = store.finished(job.key, record_settings(job))
                overall.n = sum(r is not None for r in records.values())
                overall.refresh()
    summary = summarise(split, spec, grid, records, unet, sampling, settings)
    files = write_scarcity_reports(summary, out_dir)
    return ScarcityOutcome(summary, trained_runs, trained_generators, files)


def _train_and_score(job: Job, slices: DrawSlices, patients_of: dict[tuple[int, int], tuple[str, ...]],
                     unet: UNetSettings, source, store: RecordStore, settings: dict[str, Any],
                     run_settings: ScarcitySettings) -> dict[str, Any]:
    images, masks = slices.train(patients_of[(job.k, job.draw)])
    num_real = len(images)
    if job.arm.kind is not None:
        synthetic_images, synthetic_masks = source(job).pairs(job.arm.count, job.seed)
        images, masks = torch.cat([images, synthetic_images]), torch.cat([masks, synthetic_masks])
    arm_unet = replace(unet, augment=job.arm.augment)
    trained = train_segmenter(images, masks, arm_unet, job.seed, run_settings.progress,
                              description=f"U-Net K={job.k} draw {job.draw} {job.arm.name} seed {job.seed}",
                              device=run_settings.device)
    dice = slice_dice(trained.network, slices.test_images, slices.test_masks, unet.prediction_threshold)
    return store.save(job.key, settings, {
        "k": job.k, "draw": job.draw, "patients": list(patients_of[(job.k, job.draw)]), "arm": job.arm.name,
        "augment": job.arm.augment, "generator": job.generator, "num_synthetic": job.arm.count, "seed": job.seed,
        "updates": arm_unet.updates_for(len(images)), "dice_mean": float(dice.mean()),
        "dice_per_slice": dice.round(6).tolist(), "num_real_train_slices": num_real,
        "num_test_slices": len(slices.test_images), "final_train_loss": trained.final_loss,
        "train_seconds": round(trained.seconds, 3), "device": str(run_settings.device), "finished_at": _now(),
    })


def _units(grid: ScarcityGrid, split: ScarcitySplit, k: int) -> Iterator[tuple[int, int]]:
    """``(draw, seed)`` pairs of one K: the units the intervals are over."""
    for _, draw, _ in (d for d in grid.draws(split) if d[0] == k):
        for seed in grid.seeds:
            yield draw, seed


def _interval(values: list[float]) -> dict[str, Any]:
    """:func:`interval95` with the sample std; every number ``None`` when no run is finished yet."""
    if not values:
        return {"mean": None, "low": None, "high": None, "num_seeds": 0, "std": None}
    return {**interval95(values), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def summarise(split: ScarcitySplit, spec: RealDataSpec, grid: ScarcityGrid, records: dict[str, dict[str, Any] | None],
              unet: UNetSettings, sampling: SamplingSettings, settings: ScarcitySettings = ScarcitySettings()
              ) -> dict[str, Any]:
    """Per K and arm: DSC mean, std and 95 % interval over draws x seeds; paired gains of each generator arm over
    real-only with classic augmentation, and of classic augmentation over none; the first generator kind's arms
    against each other kind's at the same N (``head_to_head``); per draw its patients and each run's DSC by arm and
    seed (``None`` while not finished).

    Runs not finished yet (absent or ``None`` in ``records``) are left out: each entry's ``num_seeds`` counts the
    (draw, seed) units it is over, gains are paired over the units both arms have, and ``complete`` says whether
    every planned run is in.
    """
    from .classic_augmentation import CLASSIC_PARAMETERS

    all_arms = arms(grid)
    by_k: dict[str, Any] = {}
    for k in sorted(grid.ks):
        units = list(_units(grid, split, k))

        def dice(arm: Arm) -> dict[tuple[int, int], float]:
            found = {(draw, seed): records.get(Job(k, draw, arm, seed).key) for draw, seed in units}
            return {unit: record["dice_mean"] for unit, record in found.items() if record is not None}

        finished_dice = {arm.name: dice(arm) for arm in all_arms}

        def paired(arm: Arm, baseline: Arm) -> dict[str, Any]:
            first, second = finished_dice[arm.name], finished_dice[baseline.name]
            return _interval([first[unit] - second[unit] for unit in units if unit in first and unit in second])

        dsc = {name: _interval(list(values.values())) for name, values in finished_dice.items()}
        gains = {arm.name: paired(arm, Arm("classic")) for arm in all_arms if arm.kind is not None}
        gains["classic"] = paired(Arm("classic"), Arm("none"))
        # The first generator kind against each other one at the same N (by default the HVAE against the VAE).
        head_to_head = {f"{Arm('classic', grid.kinds[0], n).name} - {Arm('classic', other, n).name}":
                        paired(Arm("classic", grid.kinds[0], n), Arm("classic", other, n))
                        for other in grid.kinds[1:] for n in sorted(grid.counts)}
        draws = [{"draw": draw, "patients": list(patients),
                  "dice": {name: {str(seed): values.get((draw, seed)) for seed in grid.seeds}
                           for name, values in finished_dice.items()}}
                 for kk, draw, patients in grid.draws(split) if kk == k]
        by_k[str(k)] = {"dice": dsc, "gain": gains, "head_to_head": head_to_head, "draws": draws,
                        "num_units": len(units)}
    finished = [record for record in records.values() if record is not None]
    complete = all(records.get(job.key) is not None for job in plan_jobs(grid, split))
    seconds = sum(record.get("train_seconds", 0.0) for record in finished)
    return {
        "experiment": "data-scarcity study: U-Net DSC with K real training patients, classic augmentation and "
                      "synthetic pairs of generators trained on the same K patients",
        "split": {"name": split.name, "pool": list(split.pool), "test": list(split.test), "how": split.how},
        "data": spec.identity(),
        "ks": sorted(grid.ks), "seeds": list(grid.seeds), "counts": sorted(grid.counts), "kinds": list(grid.kinds),
        "arms": [arm.name for arm in all_arms],
        "recipes": {kind: [{"config": s.config, "steps_at_k": {str(k): stage_steps(s, k, settings.generator_step_scale)
                                                                for k in sorted(grid.ks)}}
                           for s in RECIPES[kind]] for kind in grid.kinds},
        "generator_overrides": list(settings.generator_overrides),
        "unet": unet.as_dict(), "classic_augmentation": CLASSIC_PARAMETERS, "sampling": sampling.identity(),
        "results": by_k, "complete": complete, "total_unet_train_seconds": round(seconds, 1),
    }


def write_scarcity_reports(summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``scarcity.json``, ``scarcity.md`` and ``scarcity.png`` into ``out_dir`` (atomically)."""
    files = {"json": out_dir / "scarcity.json", "markdown": out_dir / "scarcity.md", "plot": out_dir / "scarcity.png"}
    write_json_atomically(files["json"], summary)
    write_text_atomically(files["markdown"], scarcity_markdown(summary))
    plot_scarcity(summary, files["plot"])
    return files
