"""Issue 26 case 11 and issue 27 item 9: a batch larger than the training set is one line naming
training.batch_size and the number of slices (before the data load where the count is known: phantoms), and a run
that ends inside the VAE warm-up says, in one warning line, that it trains a plain VAE."""

from __future__ import annotations

from reliability_helpers import TINY_TRAINING, run_cli, untouched

from hvae_pipeline.data.phantom import write_phantom_tree
from hvae_pipeline.training import train_hvae


def test_a_batch_larger_than_the_phantom_set_is_refused_before_the_data_load(tmp_path, capsys):
    with untouched(tmp_path):
        code, err = run_cli(train_hvae.main, [*TINY_TRAINING, f"training.output_dir={tmp_path / 'run'}",
                                              "training.batch_size=64"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("training.batch_size=64 exceeds the 48 phantom slices (data.num_phantom_slices): set training.batch_size "
            "to at most 48") in err
    assert "Training on" not in capsys.readouterr().out


def test_a_batch_larger_than_a_small_folder_is_one_line_after_the_load(tmp_path, capsys):
    folder = tmp_path / "lgg"
    write_phantom_tree(folder, "lgg", num_cases=1)  # 6 slices of 64 x 64
    pairs = ["data.kind=pairs", f"data.root={folder}", 'data.image_glob="{case}/{case}_{n}.tif"',
             'data.mask_glob="{case}/{case}_{n}_mask.tif"', "data.channels=[1]", "data.size=16"]
    with untouched(tmp_path):
        code, err = run_cli(train_hvae.main, [*TINY_TRAINING, *pairs, f"training.output_dir={tmp_path / 'run'}",
                                              "training.batch_size=16"], capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error: training.batch_size=16 exceeds the " in last and " training slices: set training.batch_size" in last


def test_max_steps_inside_the_vae_warmup_is_one_warning_line(tmp_path, capsys):
    code = train_hvae.main([*TINY_TRAINING, f"training.output_dir={tmp_path / 'run'}", "training.max_steps=2",
                            "training.vae_warmup_steps=950"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert code == 0 and warnings == [
        "warning: training.max_steps=2 ends inside the VAE warm-up (training.vae_warmup_steps=950): the flow stays "
        "off, so this run trains a plain VAE (a warm start; raise training.max_steps to train the flow)"]
