"""Fixture of the reliability catalogue: a tiny saved pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_helpers import TINY_CONFIG

from hvae_pipeline import HVAEModel, HVAEPipeline


@pytest.fixture(scope="session")
def tiny_pipeline_folder(tmp_path_factory) -> Path:
    """A saved pipeline with the tiny test network (16 x 16 slices); tests must not modify it."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "pipeline"
    HVAEPipeline(HVAEModel(**TINY_CONFIG)).save_pretrained(folder)
    return folder
