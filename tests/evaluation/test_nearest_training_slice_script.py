"""scripts/nearest_training_slice.py: the distance it computes and what it prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from hvae_pipeline import HVAEModel, HVAEPipeline

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nearest_training_slice.py"
spec = importlib.util.spec_from_file_location("nearest_training_slice", SCRIPT)
nearest_training_slice = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nearest_training_slice)


def test_nearest_distance_is_the_smallest_mean_squared_difference():
    training = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5)])
    images = torch.stack([torch.full((1, 2, 2), 0.9), torch.tensor([[[0.0, 0.0], [0.0, 0.4]]])])
    distances = nearest_training_slice.nearest_distances(images, training)
    assert torch.allclose(distances, torch.tensor([0.01, 0.04], dtype=torch.float64))
    assert torch.equal(nearest_training_slice.nearest_distances(training, training), torch.zeros(3, dtype=torch.float64))


def test_reports_references_and_samples(tmp_path, capsys):
    torch.manual_seed(0)
    model = HVAEModel(sample_size=32, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    HVAEPipeline(model).save_pretrained(tmp_path / "tiny")
    # Phantom data has no patient split: the "held-out" slices are the training slices, at distance exactly 0.
    arguments = [f"TINY={tmp_path / 'tiny'}", "--config", "phantom-tiny", "--num-samples", "4",
                 "--override", "data.val_patients=[phantom-000]"]
    assert nearest_training_slice.main(arguments) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert lines[0] == "held-out real slices: nearest-training-slice MSE q10 0.0000, median 0.0000, q90 0.0000"
    assert lines[1].startswith("TINY reconstructions of its training slices: nearest-training-slice MSE q10 ")
    assert lines[2].startswith("TINY samples (standard prior): nearest-training-slice MSE q10 ")
    with pytest.raises(SystemExit):
        nearest_training_slice.main([f"TINY={tmp_path / 'tiny'}", "--config", "phantom-tiny", "--prior", "fitted"])
    assert "no fitted latent prior" in capsys.readouterr().err
