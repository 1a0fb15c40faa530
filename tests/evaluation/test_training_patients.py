"""Issue 26, case 6: evaluation knows a generator's training patients and never calls scores on them held-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluation_helpers import QUIET, TINY_SIZE, save_tiny_generator

from hvae_pipeline.cli.evaluate import main
from hvae_pipeline.evaluation.generators import GeneratorSpec, parse_generator, training_patients

# The phantom patients of 64 slices: phantom-002 is tested on, and the generators below say they trained on it.
DATA = ["--data", "phantom", "--size", str(TINY_SIZE), "--num-phantom-slices", "64", "--train-patients",
        "phantom-000", "--test-patients", "phantom-002", "phantom-003"]


def generator_with_card(folder: Path, patients: str) -> Path:
    """A tiny generator whose model card states its training patients as the trainer's cards do."""
    save_tiny_generator(folder)
    (folder / "README.md").write_text(f"# tiny\n\nSYNTHETIC phantoms, resampled to 32 x 32. Patients: {patients}.\n")
    return folder


def likelihood(generator: Path, out: Path, *extra: str) -> int:
    return main(["likelihood", "--generator", f"tiny={generator}", "--out", str(out), "--num-importance-samples", "2",
                 *DATA, *QUIET, *extra])


def test_the_bundled_model_and_a_run_config_name_their_training_patients(tmp_path):
    assert "BRATS_001" in training_patients(parse_generator("b=bundled"))
    run = tmp_path / "run"
    save_tiny_generator(run / "pipeline")
    (run / "config.yaml").write_text("data:\n  patients: [phantom-001, phantom-003]\n")
    assert training_patients(GeneratorSpec("run", run / "pipeline")) == ("phantom-001", "phantom-003")
    assert training_patients(GeneratorSpec("bare", save_tiny_generator(tmp_path / "bare"))) is None


def test_scoring_a_generator_on_its_own_training_patients_is_refused(tmp_path, capsys):
    generator = generator_with_card(tmp_path / "generator", "phantom-001, phantom-002")
    assert likelihood(generator, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "generator tiny on ['phantom-002']" in error and "--allow-training-patients" in error
    assert not (tmp_path / "out" / "runs").exists()  # refused before any work


@pytest.mark.parametrize("command", ["likelihood", "image-quality"])
def test_when_allowed_the_reports_say_not_held_out_and_never_held_out(tmp_path, command):
    generator = generator_with_card(tmp_path / "generator", "phantom-001, phantom-002")
    extra = ["--num-importance-samples", "2"] if command == "likelihood" else [
        "--num-samples", "4", "--no-fid", "--no-tstr", "--diversity-pairs", "4", "--sampling-min-tumour-area", "0"]
    assert main([command, "--generator", f"tiny={generator}", "--out", str(tmp_path / "out"), *DATA, *QUIET, *extra,
                 "--allow-training-patients"]) == 0
    name = command.replace("-", "_")
    report = (tmp_path / "out" / f"{name}.md").read_text()
    summary = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert summary["seen_in_training"] == {"tiny": ["phantom-002"]}
    assert "**NOT held-out**" in report and "tiny on phantom-002" in report
    assert "held-out log-likelihood" not in report.lower()


def test_a_generator_trained_on_other_patients_is_scored_as_held_out(tmp_path):
    generator = generator_with_card(tmp_path / "generator", "phantom-000, phantom-001")
    assert likelihood(generator, tmp_path / "out") == 0
    report = (tmp_path / "out" / "likelihood.md").read_text()
    assert report.startswith("# Held-out log-likelihood") and "NOT held-out" not in report
