"""scripts/tumour_areas.py: the statistics it prints and its argument checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from hvae_pipeline import HVAEModel, HVAEPipeline

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "tumour_areas.py"
spec = importlib.util.spec_from_file_location("tumour_areas", SCRIPT)
tumour_areas = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tumour_areas)


def test_summary_of_known_areas():
    line = tumour_areas.summary("G", torch.tensor([10, 60, 250, 300, 500]), torch.tensor([1.0, 2.0, 3.0]))
    assert line == "G: median area 250 px, > 200 px 60.0 %, >= 50 px 80.0 %, median expected area 2 px"


def test_samples_a_saved_pipeline_and_refuses_bad_arguments(tmp_path, capsys):
    torch.manual_seed(0)
    model = HVAEModel(sample_size=16, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    HVAEPipeline(model).save_pretrained(tmp_path / "tiny")
    assert tumour_areas.main([f"TINY={tmp_path / 'tiny'}", "--num-samples", "8"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("TINY (standard prior): median area ") and line.endswith(" px")
    with pytest.raises(SystemExit):
        tumour_areas.main([f"TINY={tmp_path / 'tiny'}", "--prior", "fitted"])  # the pipeline has none
    assert "no fitted latent prior" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tumour_areas.main([str(tmp_path / "tiny")])  # no NAME=
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_real_config_adds_reconstructions_and_real_slices(tmp_path, capsys):
    torch.manual_seed(0)
    model = HVAEModel(sample_size=32, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    HVAEPipeline(model).save_pretrained(tmp_path / "tiny")
    assert tumour_areas.main([f"TINY={tmp_path / 'tiny'}", "--num-samples", "4", "--real-config", "phantom-tiny"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert lines[0].startswith("TINY (standard prior): median area ")
    assert lines[1].startswith("TINY reconstructions (posterior means of the real slices): median area ")
    assert lines[2].startswith("real (phantom-tiny): median area ") and "expected" not in lines[2]
