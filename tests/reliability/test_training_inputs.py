"""training/train_hvae.py: bad `training.*` overrides end with one line and exit code 2 before any data are loaded
or anything is written; resume falls back past a corrupt latest checkpoint (still bit-identical to an uninterrupted
run) and refuses a checkpoint of another architecture in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_TRAINING as TINY
from reliability_helpers import run_cli, untouched
from safetensors.torch import load_file

from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.config import DEFAULTS
from hvae_pipeline.training.config_rules import TRAINING_RULES


@pytest.mark.parametrize("override, message", [
    ("training.learning_rate=fast", "training.learning_rate='fast': expected a number > 0"),
    ("training.learning_rate=0", "training.learning_rate=0: expected a number > 0"),
    ("training.learning_rate=.nan", "training.learning_rate=nan: expected a number > 0"),
    ("training.checkpointing_steps=0", "training.checkpointing_steps=0: expected an integer >= 1"),
    ("training.max_steps=-5", "training.max_steps=-5: expected an integer >= 1"),
    ("training.max_steps=2.5", "training.max_steps=2.5: expected an integer >= 1"),
    ("training.batch_size=0", "training.batch_size=0: expected an integer >= 1"),
    ("training.log_steps=0", "training.log_steps=0: expected an integer >= 1"),
    ("training.sample_steps=true", "training.sample_steps=True: expected an integer >= 1"),
    ("training.weight_decay=-1e-4", "training.weight_decay=-0.0001: expected a number >= 0"),
    ("training.adam_betas=[0.9]", "training.adam_betas=[0.9]: expected two numbers in [0, 1)"),
    ("training.adam_betas=[0.9, 1.0]", "training.adam_betas=[0.9, 1.0]: expected two numbers in [0, 1)"),
    ("training.lr_scheduler=cosine_annealing", "training.lr_scheduler='cosine_annealing': expected 'constant', 'constant_with_warmup'"),
    ("training.mixed_precision=fp8", "training.mixed_precision='fp8': expected 'no', 'bf16' or 'fp16'"),
    ("training.flow_learning_rate=0", "training.flow_learning_rate=0: expected a number > 0 or null"),
    ("training.seed=1e30", "training.seed=1e+30: expected an integer in [0, 2**32)"),
    ("training.ema_decay=1", "training.ema_decay=1: expected a number in (0, 1) or null"),
])
def test_bad_training_override_is_one_line_with_exit_code_2(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    with untouched(tmp_path):
        code, err = run_cli(train_hvae.main, [*TINY, f"training.output_dir={out}", override], capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Training on" not in capsys.readouterr().out


def test_every_training_key_has_a_rule():
    assert set(TRAINING_RULES) == set(DEFAULTS["training"])


def test_unquoted_no_is_taken_for_mixed_precision_no(tmp_path):
    from hvae_pipeline.training.config import load_config

    assert load_config("phantom-tiny", ["training.mixed_precision=no"])["training"]["mixed_precision"] == "no"


# ------------------------------------------------------------------------------------------------ resume
def train(output_dir: Path, *extra: str) -> int:
    """14 tiny training steps into ``output_dir``, checkpoints every 3; returns the exit code."""
    return train_hvae.main([*TINY, "training.max_steps=14", "training.checkpointing_steps=3",
                            f"training.output_dir={output_dir}", *extra])


def train_cli(argv: list) -> int:
    """:func:`train` called the way :func:`run_cli` calls a CLI: the output folder first, then the arguments."""
    return train(*argv)


@pytest.fixture(scope="module")
def straight_and_interrupted(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted 14-step run, and a run stopped at step 7 (checkpoints 3, 6 and 7)."""
    root = tmp_path_factory.mktemp("resume")
    assert train(root / "straight") == 0
    assert train(root / "interrupted", "--stop-after-steps", "7") == 0
    return root / "straight", root / "interrupted"


def copy_run(run: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(run, destination)
    return destination


def test_corrupt_latest_checkpoint_falls_back_and_stays_bit_identical(straight_and_interrupted, tmp_path, capsys):
    straight, interrupted = straight_and_interrupted
    run = copy_run(interrupted, tmp_path / "run")
    weights = run / "checkpoints" / "checkpoint-7" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    assert train(run, "--resume-from-checkpoint", "latest") == 0
    captured = capsys.readouterr()
    assert f"Checkpoint {weights.parent} is unreadable (SafetensorError" in captured.err
    assert "Resumed from" in captured.out and "checkpoint-6 at step 6" in captured.out
    final = "pipeline/model/diffusion_pytorch_model.safetensors"
    expected, resumed = load_file(straight / final), load_file(run / final)
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_every_checkpoint_unreadable_is_one_line_with_exit_code_2(straight_and_interrupted, tmp_path, capsys):
    run = copy_run(straight_and_interrupted[1], tmp_path / "run")
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "optimizer.bin").write_bytes(b"\x80")
    with untouched(run):
        code, err = run_cli(train_cli, [run, "--resume-from-checkpoint", "latest"], capsys)
    assert code == 2 and "error: --resume-from-checkpoint: no readable checkpoint among" in err.strip().splitlines()[-1]
    assert "Traceback" not in err


def test_checkpoint_of_another_architecture_is_one_line_with_exit_code_2(straight_and_interrupted, tmp_path, capsys):
    run = copy_run(straight_and_interrupted[1], tmp_path / "run")
    with untouched(run):
        code, err = run_cli(train_cli, [run, "model.block_out_channels=[8, 8]", "--resume-from-checkpoint", "latest"],
                            capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "checkpoint-7: model.block_out_channels differ from the run's config" in err


def test_missing_resume_folder_is_refused_before_loading_data(tmp_path, capsys):
    with untouched(tmp_path):
        code, err = run_cli(train_cli, [tmp_path / "run", "--resume-from-checkpoint", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "nowhere: no such checkpoint folder" in err and "Training on" not in capsys.readouterr().out
