"""``hvae-evaluate scarcity`` end to end on a tiny folder of SYNTHETIC phantom pairs: generators trained by the trainer
CLI in subprocesses on K patients, U-Nets with and without classic augmentation, records, resume and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from evaluation_helpers import QUIET, TINY_SIZE

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.cli.evaluate import main
from hvae_pipeline.data import make_phantom_slices
from hvae_pipeline.evaluation.scarcity import Lock, RECIPES, stage_steps
from hvae_pipeline.evaluation.splits import load_split

pytest.importorskip("monai", reason="the downstream U-Net needs the eval extra (MONAI)")

# Two-level networks: each trainer stage is a few steps of a tiny HVAE, each U-Net one update per run.
TINY_GENERATOR = ["model.sample_size=32", "model.block_out_channels=[8,16]", "model.layers_per_block=1",
                  "model.attention_levels=[false,true]", "model.num_attention_heads=2", "model.attention_head_dim=4",
                  "model.norm_num_groups=4", "training.batch_size=8", "training.max_steps=2",
                  "training.checkpointing_steps=1", "training.lr_warmup_steps=0"]
TINY_STUDY = ["--unet-channels", "4", "8", "--unet-res-units", "1", "--updates", "2", "--batch-size", "8",
              "--sampling-min-tumour-area", "0", "--counts", "8", "--num-seeds", "2", "--num-draws", "1",
              "--ks", "1", "2"]


def write_phantom_pairs(root: Path) -> None:
    """32 x 32 SYNTHETIC phantom slices as PNG image/mask pairs, 16 per patient ``phantom-000`` .. ``phantom-003``."""
    slices = make_phantom_slices(64, size=TINY_SIZE, seed=0).with_format("numpy")
    for index, (image, mask, patient) in enumerate(zip(slices["image"], slices["mask"], slices["patient_id"])):
        folder = root / patient
        folder.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(folder / f"{patient}_{index}.png")
        PIL.Image.fromarray((mask > 0).astype(np.uint8) * 255).save(folder / f"{patient}_{index}_mask.png")


def scarcity(root: Path, split: Path, out: Path, *extra: str) -> int:
    overrides = [f"--generator-override={item}" for item in TINY_GENERATOR]
    return main(["scarcity", "--data", "pairs", "--root", str(root), "--image-glob", "{case}/{case}_{index}.png",
                 "--mask-glob", "{case}/{case}_{index}_mask.png", "--size", str(TINY_SIZE), "--split", str(split),
                 "--out", str(out), *TINY_STUDY, *overrides, *QUIET, *extra])


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished tiny study: (data folder, split file, output folder)."""
    root = tmp_path_factory.mktemp("scarcity")
    write_phantom_pairs(root / "data")
    split = root / "split.json"
    split.write_text(json.dumps({"pool": ["phantom-000", "phantom-001", "phantom-002"], "test": ["phantom-003"],
                                 "how": "test fixture", "draws": {"1": [["phantom-001"]],
                                                                  "2": [["phantom-000", "phantom-002"]]}}))
    # The VAE (one trainer stage) at K = 1 and 2, then the HVAE's three chained stages at K = 1 in the same folder:
    # records of the first grid stay valid for the second (the trainer subprocesses are what costs time here).
    assert scarcity(root / "data", split, root / "out", "--generators", "vae") == 0
    assert scarcity(root / "data", split, root / "out", "--generators", "hvae", "vae", "--ks", "1") == 0
    return root / "data", split, root / "out"


def test_trains_each_generator_on_its_draw_only_through_the_recipe_stages(finished_study):
    _, _, out = finished_study
    for kind, k, patients in (("vae", 1, ["phantom-001"]), ("vae", 2, ["phantom-000", "phantom-002"]),
                              ("hvae", 1, ["phantom-001"])):
        folder = out / "generators" / f"{kind}-k{k}-draw0"
        for stage in RECIPES[kind]:
            marker = json.loads((folder / f"{stage.name}.done.json").read_text())
            assert marker["patients"] == patients and marker["steps"] == 2  # TINY_GENERATOR's max_steps wins
            assert f"training.max_steps={stage_steps(stage, k)}" in marker["overrides"]
            assert (folder / stage.name / "pipeline" / "model_index.json").is_file()
            config = (folder / stage.name / "config.yaml").read_text()
            assert all(patient in config for patient in patients) and "phantom-003" not in config
        # Only the last stage's pipeline samples: it carries the prior fitted to its draw's slices (16 per patient),
        # without which a generator of one patient's slices decodes empty masks from N(0, I).
        pipelines = [HVAEPipeline.from_pretrained(folder / stage.name / "pipeline") for stage in RECIPES[kind]]
        assert [pipeline.latent_prior is not None for pipeline in pipelines] == [False] * (len(pipelines) - 1) + [True]
        assert pipelines[-1].latent_prior.config.num_slices == 16 * k
    assert not list((out / "locks").glob("*.lock"))


def test_records_every_arm_and_reports_paired_gains(finished_study):
    _, _, out = finished_study
    records = sorted(path.name for path in (out / "runs").glob("*.json"))
    arms = ["real-only", "real-only+classic", "hvae-n8+classic", "vae-n8+classic"]
    assert records == sorted(f"scarcity__k{k}__draw0__{arm}__seed{s}.json" for k in (1, 2) for arm in arms
                             for s in (0, 1) if (k, arm) != (2, "hvae-n8+classic"))
    record = json.loads((out / "runs" / "scarcity__k2__draw0__vae-n8+classic__seed1.json").read_text())
    assert record["num_real_train_slices"] == 32 and record["num_synthetic"] == 8 and record["num_test_slices"] == 16
    assert record["settings"]["unet"]["augment"] == "classic"
    plain = json.loads((out / "runs" / "scarcity__k1__draw0__real-only__seed0.json").read_text())
    assert "augment" not in plain["settings"]["unet"] and plain["num_real_train_slices"] == 16

    summary = json.loads((out / "scarcity.json").read_text())
    dice = {arm: [json.loads((out / "runs" / f"scarcity__k1__draw0__{arm}__seed{s}.json").read_text())["dice_mean"]
                  for s in (0, 1)] for arm in arms}
    gain = summary["results"]["1"]["gain"]["hvae-n8+classic"]
    assert gain["mean"] == pytest.approx(np.mean(np.subtract(dice["hvae-n8+classic"], dice["real-only+classic"])))
    assert summary["results"]["1"]["gain"]["classic"]["mean"] == pytest.approx(
        np.mean(np.subtract(dice["real-only+classic"], dice["real-only"])))
    assert gain["low"] <= gain["mean"] <= gain["high"]
    versus = summary["results"]["1"]["head_to_head"]["hvae-n8+classic - vae-n8+classic"]
    assert versus["mean"] == pytest.approx(np.mean(np.subtract(dice["hvae-n8+classic"], dice["vae-n8+classic"])))
    assert versus["num_seeds"] == 2
    draw = summary["results"]["1"]["draws"][0]
    assert draw["patients"] == ["phantom-001"]
    assert draw["dice"]["hvae-n8+classic"] == {"0": dice["hvae-n8+classic"][0], "1": dice["hvae-n8+classic"][1]}
    table = (out / "scarcity.md").read_text()
    assert "| K | draws x seeds | real-only | real-only+classic | hvae-n8+classic | vae-n8+classic |" in table
    assert "| K | hvae-n8+classic - vae-n8+classic |" in table
    seeds = " / ".join(f"{100 * value:.1f}" for value in dice["real-only"])
    assert f"| 1 | 0: phantom-001 | {seeds} |" in table  # each run's DSC, by draw
    assert (out / "scarcity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_trains_nothing(finished_study, capsys):
    root, split, out = finished_study
    before = {path: path.stat().st_mtime_ns for path in (out / "runs").glob("*.json")}
    assert scarcity(root, split, out, "--generators", "hvae", "vae", "--ks", "1") == 0
    assert "0 generators and 0 U-Net runs trained now" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in (out / "runs").glob("*.json")} == before


def test_report_only_summarises_a_study_in_progress_and_trains_nothing(finished_study, tmp_path, capsys):
    root, split, finished = finished_study
    out = tmp_path / "out"
    shutil.copytree(finished, out)  # the fixture's reports stay as the other tests expect them
    # The grid asks for the HVAE at K = 2 too, which the fixture never trained.
    assert scarcity(root, split, out, "--generators", "hvae", "vae", "--report-only") == 0
    assert "0 generators and 0 U-Net runs trained now" in capsys.readouterr().out
    assert not (out / "generators" / "hvae-k2-draw0").exists()
    summary = json.loads((out / "scarcity.json").read_text())
    assert summary["complete"] is False
    missing = summary["results"]["2"]["gain"]["hvae-n8+classic"]
    assert missing["mean"] is None and missing["num_seeds"] == 0
    assert summary["results"]["2"]["gain"]["vae-n8+classic"]["num_seeds"] == 2  # finished cells are summarised
    table = (out / "scarcity.md").read_text()
    assert "Partial report" in table and "– (0/2 runs)" in table
    assert summary["results"]["2"]["draws"][0]["dice"]["hvae-n8+classic"] == {"0": None, "1": None}
    assert "| 2 | 0: phantom-000, phantom-002 |" in table and "| – / – |" in table
    assert (out / "scarcity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra", [["--generator-override=training.learning_rate=0.01"],
                                   ["--generator-step-scale", "0.5"]])
def test_other_generator_settings_in_the_same_folder_are_refused(finished_study, capsys, extra):
    root, split, out = finished_study
    assert scarcity(root, split, out, *extra) == 2
    assert "other settings" in capsys.readouterr().err


def test_the_step_scale_multiplies_every_stage_and_keeps_at_least_one_step():
    warmup, flow, hvae = RECIPES["hvae"]
    assert [stage_steps(stage, 2) for stage in (warmup, flow, hvae)] == [200, 10, 10]
    assert [stage_steps(stage, 2, 0.5) for stage in (warmup, flow, hvae)] == [100, 5, 5]
    assert [stage_steps(stage, 10, 1.5) for stage in (warmup, flow, hvae)] == [1500, 15, 68]  # round(67.5): even
    assert stage_steps(flow, 1, 1e-3) == 1


@pytest.mark.parametrize("scale", ["0", "-1", "nan"])
def test_a_step_scale_that_is_not_positive_is_refused_by_name(finished_study, capsys, scale):
    root, split, out = finished_study
    assert scarcity(root, split, out, "--generator-step-scale", scale) == 2
    assert f"--generator-step-scale must be a finite number > 0, got {float(scale)}" in capsys.readouterr().err


def test_the_report_names_the_trainer_overrides_of_its_generators(finished_study):
    _, _, out = finished_study
    assert json.loads((out / "scarcity.json").read_text())["generator_overrides"] == TINY_GENERATOR
    assert f"with trainer overrides {', '.join(TINY_GENERATOR)}" in (out / "scarcity.md").read_text()


def test_a_lock_held_by_a_live_process_is_respected_and_a_dead_ones_taken_over(tmp_path):
    first, second = Lock(tmp_path, "run"), Lock(tmp_path, "run")
    assert first.acquire()
    assert not Lock(tmp_path, "run").acquire()  # held by a live process (this one)
    first.release()
    host = __import__("socket").gethostname()
    (tmp_path / "run.lock").write_text(f"{host} 999999999")  # no such process
    assert second.acquire()
    assert (tmp_path / "run.lock").read_text().split()[1] != "999999999"


def test_the_packaged_splits_keep_test_patients_out_of_every_draw():
    for name in ("brats-msd-flair", "lgg-flair-2d"):
        split = load_split(name)
        assert set(split.pool).isdisjoint(split.test) and sorted(split.draws) == [1, 2, 4, 10]
        for k, draws in split.draws.items():
            assert len(draws) == (1 if k == len(split.pool) else 3) and len(set(draws)) == len(draws)
            assert all(len(draw) == k and set(draw) <= set(split.pool) for draw in draws)
    assert len(load_split("lgg-flair-2d").test) == 20 and len(load_split("brats-msd-flair").test) == 6


def test_a_draw_with_fewer_slices_than_a_batch_trains_on_all_of_them_at_once(tmp_path):
    from hvae_pipeline.evaluation.real_data import RealDataSpec
    from hvae_pipeline.evaluation.scarcity import RECIPE_BATCH_SIZE, GeneratorTrainer, ScarcitySettings

    spec = RealDataSpec(kind="pairs", root="data", image_glob="{case}/{case}_{n}.tif",
                        mask_glob="{case}/{case}_{n}_mask.tif", channels=(1,), train_patients=("a",),
                        test_patients=("b",))
    trainer = GeneratorTrainer(tmp_path, spec, ScarcitySettings(num_threads=1))
    stage = RECIPES["vae"][0]
    small = trainer.stage_overrides("vae", 1, 0, ("a",), stage, num_slices=13)
    assert "training.batch_size=13" in small and 'data.patients=["a"]' in small and "data.channels=[1]" in small
    assert 'data.image_glob="{case}/{case}_{n}.tif"' in small and "training.num_threads=1" in small
    assert not any(item.startswith("training.batch_size=") for item in
                   trainer.stage_overrides("vae", 1, 0, ("a",), stage, num_slices=RECIPE_BATCH_SIZE))
