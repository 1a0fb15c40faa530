"""diffusers' generic loader returns HVAEPipeline in a fresh process; every saved layout keeps loading; the model
card's snippet is the one that works; a repository id offline fails clearly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.hub.bundled_checkpoint import BUNDLED_CHECKPOINT
from hvae_pipeline.hub.model_card import LOCAL_LOCATION, pipeline_model_card
from hvae_pipeline.hub.pipeline_files import GENERIC_LOADER_MODULE

# Loads FOLDER in a fresh interpreter, first without trust_remote_code (refused), then with it, and saves 3 samples.
GENERIC_LOAD = """
import sys
import numpy as np
import torch
if sys.argv[3] == "import-first":
    import hvae_pipeline
else:
    assert "hvae_pipeline" not in sys.modules
from diffusers import DiffusionPipeline
try:
    DiffusionPipeline.from_pretrained(sys.argv[1])
except ValueError as error:
    print("refused:", error)
pipeline = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
print("class:", type(pipeline).__module__, type(pipeline).__name__, type(pipeline.model).__name__)
pipeline.set_progress_bar_config(disable=True)
out = pipeline(num_samples=3, generator=torch.Generator().manual_seed(7), output_type="np")
np.save(sys.argv[2], out.images)
"""


def fresh_python(code: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter outside the checkout, offline, with its own Hugging Face cache and this
    process's thread count (CPU reductions split across another number of threads differ in the last bits)."""
    environment = {**os.environ, "HF_HOME": str(cwd / "hf-home"), "HF_HUB_OFFLINE": "1",
                   "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", code, *arguments], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def saved_pipeline(config: dict, folder: Path) -> HVAEPipeline:
    torch.manual_seed(0)
    pipeline = HVAEPipeline(HVAEModel(**config).eval())
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(folder)
    return pipeline


@pytest.mark.parametrize("first", ["import-first", "no-import"])
def test_diffusers_generic_loader_returns_the_pipeline_in_a_fresh_process(tiny_config, tmp_path, first):
    folder = tmp_path / "saved"
    pipeline = saved_pipeline(tiny_config, folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == [GENERIC_LOADER_MODULE, "HVAEPipeline"]
    assert (folder / f"{GENERIC_LOADER_MODULE}.py").is_file()
    result = fresh_python(GENERIC_LOAD, str(folder), str(tmp_path / "images.npy"), first, cwd=tmp_path)
    # Without trust_remote_code diffusers refuses to run the folder's pipeline.py, and says how to allow it.
    assert "refused:" in result.stdout and "trust_remote_code=True" in result.stdout
    assert "class: hvae_pipeline.pipeline HVAEPipeline HVAEModel" in result.stdout
    expected = pipeline(num_samples=3, generator=torch.Generator().manual_seed(7), output_type="np").images
    assert np.array_equal(np.load(tmp_path / "images.npy"), expected)


def test_hvae_pipeline_loads_every_layout_without_running_the_folders_code(tiny_config, tmp_path):
    folder = tmp_path / "saved"
    pipeline = saved_pipeline(tiny_config, folder)
    # The class named in model_index.json is this one: its pipeline.py is not needed, so it is never executed.
    (folder / f"{GENERIC_LOADER_MODULE}.py").write_text("raise RuntimeError('the folder code ran')\n")
    reloaded = HVAEPipeline.from_pretrained(folder)
    assert torch.equal(reloaded.model.decoder.conv_in.weight, pipeline.model.decoder.conv_in.weight)
    # The layout of earlier versions: the class by name only, no pipeline.py.
    (folder / f"{GENERIC_LOADER_MODULE}.py").unlink()
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "HVAEPipeline"}))
    legacy = HVAEPipeline.from_pretrained(folder)
    assert torch.equal(legacy.model.decoder.conv_in.weight, pipeline.model.decoder.conv_in.weight)
    # Re-saving upgrades it to the generic loader's layout; so does rewriting the index alone (as refitting the latent
    # prior does), which never names a pipeline.py it did not write.
    legacy.save_pretrained(tmp_path / "upgraded")
    legacy.save_config(folder)
    for saved in (tmp_path / "upgraded", folder):
        assert json.loads((saved / "model_index.json").read_text())["_class_name"] == ["pipeline", "HVAEPipeline"]
        assert (saved / f"{GENERIC_LOADER_MODULE}.py").is_file()


def card_snippet(card_text: str) -> str:
    """The card's Python usage snippet (its first ```python block)."""
    return re.search(r"```python\n(.*?)```", card_text, flags=re.S).group(1)


def test_the_bundled_model_cards_snippet_runs_in_a_fresh_process(tmp_path):
    snippet = card_snippet((BUNDLED_CHECKPOINT / "README.md").read_text())
    assert "DiffusionPipeline.from_pretrained" in snippet
    code = snippet.replace(LOCAL_LOCATION, str(BUNDLED_CHECKPOINT)) + (
        "\nprint('pairs:', pairs.images.shape, pairs.masks.shape, int(pairs.tumour_areas.min()))\n")
    result = fresh_python(code, cwd=tmp_path)
    shapes, smallest = result.stdout.split("pairs:")[1].rsplit(" ", 1)
    assert shapes.strip() == "(16, 128, 128, 1) (16, 128, 128)" and int(smallest) > 200


def test_every_card_carries_the_same_snippet(tiny_config, tmp_path):
    """A card rendered for a pipeline without a training run, and the bundled (training) card, share the snippet,
    pointed at where the pipeline is."""
    pipeline = saved_pipeline(tiny_config, tmp_path / "saved")
    rendered = card_snippet(pipeline_model_card(pipeline, location="someone/hvae").content)
    bundled = card_snippet((BUNDLED_CHECKPOINT / "README.md").read_text())
    assert rendered == bundled.replace(LOCAL_LOCATION, "someone/hvae")


def test_a_repository_id_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(OSError, match=r"'nobody/no-such-hvae' is neither an existing folder nor a pipeline that could "
                                      r"be fetched .*: offline mode is on \(HF_HUB_OFFLINE=1\) and no repository of "
                                      r"that name is in the local cache"):
        HVAEPipeline.from_pretrained("nobody/no-such-hvae")
