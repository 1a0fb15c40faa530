"""``hvae-evaluate augmentation`` end to end on SYNTHETIC 32 x 32 phantoms with a tiny U-Net and generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from evaluation_helpers import PHANTOM_DATA, QUIET, TINY_SAMPLING, TINY_UNET, save_tiny_generator

from hvae_pipeline.cli.evaluate import main

pytest.importorskip("monai", reason="the downstream U-Net needs the eval extra (MONAI)")


def augmentation(generator: Path, out: Path, *extra: str) -> int:
    return main(["augmentation", "--generator", f"tiny={generator}", "--out", str(out), "--counts", "0", "4",
                 "--num-seeds", "2", *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING, *QUIET, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-seed x N in (0, 4) run: (generator folder, output folder)."""
    root = tmp_path_factory.mktemp("augmentation")
    generator = save_tiny_generator(root / "generator")
    assert augmentation(generator, root / "out") == 0
    return generator, root / "out"


def test_writes_one_record_per_run_and_the_summary_json(finished_run):
    _, out = finished_run
    records = sorted(path.name for path in (out / "runs").glob("*.json"))
    assert records == ["augmentation__real-only__n0__seed0.json", "augmentation__real-only__n0__seed1.json",
                       "augmentation__tiny__n4__seed0.json", "augmentation__tiny__n4__seed1.json"]
    record = json.loads((out / "runs" / "augmentation__tiny__n4__seed1.json").read_text())
    assert record["num_synthetic"] == 4 and record["seed"] == 1
    assert record["num_real_train_slices"] == 32 and record["num_test_slices"] == 16
    assert len(record["dice_per_slice"]) == 16
    assert record["dice_mean"] == pytest.approx(np.mean(record["dice_per_slice"]), abs=1e-5)

    summary = json.loads((out / "augmentation.json").read_text())
    assert summary["counts"] == [0, 4] and summary["seeds"] == [0, 1]
    by_count = summary["dice"]["tiny"]
    real_only = [json.loads((out / "runs" / f"augmentation__real-only__n0__seed{s}.json").read_text())["dice_mean"]
                 for s in (0, 1)]
    # N = 0 of every generator is the real-only runs; std is the sample std over the 2 seeds.
    assert by_count["0"]["per_seed"] == {"0": real_only[0], "1": real_only[1]}
    assert by_count["0"]["mean"] == pytest.approx(np.mean(real_only))
    assert by_count["0"]["std"] == pytest.approx(np.std(real_only, ddof=1))
    assert by_count["4"]["num_runs"] == 2 and 0.0 <= by_count["4"]["mean"] <= 1.0


def test_writes_the_markdown_table_and_the_png_plot(finished_run):
    _, out = finished_run
    summary = json.loads((out / "augmentation.json").read_text())
    table = (out / "augmentation.md").read_text()
    assert "| generator \\ synthetic N | 0 | 4 |" in table
    row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    expected = f"{100 * summary['dice']['tiny']['4']['mean']:.1f} ± {100 * summary['dice']['tiny']['4']['std']:.1f}"
    assert row.split(" | ")[2].rstrip(" |") == expected
    assert "SYNTHETIC" in table  # phantom data are labelled as such
    with PIL.Image.open(out / "augmentation.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300


def test_second_invocation_trains_nothing(finished_run, capsys):
    generator, out = finished_run
    before = {path.name: path.stat().st_mtime_ns for path in (out / "runs").iterdir()}
    capsys.readouterr()
    assert augmentation(generator, out) == 0
    assert "0 U-Net runs trained, 4 already finished (skipped)" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in (out / "runs").iterdir()} == before


def test_runs_another_process_finished_meanwhile_are_not_redone(finished_run, tmp_path, capsys, monkeypatch):
    """Two processes sharing a folder: records written by the other one after this one planned are used as they are."""
    import shutil

    import hvae_pipeline.evaluation.augmentation as augmentation_module

    generator, finished = finished_run
    real_train_segmenter = augmentation_module.train_segmenter
    descriptions = []

    def train_while_another_process_finishes_the_rest(*args, description, **kwargs):
        descriptions.append(description)
        (tmp_path / "out" / "runs").mkdir(parents=True, exist_ok=True)
        for record in (finished / "runs").glob("*.json"):  # the "other process" finishes every other run now
            if record.name != "augmentation__real-only__n0__seed0.json":
                shutil.copy(record, tmp_path / "out" / "runs" / record.name)
        return real_train_segmenter(*args, description=description, **kwargs)

    monkeypatch.setattr(augmentation_module, "train_segmenter", train_while_another_process_finishes_the_rest)
    capsys.readouterr()
    assert augmentation(generator, tmp_path / "out") == 0
    assert descriptions == ["U-Net real-only N=0 seed=0"]
    assert "1 U-Net runs trained, 3 already finished (skipped)" in capsys.readouterr().out
    summary, reference = (json.loads((folder / "augmentation.json").read_text()) for folder in (tmp_path / "out", finished))
    for timing in (summary, reference):  # the one re-trained run took its own wall time
        timing.pop("total_train_seconds")
    assert summary == reference


def test_a_larger_grid_trains_only_the_new_runs(tmp_path, capsys):
    generator = save_tiny_generator(tmp_path / "generator")
    common = ["--generator", f"tiny={generator}", "--out", str(tmp_path / "out"), "--num-seeds", "1",
              *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING, *QUIET]
    assert main(["augmentation", "--counts", "0", "4", *common]) == 0
    capsys.readouterr()
    assert main(["augmentation", "--counts", "0", "4", "8", *common]) == 0
    assert "1 U-Net runs trained, 2 already finished (skipped)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "augmentation.json").read_text())["counts"] == [0, 4, 8]


def test_other_settings_in_the_same_folder_are_refused(finished_run, capsys):
    generator, out = finished_run
    before = (out / "augmentation.json").read_text()
    assert augmentation(generator, out, "--epochs", "2") == 2
    error = capsys.readouterr().err
    assert "finished run made with other settings" in error and "unet" in error
    assert (out / "augmentation.json").read_text() == before


def test_test_patients_overlapping_train_patients_are_refused(tmp_path, capsys):
    generator = save_tiny_generator(tmp_path / "generator")
    code = main(["augmentation", "--generator", f"tiny={generator}", "--out", str(tmp_path / "out"),
                 "--data", "phantom", "--size", "32", "--num-phantom-slices", "64",
                 "--train-patients", "phantom-000", "phantom-001", "--test-patients", "phantom-001", *QUIET])
    assert code == 2
    error = capsys.readouterr().err
    assert "test patients overlap the train patients: ['phantom-001']" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--counts", "0", "-4"], "synthetic counts N must be >= 0, got [-4]"),
        (["--counts", "0", "4", "4"], "synthetic counts N are repeated"),
        (["--num-seeds", "0"], "--num-seeds must be >= 1"),
        (["--size", "64"], "makes images of shape (1, 32, 32) (C, H, W) but the real slices are (1, 64, 64)"),
        (["--unet-channels", "4", "8", "8", "8", "8", "8", "8"],
         "a U-Net with 7 levels shrinks --size 32 slices below 2x2"),
    ],
)
def test_bad_grid_arguments_get_clear_errors(tmp_path, capsys, arguments, message):
    generator = save_tiny_generator(tmp_path / "generator")
    assert augmentation(generator, tmp_path / "out", *arguments) == 2
    assert message in capsys.readouterr().err


def test_an_empty_count_list_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: --counts needs at least one value
        main(["augmentation", "--counts", "--out", str(tmp_path), *PHANTOM_DATA])
    assert exit_info.value.code == 2
    assert "--counts: expected at least one argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ("tiny=/nonexistent/folder", "generator tiny: /nonexistent/folder does not exist"),
        ("no-equals-sign", "expected NAME=PATH"),
        ("real-only=.", "generator name 'real-only'"),
        ("real-only-equal-updates=.", "(and not 'real-only' or 'real-only-equal-updates')"),
    ],
)
def test_bad_generators_get_clear_errors(tmp_path, capsys, generator, message):
    code = main(["augmentation", "--generator", generator, "--out", str(tmp_path / "out"), *PHANTOM_DATA, *QUIET])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_grid_split_by_seeds_over_invocations_gives_the_whole_grids_summary(finished_run, tmp_path, capsys):
    """--seeds lets processes share a folder, one seed each; the whole grid's invocation then trains nothing."""
    generator, finished = finished_run
    for seed in ("1", "0"):
        assert main(["augmentation", "--generator", f"tiny={generator}", "--out", str(tmp_path / "out"), "--counts",
                     "0", "4", "--seeds", seed, *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING, *QUIET]) == 0
        assert json.loads((tmp_path / "out" / "augmentation.json").read_text())["seeds"] == [int(seed)]
    capsys.readouterr()
    assert augmentation(generator, tmp_path / "out") == 0
    assert "0 U-Net runs trained, 4 already finished (skipped)" in capsys.readouterr().out
    # Seeds are seeds: run s of the split grid is run s of the whole one.
    summary, reference = (json.loads((folder / "augmentation.json").read_text())
                          for folder in (tmp_path / "out", finished))
    for timing in (summary, reference):
        timing.pop("total_train_seconds")
    assert summary == reference


@pytest.mark.parametrize(("seeds", "message"), [(["-1"], "--seeds must be >= 0, got [-1]"),
                                                (["2", "2"], "no repeated seed, got [2, 2]")])
def test_bad_seed_lists_get_clear_errors(tmp_path, capsys, seeds, message):
    generator = save_tiny_generator(tmp_path / "generator")
    assert main(["augmentation", "--generator", f"tiny={generator}", "--out", str(tmp_path / "out"), "--counts", "4",
                 "--seeds", *seeds, *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING, *QUIET]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_num_seeds_and_seeds_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        augmentation(tmp_path, tmp_path / "out", "--seeds", "0")
    assert exit_status.value.code == 2
    assert "not allowed with argument --num-seeds" in capsys.readouterr().err


def test_equal_update_control_trains_real_only_runs_for_the_updates_of_n_pairs(tmp_path, capsys, monkeypatch):
    import hvae_pipeline.evaluation.augmentation as augmentation_module

    trainings = []  # (description, number of slices, epochs) of every U-Net trained
    real_train_segmenter = augmentation_module.train_segmenter

    def recording_train_segmenter(images, masks, settings, *args, description, **kwargs):
        trainings.append((description, len(images), settings.epochs))
        return real_train_segmenter(images, masks, settings, *args, description=description, **kwargs)

    monkeypatch.setattr(augmentation_module, "train_segmenter", recording_train_segmenter)
    generator = save_tiny_generator(tmp_path / "generator")
    out = tmp_path / "out"
    # 32 real slices, batch 8: 4 updates an epoch; with N = 32 pairs 8 an epoch, so 1 epoch of 64 slices = 2 of 32.
    assert main(["augmentation", "--generator", f"tiny={generator}", "--out", str(out), "--counts", "0", "32",
                 "--num-seeds", "1", "--equal-update-control", "32", *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING,
                 *QUIET]) == 0
    assert trainings == [("U-Net real-only N=0 seed=0", 32, 1), ("U-Net real-only-equal-updates N=32 seed=0", 32, 2),
                         ("U-Net tiny N=32 seed=0", 64, 1)]
    record = json.loads((out / "runs" / "augmentation__real-only-equal-updates__n32__seed0.json").read_text())
    assert record["num_synthetic"] == 0 and record["equal_updates_as_num_synthetic"] == 32 and record["epochs"] == 2
    assert record["settings"]["unet"]["epochs"] == 2 and "sampling" not in record["settings"]

    summary = json.loads((out / "augmentation.json").read_text())
    assert summary["equal_update_control"]["32"]["epochs"] == 2
    assert summary["equal_update_control"]["32"]["mean"] == pytest.approx(record["dice_mean"])
    assert set(summary["dice"]) == {"tiny"}  # the control is not a generator
    table = (out / "augmentation.md").read_text()
    assert "## Equal-update control" in table
    assert f"| real-only, equal updates | {100 * record['dice_mean']:.1f} |" in table
    # A process given only N > 0 leaves the control to the one given N = 0; the whole grid then finds it finished.
    assert main(["augmentation", "--generator", f"tiny={generator}", "--out", str(out), "--counts", "32",
                 "--num-seeds", "1", "--equal-update-control", "32", *PHANTOM_DATA, *TINY_UNET, *TINY_SAMPLING,
                 *QUIET]) == 0
    assert "equal_update_control" not in json.loads((out / "augmentation.json").read_text())
    assert len(trainings) == 3


@pytest.mark.parametrize(("counts", "message"), [(["0"], "must be distinct and > 0, got [0]"),
                                                 (["4", "4"], "must be distinct and > 0, got [4, 4]")])
def test_bad_equal_update_counts_get_clear_errors(tmp_path, capsys, counts, message):
    generator = save_tiny_generator(tmp_path / "generator")
    assert augmentation(generator, tmp_path / "out", "--equal-update-control", *counts) == 2
    assert message in capsys.readouterr().err
