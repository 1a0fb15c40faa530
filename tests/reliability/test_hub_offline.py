"""Issue 26, case 12: the Hub tests pass whatever the user's ``HF_*`` variables say, and a push with offline mode on
(``HF_HUB_OFFLINE=1``) says so at once, without trying the network, from Python and from training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants
from model_helpers import TINY_CONFIG
from reliability_helpers import TINY_TRAINING

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.hub.push import HubOfflineError
from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.publish import EXIT_PUSH_FAILED

REPOSITORY = Path(__file__).resolve().parents[2]
OFFLINE = "could not push to the Hub repository 'me/hvae': offline mode is on (HF_HUB_OFFLINE=1). Unset it to push."


@pytest.fixture
def offline(monkeypatch) -> None:
    """Offline mode as huggingface_hub sees it (its constant is read at import), and no network call allowed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*arguments, **keywords):
        raise AssertionError("a push in offline mode reached the Hub client")

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, no_network)


def test_a_python_push_in_offline_mode_says_so(offline):
    torch.manual_seed(0)
    with pytest.raises(HubOfflineError) as error:
        HVAEPipeline(HVAEModel(**TINY_CONFIG)).push_to_hub("me/hvae")
    assert str(error.value).startswith(OFFLINE)


def test_a_training_push_in_offline_mode_says_so_and_keeps_the_export(offline, tmp_path, capsys):
    run = tmp_path / "run"
    code = train_hvae.main([*TINY_TRAINING, "training.max_steps=2", f"training.output_dir={run}",
                            "--push-to-hub", "me/hvae"])
    assert code == EXIT_PUSH_FAILED and OFFLINE in capsys.readouterr().err
    assert (run / "pipeline" / "model" / "diffusion_pytorch_model.safetensors").is_file()


def test_the_hub_tests_pass_with_hf_hub_offline_and_a_stray_token_set():
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_not_a_real_token", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hub/test_hub.py"],
                            cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
