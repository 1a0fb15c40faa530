"""hvae-train owns its run folder (issue 26, cases 1-5): a foreign folder or an earlier run is refused (or moved aside
with --overwrite-run, never deleted), another run's checkpoint is refused, overrides on resume apply or are refused,
files a user put into a run folder survive resume, rotation and re-export byte for byte, and SIGINT/SIGTERM save a
checkpoint at the step reached from which resume is bit-identical."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from reliability_helpers import TINY_TRAINING, file_contents, run_cli, untouched
from safetensors.torch import load_file

from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.run_log import CsvLog

WEIGHTS = "pipeline/model/diffusion_pytorch_model.safetensors"


def train(output_dir: Path, *extra: str) -> int:
    """Tiny training steps into ``output_dir`` (6 unless ``extra`` says otherwise), a checkpoint every 2."""
    return train_hvae.main([*TINY_TRAINING, "training.max_steps=6", "training.checkpointing_steps=2",
                            f"training.output_dir={output_dir}", *extra])


def train_cli(argv: list) -> int:
    """:func:`train` as :func:`run_cli` calls a CLI: the output folder first, then the arguments."""
    return train(*argv)


def same_weights(first: Path, second: Path) -> bool:
    expected, actual = load_file(first / WEIGHTS), load_file(second / WEIGHTS)
    return expected.keys() == actual.keys() and all(torch.equal(expected[name], actual[name]) for name in expected)


def logged_steps(run: Path) -> list[int]:
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 6-step run (checkpoints 2, 4 and 6, an exported pipeline); tests copy it before changing it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(run) == 0
    return run


def copy_run(run: Path, destination: Path) -> Path:
    import shutil

    shutil.copytree(run, destination)
    return destination


# ------------------------------------------------------------------------------------------------ case 1
def test_a_foreign_folder_is_refused_and_left_byte_identical(tmp_path, capsys):
    folder = tmp_path / "mine"
    for name in ("notes.txt", "pipeline/model.txt", "checkpoints/checkpoint-1/state.txt", "logs/metrics.csv"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"the user's {name}")
    before = file_contents(folder)
    with untouched(tmp_path):
        code, err = run_cli(train_cli, [folder], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"training.output_dir={folder} is not empty and is not a run folder of hvae-train" in err
    assert "pass a new or empty folder" in err and "--resume-from-checkpoint" in err
    assert file_contents(folder) == before


# ------------------------------------------------------------------------------------------------ case 4
def test_a_new_run_over_an_earlier_run_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    with untouched(tmp_path):
        code, err = run_cli(train_cli, [run, "training.max_steps=4"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds an earlier run: continue it with --resume-from-checkpoint latest" in err
    assert "--overwrite-run to move the earlier run aside (nothing is deleted)" in err


def test_overwrite_run_moves_the_earlier_run_aside(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    earlier = file_contents(run)
    assert train(run, "training.max_steps=4", "--overwrite-run") == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert f"Moved the earlier run in {run} to {aside}" in capsys.readouterr().out
    assert file_contents(aside) == earlier
    assert logged_steps(run) == [1, 2, 3, 4]
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert train(run, "training.max_steps=6", "--resume-from-checkpoint", "latest") == 0  # the new run's own
    assert same_weights(finished_run, run) and logged_steps(run) == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------ case 3
def test_another_runs_checkpoint_is_refused_and_init_from_is_named(finished_run, tmp_path, capsys):
    checkpoint = finished_run / "checkpoints" / "checkpoint-6"
    with untouched(tmp_path), untouched(finished_run):
        code, err = run_cli(train_cli, [tmp_path / "new", "training.max_steps=8", "--resume-from-checkpoint",
                                        str(checkpoint)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--resume-from-checkpoint {checkpoint}: a checkpoint of another run" in err
    assert "training.init_from=<that folder>/pipeline" in err and str(finished_run) in err


# ------------------------------------------------------------------------------------------------ case 2
def test_a_new_learning_rate_on_resume_applies_and_is_recorded(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    assert train(run, "training.max_steps=8", "training.learning_rate=1e-5", "--resume-from-checkpoint", "latest") == 0
    assert "training.learning_rate: 0.002 in the checkpoint, 1e-05 from step 6 on" in capsys.readouterr().out
    with open(run / "logs" / "metrics.csv", newline="") as handle:
        rates = {int(row["step"]): float(row["lr"]) for row in csv.DictReader(handle)}
    assert rates[6] == 0.002 and rates[7] == rates[8] == 1e-5  # the optimiser used it, not only the records
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["learning_rate"] == 1e-5
    card = (run / "pipeline" / "README.md").read_text()
    assert "changed at step 6 (resume)" in card and "training.learning_rate 0.002 -> 1e-05" in card
    # Resumed again from checkpoint-8, trained at 1e-05: nothing changes now, whatever older checkpoints hold.
    assert train(run, "training.max_steps=9", "training.learning_rate=1e-5", "--resume-from-checkpoint", "latest") == 0
    assert "training.learning_rate:" not in capsys.readouterr().out  # max_steps 8 -> 9 is the one change


@pytest.mark.parametrize("override, message", [
    ("training.batch_size=4", "training.batch_size differ from the run's config (training.batch_size: 8 in the "
                              "checkpoint, 4 now)"),
    ("model.n_leapfrog=2", "model.n_leapfrog differ from the run's config"),
    ("training.max_steps=5", "the checkpoint is at step 6, past training.max_steps=5"),
])
def test_an_override_that_cannot_apply_on_resume_is_refused(finished_run, tmp_path, capsys, override, message):
    run = copy_run(finished_run, tmp_path / "run")
    with untouched(run):
        code, err = run_cli(train_cli, [run, override, "--resume-from-checkpoint", "latest"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


# ------------------------------------------------------------------------------------------------ foreign files
def test_files_planted_in_every_folder_of_a_run_survive_resume_rotation_and_export(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    planted = [run / "notes.txt", run / "logs" / "notes.txt", run / "checkpoints" / "notes.txt",
               run / "checkpoints" / "checkpoint-2" / "notes.txt", run / "pipeline" / "notes.txt",
               run / "pipeline" / "model" / "notes.txt", run / "samples" / "notes.txt"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(64))
    before = {path: path.read_bytes() for path in planted}
    # Resumed to step 10 keeping 1 checkpoint: rotation removes checkpoints 2-8, the export replaces pipeline/.
    assert train(run, "training.max_steps=10", "training.checkpoints_total_limit=1", "training.sample_steps=5",
                 "--resume-from-checkpoint", "latest") == 0
    assert {path: path.read_bytes() for path in planted} == before
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-2",
                                                                            "notes.txt"]
    assert [path.name for path in (run / "checkpoints" / "checkpoint-2").iterdir()] == ["notes.txt"]
    assert (run / "samples" / "step-000010.png").is_file() and not same_weights(finished_run, run)


# ------------------------------------------------------------------------------------------------ case 5
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_the_step_and_resume_is_bit_identical(finished_run, tmp_path, capsys, monkeypatch,
                                                                    stop_signal):
    append = CsvLog.append

    def signal_at_step_3(log: CsvLog, row: dict) -> None:  # the signal arrives mid-run, between two checkpoints
        append(log, row)
        if row["step"] == 3:
            os.kill(os.getpid(), stop_signal)

    monkeypatch.setattr(CsvLog, "append", signal_at_step_3)
    run = tmp_path / "run"
    code, err = run_cli(train_cli, [run], capsys)
    assert code == 128 + stop_signal and "Traceback" not in err
    checkpoint = run / "checkpoints" / "checkpoint-3"
    assert err.strip().splitlines()[-1] == (
        f"Interrupted by {stop_signal.name} at step 3: saved {checkpoint}; resume with: hvae-train --config "
        f"{run / 'config.yaml'} --resume-from-checkpoint latest")
    assert checkpoint.is_dir() and not (run / "pipeline").exists()
    monkeypatch.setattr(CsvLog, "append", append)
    assert train(run, "--resume-from-checkpoint", "latest") == 0
    assert same_weights(finished_run, run) and logged_steps(run) == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------ earlier versions
def test_a_run_folder_of_an_earlier_version_is_adopted_on_resume_and_refused_for_a_new_run(finished_run, tmp_path,
                                                                                            capsys):
    """A folder written before run records (config.yaml, checkpoints/ without hvae-run.json) resumes as before."""
    straight = tmp_path / "straight"
    assert train(straight, "training.max_steps=8") == 0
    run = copy_run(finished_run, tmp_path / "earlier")
    for record in [run / ".hvae-run.json", *run.glob("checkpoints/*/hvae-run.json")]:
        record.unlink()
    with untouched(run):
        code, err = run_cli(train_cli, [run], capsys)
    assert code == 2 and "holds an earlier run" in err
    assert train(run, "training.max_steps=8", "--resume-from-checkpoint", "latest") == 0
    assert same_weights(straight, run) and (run / ".hvae-run.json").is_file()


def test_a_damaged_run_record_is_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / ".hvae-run.json").write_text('{"run_id": ')  # cut short, as by a full disk
    with untouched(run):
        code, err = run_cli(train_cli, [run, "--resume-from-checkpoint", "latest"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{run / '.hvae-run.json'}: unreadable run record" in err
