"""scripts/parallel_augmentation.sh: a grid split over parallel processes gives the sequential grid's summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from evaluation_helpers import PHANTOM_DATA, TINY_SAMPLING, TINY_UNET, save_tiny_generator

from hvae_pipeline.cli.evaluate import main

pytest.importorskip("monai", reason="the downstream U-Net needs the eval extra (MONAI)")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "parallel_augmentation.sh"
EVALUATE = f"{sys.executable} -m hvae_pipeline.cli.evaluate"


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *arguments], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HVAE_EVALUATE": EVALUATE})


def test_parallel_processes_give_the_sequential_grid(tmp_path):
    generator = save_tiny_generator(tmp_path / "generator")
    common = [*PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING]
    finished = run_script(str(tmp_path / "parallel"), "0 1", "0 4", f"tiny={generator}", "--", *common)
    assert finished.returncode == 0, finished.stderr
    assert "4 processes started" in finished.stdout  # real-only and tiny, for each of 2 seeds
    assert "0 U-Net runs trained, 4 already finished (skipped)" in finished.stdout
    logs = sorted(path.name for path in (tmp_path / "parallel" / "logs").iterdir())
    assert logs == ["real-only-seed0.log", "real-only-seed1.log", "tiny-seed0.log", "tiny-seed1.log"]

    assert main(["augmentation", "--generator", f"tiny={generator}", "--out", str(tmp_path / "sequential"),
                 "--counts", "0", "4", "--num-seeds", "2", "--no-progress", *common]) == 0
    summaries = [json.loads((tmp_path / folder / "augmentation.json").read_text())
                 for folder in ("parallel", "sequential")]
    for summary in summaries:
        summary.pop("total_train_seconds")
    assert summaries[0] == summaries[1]


def test_a_failing_process_fails_the_script_and_shows_its_log(tmp_path):
    generator = save_tiny_generator(tmp_path / "generator")
    failed = run_script(str(tmp_path / "out"), "0", "0 4", f"tiny={generator}", "--", *PHANTOM_DATA, *TINY_UNET,
                        *TINY_SAMPLING, "--unet-channels", "4", "8", "8", "8", "8", "8", "8")
    assert failed.returncode == 1
    assert "2 processes failed" in failed.stderr and "a U-Net with 7 levels shrinks --size 32 slices" in failed.stderr
    assert not (tmp_path / "out" / "augmentation.json").exists()


def test_counts_above_zero_without_a_generator_are_refused(tmp_path):
    refused = run_script(str(tmp_path / "out"), "0", "0 4", "--", *PHANTOM_DATA)
    assert refused.returncode == 2 and "need at least one NAME=PATH generator" in refused.stderr
    assert not (tmp_path / "out").exists()
