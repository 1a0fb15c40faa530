"""The command line shared by ``hvae-train`` and ``hvae-train-lsgan``, and the config checks made before any data
are loaded."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

import torch

from hvae_pipeline.cli.version import add_version_option
from hvae_pipeline.models.inputs import ConfigValueError
from hvae_pipeline.hub.push import add_push_arguments, hub_target_from_arguments
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.loop import run_training
from hvae_pipeline.training.components import check_batch_fits
from hvae_pipeline.training.run_folder import ResumeError
from hvae_pipeline.training.run_record import RunFolderError
from hvae_pipeline.training.trainer import TrainingRun


def command_line(run_class: type[TrainingRun], description: str, argv: Sequence[str] | None = None) -> int:
    """The shared command line of the training scripts; returns the process exit code."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_option(parser)
    parser.add_argument("--config", default="cpu-128", help="YAML file or name under training/configs/")
    parser.add_argument("--resume-from-checkpoint", default=None,
                        help="'latest' or a checkpoint folder of the run in training.output_dir")
    parser.add_argument("--overwrite-run", action="store_true",
                        help="start a new run in a training.output_dir that holds an earlier one, which is moved aside "
                             "to <output_dir>.replaced-<time> (nothing is deleted)")
    add_push_arguments(parser)
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps of this invocation, as an interruption")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.max_steps=100")
    # Intermixed: overrides may follow an option (`--stop-after-steps 5 training.max_steps=10`).
    args = parser.parse_intermixed_args(argv)
    if args.stop_after_steps is not None and args.stop_after_steps < 1:  # 0 would still train one step
        parser.error(f"--stop-after-steps must be >= 1, got {args.stop_after_steps}; leave it out to train to the end")
    try:
        run = run_class(load_config(args.config, args.overrides))
        check_before_data(run)
        return run_training(run, args.resume_from_checkpoint, hub_target_from_arguments(parser, args),
                            args.stop_after_steps, args.overwrite_run)
    except (ConfigError, ResumeError, RunFolderError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the steps, which save a checkpoint on Ctrl-C: loading data, or exporting
        print(f"{parser.prog}: interrupted outside the training steps; what the run wrote before is kept (continue "
              "with --resume-from-checkpoint latest)", file=sys.stderr)
        return 128 + signal.SIGINT


def check_before_data(run: TrainingRun) -> None:
    """Raise :class:`ConfigError` for what would otherwise fail only after the data are loaded: ``model.*`` values the
    model refuses (named ``model.<key>``), a ``model.sample_size`` other than ``data.size``, a ``training.output_dir``
    below a file, more phantom slices per batch than the config makes. Prints the run's config warnings."""
    size, arguments = run.config["data"]["size"], run.model_arguments()
    if arguments["sample_size"] != size:
        raise ConfigError(f"model.sample_size={arguments['sample_size']!r} differs from data.size={size}: the slices "
                          "would not fit the model; set both to the same value")
    try:
        with torch.device("meta"):  # no memory and no random draws: the run builds its own model later
            run.build_model()
    except ConfigValueError as error:
        raise ConfigError(f"model.{error.key}={error.value!r}: expected {error.expected}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {error}") from None
    data = run.config["data"]
    if data["kind"] == "phantom":  # the one kind whose slice count is known before loading
        check_batch_fits(run.config["training"]["batch_size"], 1, data["num_phantom_slices"],
                         "phantom slices (data.num_phantom_slices)")
    for warning in run.config_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    output_dir = Path(run.config["training"]["output_dir"])
    existing = next(folder for folder in (output_dir, *output_dir.parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(f"training.output_dir={str(output_dir)!r}: {existing} is a file, not a folder; pass a folder "
                          "path")
