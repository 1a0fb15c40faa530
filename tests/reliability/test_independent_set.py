"""A second, independent set of bad inputs (issue 16's "Done when"), of the kinds the other files cover but not the
same cases: each fixed failure, and a sample of the inputs that already ended well, across hvae-generate,
hvae-data prepare, hvae-evaluate, training/train_hvae.py and the Python API. Each case asserts the exit code or
exception type, the message, and that nothing was left behind or removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch
from reliability_helpers import run_cli, untouched

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.pipeline import SamplingBudgetExceeded
from hvae_pipeline.cli import data as data_cli
from hvae_pipeline.cli import evaluate, generate
from hvae_pipeline.data import DataFormatError, load_pair_slices, write_phantom_tree
from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.config import DEFAULTS
from hvae_pipeline.training.config_rules import DATA_RULES


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_folder: Path) -> HVAEPipeline:
    loaded = HVAEPipeline.from_pretrained(str(tiny_pipeline_folder))
    loaded.set_progress_bar_config(disable=True)
    return loaded


def one_error_line(err: str, message: str) -> bool:
    """Whether the last line of ``err`` (progress bars come before it) carries ``message``, with no traceback."""
    return "Traceback" not in err and message in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------ hvae-generate
@pytest.mark.parametrize("arguments, message", [
    (["--seed", "-1"], "--seed must be in [0, 9223372036854775807] (2**63 - 1), got -1"),  # was: exit 0, seed wrapped
    (["--seed", str(2**64)], f"--seed must be in [0, 9223372036854775807] (2**63 - 1), got {2**64}"),  # was: exit 1
    (["--min-tumour-area", "257"], "min_tumour_area=257 px: a 16x16 mask has 256 px; pass a smaller"),  # was: exit 1
    (["--batch-size", "2.5"], "argument --batch-size: invalid int value: '2.5'"),
    (["--format", "tiff"], "argument --format: invalid choice: 'tiff'"),
])
def test_generate_bad_options(tiny_pipeline_folder, tmp_path, capsys, arguments, message):
    with untouched(tmp_path):
        code, err = run_cli(generate.main, ["--model", str(tiny_pipeline_folder), "--out", str(tmp_path / "out"),
                                            *arguments], capsys)
    assert code == 2 and one_error_line(err, message)


def broken_copy(folder: Path, destination: Path, defect: str) -> Path:
    """A copy of the saved pipeline ``folder`` with one defect."""
    shutil.copytree(folder, destination)
    if defect == "empty config.json":
        (destination / "model" / "config.json").write_text("")
    elif defect == "unknown class":
        index = json.loads((destination / "model_index.json").read_text())
        index["model"] = ["hvae_pipeline", "NoSuchModel"]
        (destination / "model_index.json").write_text(json.dumps(index))
    else:  # zero-byte weights, as by a full disk
        (destination / "model" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return destination


@pytest.mark.parametrize("defect, message", [
    ("empty config.json", "model/config.json' is not a valid JSON file"),
    ("unknown class", "`hvae_pipeline` has no class `NoSuchModel`"),
    ("zero-byte weights", "Unable to load weights from checkpoint file"),
])
def test_generate_broken_model_folder(tiny_pipeline_folder, tmp_path, capsys, defect, message):
    model = broken_copy(tiny_pipeline_folder, tmp_path / "model", defect)
    with untouched(tmp_path):
        code, err = run_cli(generate.main, ["--model", str(model), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_error_line(err, f"could not load a pipeline from the folder '{model}'")
    assert message in err


def test_generate_refuses_a_link_to_a_folder_of_user_files_and_the_model_folder(tiny_pipeline_folder, tmp_path,
                                                                                capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    with untouched(tmp_path), untouched(tiny_pipeline_folder):
        code, err = run_cli(generate.main, ["--model", str(tiny_pipeline_folder), "--out", str(tmp_path / "link"),
                                            "--overwrite"], capsys)
        assert code == 2 and one_error_line(err, "link: exists and is not a folder (a file or a link)")
        code, err = run_cli(generate.main, ["--model", str(tiny_pipeline_folder), "--out",
                                            str(tiny_pipeline_folder / "model"), "--overwrite"], capsys)
        assert code == 2 and one_error_line(err, "holds files this tool did not write (config.json, ")


# ------------------------------------------------------------------------------------------------ hvae-data prepare
@pytest.fixture
def brats(tmp_path: Path) -> Path:
    write_phantom_tree(tmp_path / "brats", "brats2021", num_cases=1)
    return tmp_path / "brats"


def spoil(path: Path, defect: str) -> None:
    """Give the NIfTI file ``path`` one defect."""
    image = nib.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if defect == "truncated":
        path.write_bytes(path.read_bytes()[:200])
        return
    edited = {"2D": lambda: data[:, :, 5], "shape": lambda: data[:-4], "NaN": lambda: np.where(
        np.indices(data.shape).sum(0) == 9, np.nan, data)}[defect]()
    nib.save(nib.Nifti1Image(edited, image.affine), path)


@pytest.mark.parametrize("file, defect, message", [
    ("flair", "truncated", "flair.nii.gz: not a readable NIfTI volume (EOFError"),
    ("flair", "2D", "flair.nii.gz: expected a 3D volume, got shape (40, 48)"),
    ("seg", "shape", "seg.nii.gz: shape (36, 48, 36) does not match BraTS2021_00001_flair.nii.gz shape (40, 48, 36)"),
    ("flair", "NaN", "flair.nii.gz: "),
])
def test_prepare_corrupt_volume(brats, tmp_path, capsys, file, defect, message):
    spoil(brats / "BraTS2021_00001" / f"BraTS2021_00001_{file}.nii.gz", defect)
    with untouched(tmp_path):
        code, err = run_cli(data_cli.main, ["prepare", "brats", str(brats), "--size", "8", "--depth", "8", "--out",
                                            str(tmp_path / "out")], capsys)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("arguments, message", [
    (["--size", "-16"], "size and depth must be >= 1, got size=-16"),
    (["--num-proc", "0"], "num_proc must be >= 1, got 0"),
    (["--label-convention", "bogus"], "argument --label-convention: invalid choice: 'bogus' (choose from 'auto'"),
    (["--patients", "NOPE_001"], "patients ['NOPE_001'] not found (1 cases available)"),
])
def test_prepare_bad_options(brats, tmp_path, capsys, arguments, message):
    with untouched(tmp_path):
        code, err = run_cli(data_cli.main, ["prepare", "brats", str(brats), "--size", "8", "--depth", "8",
                                            "--out", str(tmp_path / "out"), *arguments], capsys)
    assert code == 2 and one_error_line(err, message)


def test_prepare_refuses_a_cache_dir_that_is_a_file_before_loading(brats, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_cli, "_load", lambda args: pytest.fail("loaded the data although --cache-dir is a file"))
    (tmp_path / "cache").write_text("precious")
    with untouched(tmp_path):  # was: the whole preparation, then "output folder .../cache/<hash>: cannot write"
        code, err = run_cli(data_cli.main, ["prepare", "brats", str(brats), "--out", str(tmp_path / "out"),
                                            "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 2 and one_error_line(err, f"--cache-dir {tmp_path / 'cache'}: exists and is not a folder")


def test_prepare_into_the_data_folder_keeps_the_data_and_refuses_replacing_it(brats, capsys):
    patient = brats / "BraTS2021_00001"
    before = sorted(p.name for p in patient.iterdir())
    argv = ["prepare", "brats", str(brats), "--size", "8", "--depth", "8", "--out"]
    assert data_cli.main([*argv, str(brats / "prepared")]) == 0
    assert data_cli.main([*argv, str(brats / "again")]) == 0  # the first output is not taken for a patient
    code, err = run_cli(data_cli.main, [*argv, str(brats), "--overwrite"], capsys)
    assert code == 2 and "holds files this tool did not write (BraTS2021_00001/, again/, prepared/)" in err
    assert sorted(p.name for p in patient.iterdir()) == before


def pair_folder(root: Path, mask: np.ndarray) -> Path:
    """Two 20 x 20 grey pictures with the same mask picture ``mask``."""
    root.mkdir()
    for index in range(2):
        PIL.Image.fromarray((np.random.default_rng(index).random((20, 20)) * 255).astype(np.uint8)).save(
            root / f"c{index}.png")
        PIL.Image.fromarray(mask).save(root / f"c{index}_mask.png")
    return root


def square(value: int, colours: tuple[int, ...] = ()) -> np.ndarray:
    """A 7 x 8 tumour of ``value`` in a 20 x 20 mask, in the channels ``colours`` of an RGB picture if given."""
    plane = np.zeros((20, 20), np.uint8)
    plane[5:12, 6:14] = value
    if not colours:
        return plane
    picture = np.zeros((20, 20, 3), np.uint8)
    picture[..., list(colours)] = plane[..., None]
    return picture


@pytest.mark.parametrize("mask", [square(1), square(255), square(255, (0, 1, 2))], ids=["0-1", "0-255", "grey-RGB"])
def test_pair_masks_in_any_grey_encoding_give_the_same_tumour(tmp_path, mask):
    data = load_pair_slices(pair_folder(tmp_path / "pairs", mask), "{case}.png", "{case}_mask.png", size=16,
                            cache_dir=False)
    assert list(data["tumour_area"]) == [36, 36]


@pytest.mark.parametrize("colours", [(1,), (0,)], ids=["green", "red"])
def test_colour_mask_is_refused_not_read_from_its_red_channel(tmp_path, colours):
    root = pair_folder(tmp_path / "pairs", square(255, colours))
    with untouched(tmp_path), pytest.raises(DataFormatError, match="c0_mask.png: a colour mask whose red, green and "
                                                                   "blue channels differ; save the mask as one grey"):
        load_pair_slices(root, "{case}.png", "{case}_mask.png", size=16, cache_dir=False, min_tumour_area=0)
    # A green tumour used to vanish: tumour_area 0 on every slice, exit 0.


# ------------------------------------------------------------------------------------------------ hvae-evaluate
PHANTOM = ["--data", "phantom", "--size", "16", "--num-phantom-slices", "32", "--test-patients", "phantom-001",
           "--no-progress", "--num-threads", "1"]
AUGMENTATION = ["augmentation", "--train-patients", "phantom-000", "--unet-channels", "4", "8"]


@pytest.mark.parametrize("arguments, message", [
    ([*AUGMENTATION, "--device", "meta"], "--device meta: the meta device holds no values; pass cpu or cuda"),
    ([*AUGMENTATION, "--device", "tpu7"], "--device tpu7: not a torch device; pass cpu or cuda"),
    (["augmentation", "--train-patients", "phantom-000"],  # was: an instance-norm error after loading the data
     "--unet-channels: a U-Net with 5 levels shrinks --size 16 slices below 2x2"),
    ([*AUGMENTATION, "--counts", "-5"], "synthetic counts N must be >= 0, got [-5]"),
    (["image-quality", "--no-tstr", "--sampling-device", "meta"], "--sampling-device meta: the meta device holds no values"),
    (["image-quality", "--no-tstr", "--diversity-pairs", "-1"], "diversity_pairs >= 1"),
    (["likelihood", "--num-importance-samples", "0"], "num_importance_samples must be >= 1, got 0"),
    (["likelihood", "--generator", "no-equals-sign"], "generator 'no-equals-sign': expected NAME=PATH"),
])
def test_evaluate_bad_options(tmp_path, capsys, arguments, message):
    command, *rest = arguments
    with untouched(tmp_path):
        code, err = run_cli(evaluate.main, [command, "--out", str(tmp_path / "out"), *PHANTOM, *rest], capsys)
    assert code == 2 and one_error_line(err, message)
    assert "Real data" not in capsys.readouterr().out


def test_evaluate_refuses_an_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text("precious")
    with untouched(tmp_path):  # was: "[Errno 20] Not a directory: '.../results.json/runs'", after loading the data
        code, err = run_cli(evaluate.main, ["likelihood", "--out", str(out), *PHANTOM], capsys)
    assert code == 2 and one_error_line(err, f"--out {out}: exists and is not a folder; pass a folder")


# ------------------------------------------------------------------------------------------------ training
TINY = ["--config", "phantom-tiny", "model.sample_size=16", "data.size=16", "data.num_phantom_slices=48",
        "training.batch_size=8", "training.num_threads=1"]


@pytest.mark.parametrize("override, message", [  # each was a traceback, most after the data were loaded
    ("data.kind=bogus", "data.kind='bogus': expected 'brats', 'hecktor', 'pairs', 'phantom' or 'disk'"),
    ("data.size=abc", "data.size='abc': expected an integer >= 8"),
    ("data.num_phantom_slices=0", "data.num_phantom_slices=0: expected an integer >= 1"),
    ("data.kind=brats", "data.root=None: data.kind='brats' reads a folder; set data.root"),
    ("data.size=32", "model.sample_size=16 differs from data.size=32"),
    ("model.block_out_channels=[8]", "model: `attention_levels` (2 entries) must have one entry per level"),
    ("model.no_such_argument=1", "model: HVAEModel.__init__() got an unexpected keyword argument 'no_such_argument'"),
    ("training.learnig_rate=1e-3", "unknown key training.learnig_rate"),
])
def test_bad_data_and_model_overrides_are_one_line_before_the_data(tmp_path, capsys, override, message):
    with untouched(tmp_path):
        code, err = run_cli(train_hvae.main, [*TINY, f"training.output_dir={tmp_path / 'run'}", override], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert "Training on" not in capsys.readouterr().out


def test_output_dir_below_a_file_is_refused_before_the_data(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    with untouched(tmp_path):  # was: NotADirectoryError from the CSV log
        code, err = run_cli(train_hvae.main, [*TINY, f"training.output_dir={tmp_path / 'notes.txt' / 'run'}"], capsys)
    assert code == 2 and f"{tmp_path / 'notes.txt'} is a file, not a folder" in err


def test_stop_after_zero_steps_is_refused_and_overrides_may_follow_options(tmp_path, capsys):
    with untouched(tmp_path):  # was: one step trained and checkpointed (0 steps asked)
        code, err = run_cli(train_hvae.main, [*TINY, "--stop-after-steps", "0",
                                              f"training.output_dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and one_error_line(err, "--stop-after-steps must be >= 1, got 0")
    assert "unrecognized arguments" not in err  # overrides after an option used to be refused


def test_every_data_key_has_a_rule():
    assert set(DATA_RULES) == set(DEFAULTS["data"])


# ------------------------------------------------------------------------------------------------ Python API
@pytest.mark.parametrize("arguments, message", [
    (dict(num_samples=True), "`num_samples` must be an integer >= 1, got True"),  # was: one sample
    (dict(batch_size=2.5), "`batch_size` must be an integer >= 1, got 2.5"),  # was: a TypeError from torch.randn
    (dict(mask_threshold=None), "`mask_threshold` must be a number in (0, 1), got None"),  # was: TypeError
    (dict(max_draws=-1), "`max_draws` must be an integer >= num_samples=1 (or None), got -1"),
    (dict(generator=123), "`generator` must be a torch.Generator (or a list of them), got int"),  # was AttributeError
    (dict(output_type="numpy"), "`output_type` must be one of ('pil', 'np', 'pt'), got 'numpy'"),
])
def test_api_sampling_arguments(pipeline, arguments, message):
    with pytest.raises(ValueError) as error:
        pipeline(**{"num_samples": 1, "output_type": "np", **arguments})
    assert message in str(error.value)


def test_api_min_tumour_area_beyond_the_mask_fails_before_drawing(pipeline, monkeypatch):
    monkeypatch.setattr(HVAEPipeline, "prior_latents", lambda *args: pytest.fail("drew latents"))  # was: 1000 draws
    with pytest.raises(SamplingBudgetExceeded, match="a 16x16 mask has 256 px; pass a smaller min_tumour_area"):
        pipeline(num_samples=1, min_tumour_area=16 * 16 + 1, output_type="np")


def test_api_negative_seed_generator_is_reproducible(pipeline):
    draw = [pipeline(num_samples=1, generator=torch.Generator().manual_seed(-5), output_type="np").images
            for _ in range(2)]
    np.testing.assert_array_equal(*draw)


IMAGES = torch.rand(2, 1, 16, 16)


@pytest.mark.parametrize("images, masks, message", [
    (IMAGES, torch.zeros(2, 16, 16, dtype=torch.complex64), "got dtype torch.complex64"),  # was NotImplementedError
    (torch.rand(0, 1, 16, 16), torch.zeros(0, 16, 16, dtype=torch.long), "`images` is an empty batch"),  # RuntimeError
    (IMAGES, torch.full((2, 16, 16), 255, dtype=torch.uint8), "`masks` values must be in {0, 1}"),
    (IMAGES, torch.full((2, 16, 16), 0.5), "`masks` must hold integer values"),
])
def test_api_encode_refuses_bad_masks(pipeline, images, masks, message):
    with pytest.raises(ValueError) as error:
        pipeline.model.encode(images, masks)
    assert message in str(error.value)


@pytest.mark.parametrize("arguments, message", [
    (dict(imputation_steps=-1), "`imputation_steps` must be an integer >= 0, got -1"),  # was: silently 0 steps
    (dict(num_samples=2.5), "`num_samples` must be an integer >= 1, got 2.5"),  # was: TypeError in range()
])
def test_api_reconstruct_arguments(pipeline, arguments, message):
    with pytest.raises(ValueError) as error:
        pipeline.reconstruct(IMAGES, **arguments)
    assert message in str(error.value)
