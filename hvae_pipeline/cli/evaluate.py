"""``hvae-evaluate``: compare generators by downstream segmentation (augmentation), image quality and likelihood.

Downstream augmentation (U-Net trained with the same number of updates on real slices plus N synthetic pairs, 5 seeds;
``--protocol paper`` for the paper's Dice loss, RMSprop 1e-4, 40 epochs)::

    hvae-evaluate augmentation --generator HVAE=runs/cpu-128/pipeline --generator VAE=runs/vae/pipeline \\
        --data brats --root ../shared/data/brats-msd-flair \\
        --image-glob "images/{case}_Tumor.nii.gz" --label-glob "labels/{case}_Seg.nii.gz" \\
        --train-patients BRATS_001 BRATS_002 ... --test-patients BRATS_036 BRATS_050 ... --out results/brats

The same on a folder of 2D image/mask files (PNG, TIF...; patients are the patterns' ``{case}`` field, masks are
binarised, ``--channels`` picks channels of RGB pictures)::

    hvae-evaluate augmentation --generator HVAE=runs/pairs-128/pipeline --data pairs --root my_slices \\
        --image-glob "{case}/{case}_{index}.tif" --mask-glob "{case}/{case}_{index}_mask.tif" --channels 1 \\
        --train-patients case_01 case_02 ... --test-patients case_09 case_10 ... --out results/my_slices

Image quality (PSNR/SSIM/FID/KID/MS-SSIM/JSD, and TSTR: a U-Net trained on the samples alone, scored on the test
patients, against the same U-Net trained on --train-patients)::

    hvae-evaluate image-quality --generator HVAE=... --data brats ... --train-patients ... --test-patients ... \\
        --out results/brats

Data scarcity (generators trained on K = 1 2 4 10 patients of a packaged split, U-Nets with classic augmentation;
resumable, two processes may share --out)::

    hvae-evaluate scarcity --data brats --root ../shared/data/brats-msd-flair \\
        --image-glob "images/{case}_Tumor.nii.gz" --label-glob "labels/{case}_Seg.nii.gz" --num-threads 1 --out OUT

Held-out log-likelihood of HVAE/VAE generators (importance-sampled log p(x, m) and ELBO)::

    hvae-evaluate likelihood --generator HVAE=... --generator VAE=... --data brats ... --test-patients ... --out ...

All commands resume: finished runs recorded in ``OUT/runs/`` are not redone, and the reports are rebuilt.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

from ..evaluation.classic_augmentation import AUGMENTATIONS
from ..evaluation.scarcity import GENERATOR_KINDS
from ..evaluation.segmentation import UNET_PROTOCOLS, UNetSettings
from ..evaluation.splits import DEFAULT_SPLITS, SPLIT_NAMES
from ..pipeline import PAPER_MIN_TUMOUR_AREA, PRIORS
from ..models.inputs import MAX_SEED
from .options import add_min_tumour_area_option, check_device
from .version import add_version_option

PROGRAM = "hvae-evaluate"


def _add_data_arguments(parser: argparse.ArgumentParser, train_required: bool, patients: bool = True) -> None:
    """The real-data options; without ``patients`` the train/test patients come from elsewhere (a split)."""
    group = parser.add_argument_group("real data")
    group.add_argument("--data", choices=("brats", "hecktor", "pairs", "phantom"), required=True,
                       help="kind of real data (pairs: a folder of 2D image/mask files, PNG, TIF...; "
                            "phantom: SYNTHETIC ellipse slices, for tests)")
    group.add_argument("--root", default=None, help="dataset folder (brats, hecktor, pairs)")
    group.add_argument("--image-glob", default=None,
                       help='image pattern with a {case} field (the patient id): BraTS, e.g. '
                            '"images/{case}_Tumor.nii.gz", or pairs (required), e.g. "{case}/{case}_{index}.tif"')
    group.add_argument("--label-glob", default=None, help='BraTS label pattern, e.g. "labels/{case}_Seg.nii.gz"')
    group.add_argument("--mask-glob", default=None,
                       help='pairs: mask pattern with the image pattern\'s fields, e.g. "{case}/{case}_{index}_mask.tif" '
                            "(required; any non-zero value is tumour)")
    group.add_argument("--channels", type=int, nargs="+", default=None,
                       help="pairs: picture channels to keep, e.g. 1 for the green channel of RGB files (default: all)")
    group.add_argument("--modalities", nargs="+", default=None, help="image channels (default: flair / pt)")
    group.add_argument("--label", default=None, help="target label (default: whole_tumor / gtvp)")
    if patients:
        train_use = "" if train_required else " (image-quality: TSTR's real-only reference; likelihood: only checked)"
        group.add_argument("--train-patients", nargs="+", default=[], required=train_required,
                           help="patients whose slices train the U-Net" + train_use)
        group.add_argument("--test-patients", nargs="+", required=True, help="held-out patients scored on")
    group.add_argument("--size", type=int, default=128, help="slice side in px, = the generators' size (128)")
    group.add_argument("--depth", type=int, default=64, help="axial slices per resampled volume (64)")
    group.add_argument("--min-tumour-area", type=int, default=1, help="keep real slices with >= this many px (1)")
    group.add_argument("--num-phantom-slices", type=int, default=128, help="phantom slices (16 per patient)")
    group.add_argument("--note", default="", help='label shown on the reports, e.g. "SYNTHETIC HECKTOR-layout data"')


def _add_output_arguments(parser: argparse.ArgumentParser, generators: bool = True) -> None:
    if generators:
        parser.add_argument("--generator", action="append", default=[], metavar="NAME=PATH",
                            help="a generator: saved pipeline folder (HVAE, VAE or LSGAN) or 'bundled'; repeatable")
    parser.add_argument("--out", type=Path, required=True, help="output folder (reused to resume)")
    if generators:
        parser.add_argument("--allow-training-patients", action="store_true",
                            help="score generators whose model card or run config lists some of the test patients "
                                 "as training patients (refused otherwise); the reports then say NOT held-out")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_common_arguments(parser: argparse.ArgumentParser, generators: bool = True) -> None:
    _add_output_arguments(parser, generators)
    sampling = parser.add_argument_group("synthetic sampling (paper: threshold 0.5, mask area > 200 px)")
    add_min_tumour_area_option(sampling, "--sampling-min-tumour-area", PAPER_MIN_TUMOUR_AREA,
                               "keep samples whose mask has >= this many px (201 = the paper's > 200 px)")
    sampling.add_argument("--mask-threshold", type=float, default=0.5, help="mask probability threshold (0.5)")
    sampling.add_argument("--sampling-batch-size", type=int, default=32, help="latents decoded per pass (32)")
    sampling.add_argument("--prior", choices=PRIORS, default="auto",
                          help="latent prior: auto (each pipeline's default: its fitted prior when it has one), "
                               "standard (N(0, I), the paper's) or fitted")
    sampling.add_argument("--sampling-device", default="cpu",
                          help="device that decodes the samples, e.g. cuda (cpu); GPU-drawn pairs are cached apart")


def _add_unet_arguments(group: argparse._ActionsContainer, augment: bool = True) -> None:
    """The U-Net protocol and its single settings; ``augment``: with ``--augment`` (the scarcity study sets it per
    arm)."""
    if augment:
        group.add_argument("--augment", choices=AUGMENTATIONS, default="none",
                           help="classic: random flips, rotation, scaling, elastic deformation, gamma and intensity "
                                "scale/shift of every training batch, image and mask jointly, real and synthetic "
                                "slices alike (seeded by the run seed); none (default)")
    group.add_argument("--protocol", choices=UNET_PROTOCOLS, default="converged",
                      help="U-Net recipe: converged (default: 1x1 output head, Dice + BCE, Adam 1e-3, the same "
                           "number of updates for every run) or paper (Dice, RMSprop 1e-4, 40 epochs); the options "
                           "below override single settings")
    budget = group.add_mutually_exclusive_group()
    budget.add_argument("--updates", type=int, default=None,
                        help="optimiser updates of every U-Net whatever N (converged: 180; paper: none, it trains "
                             "epochs)")
    budget.add_argument("--epochs", type=int, default=None,
                        help="train this many passes over real + synthetic slices instead of a fixed number of "
                             "updates (paper: 40)")
    group.add_argument("--batch-size", type=int, default=None, help="U-Net batch size (32)")
    group.add_argument("--learning-rate", type=float, default=None,
                      help="U-Net learning rate (converged: Adam 1e-3; paper: RMSprop 1e-4)")
    group.add_argument("--unet-channels", type=int, nargs="+", default=None,
                      help="U-Net channels per level (16 32 64 128 256)")
    group.add_argument("--unet-res-units", type=int, default=None, help="residual units per U-Net block (2)")
    group.add_argument("--device", default="cpu", help="device the U-Nets train on, e.g. cuda (cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    augmentation = commands.add_parser(
        "augmentation", help="U-Net DSC vs number of synthetic pairs per generator",
        description="Train a U-Net on the real train slices + N synthetic pairs per generator, N x seeds, and "
                    "score DSC on the test patients. Writes OUT/augmentation.{json,md,png}.")
    _add_common_arguments(augmentation)
    _add_data_arguments(augmentation, train_required=True)
    grid = augmentation.add_argument_group("experiment grid and U-Net")
    grid.add_argument("--counts", type=int, nargs="+", default=[0, 100, 300, 500, 1000, 2000],
                      help="numbers N of synthetic pairs added (0 100 300 500 1000 2000)")
    seeds = grid.add_mutually_exclusive_group()
    seeds.add_argument("--num-seeds", type=int, default=5, help="runs per (generator, N): seeds 0 .. R-1 (5)")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="these seeds instead of 0 .. R-1, e.g. to split a grid over processes sharing --out")
    grid.add_argument("--equal-update-control", type=int, nargs="+", default=[], metavar="N",
                      help="--protocol paper only: also train real-only U-Nets for as many updates as with N "
                           "synthetic pairs, for these N (separates what pairs add from the longer training; runs "
                           "with N = 0 in --counts)")
    _add_unet_arguments(grid)

    scarcity = commands.add_parser(
        "scarcity", help="DSC vs number K of real patients: classic augmentation and generators trained on K",
        description="For K real training patients (recorded draws of a fixed split), train an HVAE and a VAE on those "
                    "K patients only (trainer subprocesses), then U-Nets on the K patients' slices alone (without and "
                    "with classic augmentation) and plus N synthetic pairs (with classic augmentation), scored on the "
                    "split's test patients. Resumable; several processes may share --out. Writes "
                    "OUT/scarcity.{json,md,png}.")
    _add_common_arguments(scarcity, generators=False)
    _add_data_arguments(scarcity, train_required=False, patients=False)
    study = scarcity.add_argument_group("study grid and U-Net")
    study.add_argument("--split", default=None,
                       help=f"patient split with recorded draws: a packaged one {SPLIT_NAMES} or a JSON file "
                            f"(default: {DEFAULT_SPLITS['brats']} for --data brats, {DEFAULT_SPLITS['pairs']} for "
                            "--data pairs)")
    study.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 10], help="real training patients K (1 2 4 10)")
    study.add_argument("--num-draws", type=int, default=2,
                       help="draws of K patients per K, the split's first ones (2; one when K is the whole pool)")
    study_seeds = study.add_mutually_exclusive_group()
    study_seeds.add_argument("--num-seeds", type=int, default=3, help="U-Net seeds 0 .. R-1 per draw and arm (3)")
    study_seeds.add_argument("--seeds", type=int, nargs="+", default=None, help="these seeds instead of 0 .. R-1")
    study.add_argument("--counts", type=int, nargs="+", default=[1000], help="synthetic pairs N added (1000)")
    study.add_argument("--generators", nargs="+", choices=GENERATOR_KINDS, default=list(GENERATOR_KINDS),
                       help="generator kinds trained on each draw (hvae vae)")
    study.add_argument("--generator-override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="trainer override added to every stage of every generator, e.g. model.block_out_channels="
                            "[8,16] (part of the generators' identity); repeatable")
    study.add_argument("--generator-step-scale", type=float, default=1.0, metavar="SCALE",
                       help="every generator stage's steps times SCALE (1), e.g. 0.5 gives a recipe that costs twice "
                            "as much per step the default recipe's CPU time (part of the generators' identity)")
    study.add_argument("--report-only", action="store_true",
                       help="train nothing: write the reports from the runs finished so far (a study in progress)")
    _add_unet_arguments(study, augment=False)

    quality = commands.add_parser(
        "image-quality", help="PSNR/SSIM/FID/MS-SSIM/tumour-area JSD per generator",
        description="Score K samples per generator against the real test slices. Writes OUT/image_quality.{json,md}.")
    _add_common_arguments(quality)
    _add_data_arguments(quality, train_required=False)
    metrics = quality.add_argument_group("metrics")
    metrics.add_argument("--num-samples", type=int, default=1000, help="samples K per generator (1000)")
    metrics.add_argument("--seed", type=int, default=0, help="sampling and pairing seed (0)")
    metrics.add_argument("--no-fid", action="store_true", help="skip FID (Inception-v3 is slow on CPU)")
    metrics.add_argument("--diversity-pairs", type=int, default=1000, help="MS-SSIM diversity pairs (1000)")
    metrics.add_argument("--area-bin-width", type=int, default=25, help="tumour-area bin width, px (25)")
    metrics.add_argument("--area-bins-start", type=int, default=200, help="first tumour-area bin edge, px (200)")
    metrics.add_argument("--kid-subset-size", type=int, default=1000,
                         help="KID: features per set and subset, capped at the smaller set (1000)")
    metrics.add_argument("--kid-subsets", type=int, default=100, help="KID: random subsets averaged (100)")
    metrics.add_argument("--no-tstr", action="store_true",
                         help="skip TSTR (a U-Net trained on the samples alone, scored on the real test slices, and "
                              "its real-only reference on --train-patients)")
    _add_unet_arguments(quality.add_argument_group("TSTR U-Net (the augmentation command's protocol)"))

    likelihood = commands.add_parser(
        "likelihood", help="held-out log p(x, m) and ELBO of HVAE/VAE generators",
        description="Importance-sampled log p(x, m) and the ELBO of each HVAE or VAE generator on the real test "
                    "slices, with paired differences. Writes OUT/likelihood.{json,md}.")
    _add_output_arguments(likelihood)
    _add_data_arguments(likelihood, train_required=False)
    estimate = likelihood.add_argument_group("estimator")
    estimate.add_argument("--num-importance-samples", type=int, default=64, help="samples per slice (64)")
    estimate.add_argument("--seed", type=int, default=0, help="seed of the posterior and momentum draws (0)")
    estimate.add_argument("--batch-size", type=int, default=16, help="test slices per model call (16)")
    estimate.add_argument("--importance-slices", type=int, default=None,
                          help="score log p(x, m) on this many evenly spaced test slices (default: all)")
    estimate.add_argument("--elbo-draws", type=int, default=1,
                          help="ELBO draws averaged per slice, with the flow on and off (1)")
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse the values that the settings classes let through, before any data are loaded: seeds beyond torch's
    range, an infinite learning rate, a U-Net too deep for --size, an --out that is a file and devices torch cannot
    compute on (the other ranges are checked by the settings classes).

    Raises:
        ValueError: naming the option, the value and the accepted range.
    """
    for seed in [*(getattr(args, "seeds", None) or []), getattr(args, "seed", None)]:
        if seed is not None and seed > MAX_SEED:
            raise ValueError(f"seed {seed} is too large: seeds must be <= {MAX_SEED} (2**63 - 1)")
    learning_rate = getattr(args, "learning_rate", None)
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"--learning-rate must be a finite number > 0, got {learning_rate}")
    levels = 0
    if args.command in ("augmentation", "scarcity") or (args.command == "image-quality" and not args.no_tstr):
        levels = len(args.unet_channels or UNetSettings.channels)
    # Below 2x2 at the bottom level the U-Net's instance norm fails in the first step, with a message about tensors.
    if levels and args.size < 2 ** levels:
        tstr_hint = ""
        if args.command == "image-quality":
            tstr_hint = " (or --no-tstr: image-quality trains a U-Net for its TSTR score)"
        raise ValueError(f"--unet-channels: a U-Net with {levels} levels shrinks --size {args.size} slices below 2x2; "
                         f"pass fewer --unet-channels or a --size of at least {2 ** levels}{tstr_hint}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out}: exists and is not a folder; pass a folder (it is reused to resume)")
    for option in ("--device", "--sampling-device"):
        device = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if device is not None:
            check_device(option, device)


def _seeds(args: argparse.Namespace) -> tuple[int, ...]:
    """The run seeds: ``--seeds``, else 0 .. ``--num-seeds`` - 1."""
    if args.num_seeds < 1:
        raise ValueError(f"--num-seeds must be >= 1, got {args.num_seeds}")
    seeds = tuple(args.seeds) if args.seeds is not None else tuple(range(args.num_seeds))
    if min(seeds) < 0:
        raise ValueError(f"--seeds must be >= 0, got {list(seeds)}")
    return seeds


def _unet_settings(args: argparse.Namespace) -> UNetSettings:
    """The U-Net settings of ``--protocol`` with the single settings given on the command line."""
    return UNetSettings.for_protocol(
        args.protocol, channels=tuple(args.unet_channels) if args.unet_channels else None,
        num_res_units=args.unet_res_units, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, updates=args.updates, augment=getattr(args, "augment", None))


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import (AugmentationGrid, ImageQualitySettings, LikelihoodSettings, RealDataSpec,
                              SamplingSettings, load_real_split, parse_generator, run_augmentation,
                              run_image_quality, run_likelihood)
    from ..evaluation.scarcity import ScarcityGrid, ScarcitySettings, run_scarcity
    from ..evaluation.splits import load_split

    _check_numbers(args)
    if args.num_threads is not None:
        if args.num_threads < 1:
            raise ValueError(f"--num-threads must be >= 1, got {args.num_threads}")
        torch.set_num_threads(args.num_threads)
    generators = [parse_generator(text) for text in getattr(args, "generator", [])]
    split = None
    if args.command == "scarcity":
        if args.split is None and args.data not in DEFAULT_SPLITS:
            raise ValueError(f"--data {args.data} has no packaged split: pass --split with a split JSON file")
        split = load_split(args.split or DEFAULT_SPLITS[args.data])
        args.train_patients, args.test_patients = split.pool, split.test
    spec = RealDataSpec(
        kind=args.data, train_patients=tuple(args.train_patients), test_patients=tuple(args.test_patients),
        root=args.root, image_glob=args.image_glob, label_glob=args.label_glob, mask_glob=args.mask_glob,
        channels=tuple(args.channels) if args.channels is not None else None,
        modalities=tuple(args.modalities) if args.modalities else None, label=args.label, size=args.size,
        depth=args.depth, min_tumour_area=args.min_tumour_area, num_phantom_slices=args.num_phantom_slices,
        note=args.note,
    )
    progress = not args.no_progress
    if not progress:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # the "Loading pipeline components" bars
    if args.command == "likelihood":
        settings = LikelihoodSettings(args.num_importance_samples, args.seed, args.batch_size, args.importance_slices,
                                      args.elbo_draws)
        real = load_real_split(spec)
        print(f"Real data: {real.description}")
        outcome = run_likelihood(real, spec, generators, args.out, settings, progress, args.allow_training_patients)
        print(f"{outcome.scored_generators} generators scored, {outcome.skipped_generators} already finished (skipped)")
        print((args.out / "likelihood.md").read_text())
        print(f"Reports: {', '.join(str(path) for path in outcome.files.values())}")
        return 0
    sampling = SamplingSettings(args.sampling_min_tumour_area, args.mask_threshold, args.sampling_batch_size,
                                args.prior, args.sampling_device)
    if args.command == "scarcity":
        grid = ScarcityGrid(tuple(args.ks), args.num_draws, _seeds(args), tuple(args.counts), tuple(args.generators))
        settings = ScarcitySettings(args.num_threads, tuple(args.generator_override), args.generator_step_scale,
                                    progress, args.device, report_only=args.report_only)
        print(f"Split {split.name}: pool {len(split.pool)} patients, test {len(split.test)} patients ({split.how})")
        outcome = run_scarcity(split, spec, grid, args.out, _unet_settings(args), sampling, settings)
        print(f"{outcome.trained_generators} generators and {outcome.trained_runs} U-Net runs trained now")
        print((args.out / "scarcity.md").read_text())
    elif args.command == "augmentation":
        grid = AugmentationGrid(tuple(generators), tuple(args.counts), _seeds(args), tuple(args.equal_update_control))
        unet = _unet_settings(args)
        real = load_real_split(spec)
        print(f"Real data: {real.description}")
        outcome = run_augmentation(real, spec, grid, args.out, unet, sampling, progress, args.device,
                                   args.allow_training_patients)
        print(f"{outcome.trained_runs} U-Net runs trained, {outcome.skipped_runs} already finished (skipped)")
        print((args.out / "augmentation.md").read_text())
    else:
        settings = ImageQualitySettings(args.num_samples, args.seed, not args.no_fid, args.diversity_pairs,
                                        args.area_bin_width, args.area_bins_start, args.kid_subset_size,
                                        args.kid_subsets, not args.no_tstr)
        real = load_real_split(spec)
        print(f"Real data: {real.description}")
        outcome = run_image_quality(real, spec, generators, args.out, settings, sampling, progress,
                                    _unet_settings(args), args.allow_training_patients)
        print(f"{outcome.scored_generators} generators scored, {outcome.skipped_generators} already finished (skipped)")
        print((args.out / "image_quality.md").read_text())
    print(f"Reports: {', '.join(str(path) for path in outcome.files.values())}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hvae-evaluate``; returns the exit status (2 on bad arguments or data, 1 when sampling fails)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..data import DataFormatError, MissingDataError
    from ..evaluation.scarcity import GeneratorTrainingError
    from ..pipeline import SamplingBudgetExceeded

    try:
        return _run(args)
    except (ValueError, MissingDataError, DataFormatError, ImportError, OSError) as error:
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (SamplingBudgetExceeded, GeneratorTrainingError) as error:
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
