"""Training with Accelerate as its users expect: the launcher's (or ``accelerate config``'s) mixed precision wins
unless the config sets one, ``training.report_to`` names an installed tracker, and the resolved config is logged
(console, ``<output_dir>/config.yaml``, the tracker). Also the pure steps that ``run_training`` is made of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.config import DEFAULTS, ConfigError, dump_config, flat_config, load_config
from hvae_pipeline.training.components import LAUNCHER_PRECISION, load_slices, make_loader, resolve_mixed_precision
from hvae_pipeline.training.run_log import metrics_row

# 16 x 16 phantoms and a two-level network: each step takes a few milliseconds.
TINY = ["model.sample_size=16", "data.size=16", "data.num_phantom_slices=48", "training.batch_size=8",
        "training.log_steps=1", "training.sample_steps=1000", "training.num_threads=1", "training.max_steps=2",
        "training.fit_latent_prior=false"]
INSTALLED_TRACKERS = sorted(str(tracker.value) for tracker in get_available_trackers())


# ------------------------------------------------------------------------------------------------ mixed precision
def test_the_default_config_leaves_mixed_precision_to_the_launcher():
    assert DEFAULTS["training"]["mixed_precision"] is None
    assert load_config("phantom-tiny")["training"]["mixed_precision"] is None
    assert load_config("phantom-tiny", ["training.mixed_precision=null"])["training"]["mixed_precision"] is None
    assert load_config("phantom-tiny", ["training.mixed_precision=bf16"])["training"]["mixed_precision"] == "bf16"


@pytest.mark.parametrize("configured, launcher, expected", [
    (None, None, "no"),  # plain `python ...`: fp32
    (None, "bf16", "bf16"),  # `accelerate launch --mixed_precision bf16` / `accelerate config`
    ("no", "bf16", "no"),  # the config's explicit choice wins
    ("fp16", "bf16", "fp16"),
])
def test_config_wins_over_the_launcher_only_when_set(monkeypatch, configured, launcher, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the precedence, as on a GPU machine
    if launcher is None:
        monkeypatch.delenv(LAUNCHER_PRECISION, raising=False)
    else:
        monkeypatch.setenv(LAUNCHER_PRECISION, launcher)
    assert resolve_mixed_precision(configured) == expected


@pytest.mark.parametrize("configured, source", [
    (None, "from ACCELERATE_MIXED_PRECISION (accelerate launch/config)"),
    ("bf16", "from training.mixed_precision"),
])
def test_cpus_train_in_fp32_whoever_asks_for_mixed_precision(monkeypatch, capsys, configured, source):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(LAUNCHER_PRECISION, "bf16")
    assert resolve_mixed_precision(configured) == "no"
    assert f"mixed_precision=bf16 {source} ignored: no CUDA device; training in fp32" in capsys.readouterr().out


@pytest.mark.slow
def test_accelerate_config_file_reaches_the_trainer(tmp_path):
    """A real `accelerate launch --config_file` (what `accelerate config` writes) with fp16: the trainer reads that
    choice (on this CPU it then says it trains in fp32); before, the config's default "no" silently replaced it."""
    accelerate_config = tmp_path / "accelerate.yaml"
    accelerate_config.write_text(yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "mixed_precision": "fp16",
        "num_processes": 1, "num_machines": 1, "machine_rank": 0, "use_cpu": True, "dynamo_config": {}}))
    out = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(accelerate_config),
               "-m", "hvae_pipeline.training.train_hvae", "--config", "phantom-tiny", *TINY,
               f"training.output_dir={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "mixed_precision=fp16 from ACCELERATE_MIXED_PRECISION (accelerate launch/config) ignored" in result.stdout
    assert load_config(out / "config.yaml")["training"]["mixed_precision"] == "no"  # what the run used


# ------------------------------------------------------------------------------------------------ trackers
def test_report_to_an_unknown_tracker_names_the_choices():
    with pytest.raises(ConfigError) as error:
        load_config("phantom-tiny", ["training.report_to=tensorbord"])
    message = str(error.value)
    assert message.startswith("training.report_to='tensorbord': expected 'csv' or one of Accelerate's trackers (")
    listed, installed = message.split("installed here: ")
    assert all(repr(name) in listed for name in LOGGER_TYPE_TO_CLASS)
    assert all(repr(name) in installed for name in ["csv", *INSTALLED_TRACKERS])


def test_report_to_a_tracker_that_is_not_installed_fails_before_training(tmp_path, capsys):
    missing = sorted(set(LOGGER_TYPE_TO_CLASS) - set(INSTALLED_TRACKERS))
    assert missing, "every Accelerate tracker is installed: no case left to check"
    out = tmp_path / "run"
    code = train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={out}",
                            f"training.report_to={missing[0]}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"training.report_to='{missing[0]}': the {missing[0]} tracker is not installed (installed here: 'csv'" in err
    assert f"pip install {missing[0]}" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ resolved config
def test_the_resolved_config_is_printed_written_and_reloadable(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [*TINY, f"training.output_dir={out}", "training.adam_betas=[0.5, 0.9]"]
    assert train_hvae.main(["--config", "phantom-tiny", *overrides]) == 0
    printed = capsys.readouterr().out
    written = (out / "config.yaml").read_text()
    assert "Config (1 process(es) on cpu):\n" + written in printed
    expected = load_config("phantom-tiny", overrides)
    expected["training"]["mixed_precision"] = "no"  # unset: resolved to what the run used
    assert load_config(out / "config.yaml") == expected
    assert "mixed precision | no" in (out / "pipeline" / "README.md").read_text()


def test_tensorboard_receives_the_resolved_config_and_the_losses(tmp_path):
    out = tmp_path / "run"
    assert train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={out}",
                            "training.report_to=tensorboard"]) == 0
    (hparams,) = (out / "hvae").glob("*/hparams.yml")
    logged = yaml.safe_load(hparams.read_text())
    assert logged == flat_config(load_config(out / "config.yaml"))
    assert logged["training.report_to"] == "tensorboard" and logged["model.sample_size"] == 16
    assert list((out / "hvae").glob("**/events.out.tfevents.*"))


def test_dump_config_round_trips_and_flat_config_holds_scalars_only(tmp_path):
    # "no" is YAML 1.1's false unless quoted, 1e-8 a string unless written as a float: both must come back as they were.
    config = load_config("cpu-128", ["training.ema_decay=0.999", "training.mixed_precision=no",
                                     "training.init_from=null"])
    (tmp_path / "config.yaml").write_text(dump_config(config))
    assert load_config(tmp_path / "config.yaml") == config
    flat = flat_config(config)
    assert set(flat) == {f"{section}.{key}" for section in config for key in config[section]}
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())
    assert flat["training.adam_betas"] == "[0.9, 0.999]" and flat["training.init_from"] == "null"
    assert flat["training.mixed_precision"] == "no" and flat["training.weight_decay"] == 1e-8


# ------------------------------------------------------------------------------------------------ run_training's steps
def test_metrics_row_holds_numbers():
    row = metrics_row(3, 1e-3, 0.5, {"loss": torch.tensor(2.5), "kl": torch.tensor(0.25)})
    assert row == {"step": 3, "lr": 1e-3, "seconds_per_step": 0.5, "loss": 2.5, "kl": 0.25}


def test_load_slices_and_make_loader():
    config = load_config("phantom-tiny", TINY)
    (images, masks), validation = load_slices(config["data"], announce=False)
    assert validation is None and len(images) == len(masks) == 48 and images.shape[-2:] == masks.shape[-2:] == (16, 16)
    loader = make_loader(images, masks, config["training"], num_processes=2)
    assert len(loader) == 48 // 8
    with pytest.raises(ValueError, match=r"training.batch_size=8 x 7 processes exceeds the 48 training slices"):
        make_loader(images, masks, config["training"], num_processes=7)
