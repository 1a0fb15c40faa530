"""The discriminative HVAE's discriminator: a diffusers model, checkpointed and resumed bit-identically with the
training run, and absent from the exported pipeline (which samples without it or the feature network)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hvae_pipeline.models.discriminator import PatchDiscriminator
from hvae_pipeline.training import train_hvae, train_lsgan

# 16 x 16 phantoms, a two-level HVAE and a one-layer discriminator: each step takes a few tens of milliseconds.
TINY = ["model.sample_size=16", "data.size=16", "data.num_phantom_slices=48", "training.batch_size=8",
        "training.log_steps=1", "training.sample_steps=1000", "training.num_threads=1"]
OBJECTIVES = ["objectives.l1=true", "objectives.perceptual=true", "objectives.adversarial=true",
              "objectives.adversarial_start_step=2", "objectives.discriminator_channels=8",
              "objectives.discriminator_layers=1"]


def test_patch_logits_and_a_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(in_channels=2, base_channels=8, num_layers=3)
    pairs = torch.rand(2, 2, 128, 128)
    assert discriminator(pairs).shape == (2, 1, 14, 14)  # 128 / 2^3 - 2 patches a side
    discriminator.save_pretrained(tmp_path / "discriminator")
    reloaded = PatchDiscriminator.from_pretrained(tmp_path / "discriminator")
    assert reloaded.config.base_channels == 8 and reloaded.config.num_layers == 3
    assert torch.equal(reloaded(pairs), discriminator.eval()(pairs))
    with pytest.raises(ValueError, match="pairs"):
        discriminator(torch.rand(2, 3, 16, 16))


def test_bad_discriminator_arguments_are_named():
    with pytest.raises(ValueError, match="norm_num_groups"):
        PatchDiscriminator(base_channels=10)  # widths 20, 40, 80: not multiples of 8
    with pytest.raises(ValueError, match="num_layers"):
        PatchDiscriminator(num_layers=0)


def train(out: Path, *arguments: str) -> int:
    return train_hvae.main(["--config", "phantom-tiny", *TINY, *OBJECTIVES, f"training.output_dir={out}",
                            "training.max_steps=6", "training.checkpointing_steps=3", *arguments])


def checkpoint_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's models and optimisers, keyed by file and name."""
    state: dict[str, torch.Tensor] = {}
    for path in sorted(checkpoint.glob("model*.safetensors")):
        state.update({f"{path.name}:{name}": tensor for name, tensor in load_file(path).items()})
    for path in sorted(checkpoint.glob("optimizer*.bin")):
        saved = torch.load(path, weights_only=True)
        for index, moments in saved["state"].items():
            state.update({f"{path.name}:{index}:{name}": value for name, value in moments.items()})
    return state


def test_discriminator_is_checkpointed_and_resumed_bit_identically(tmp_path):
    assert train(tmp_path / "whole") == 0
    assert train(tmp_path / "resumed", "--stop-after-steps", "4") == 0  # the discriminator trains from step 2
    assert not (tmp_path / "resumed" / "pipeline").exists()
    assert train(tmp_path / "resumed", "--resume-from-checkpoint", "latest") == 0

    whole = checkpoint_state(tmp_path / "whole" / "checkpoints" / "checkpoint-6")
    resumed = checkpoint_state(tmp_path / "resumed" / "checkpoints" / "checkpoint-6")
    # The HVAE and the discriminator (model_1), each with its optimiser's moments (optimizer_1).
    assert any(key.startswith("model_1.safetensors:") for key in whole)
    assert any(key.startswith("optimizer_1.bin:") for key in whole)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    initial = PatchDiscriminator(in_channels=2, base_channels=8, num_layers=1)
    assert any(not torch.equal(whole[f"model_1.safetensors:{name}"], value)
               for name, value in initial.state_dict().items())  # it did train
    final = "pipeline/model/diffusion_pytorch_model.safetensors"
    whole_weights, resumed_weights = load_file(tmp_path / "whole" / final), load_file(tmp_path / "resumed" / final)
    assert all(torch.equal(whole_weights[name], resumed_weights[name]) for name in whole_weights)


def test_the_exported_pipeline_samples_without_the_discriminator_or_the_feature_network(tmp_path):
    assert train(tmp_path / "run", "training.max_steps=3") == 0
    pipeline_dir = tmp_path / "run" / "pipeline"
    saved = [path.relative_to(pipeline_dir).as_posix() for path in pipeline_dir.rglob("*") if path.is_file()]
    assert not [name for name in saved if "discriminator" in name or "feature" in name]
    # A fresh process where neither module can be imported: loading and sampling must not need them.
    script = f"""
import sys
for name in ("hvae_pipeline.models.discriminator", "hvae_pipeline.models.perceptual",
             "hvae_pipeline.training.objectives"):
    sys.modules[name] = None
import torch
from hvae_pipeline import HVAEPipeline
pipeline = HVAEPipeline.from_pretrained({str(pipeline_dir)!r})
pipeline.set_progress_bar_config(disable=True)
output = pipeline(num_samples=2, generator=torch.Generator().manual_seed(0), output_type="np")
print(output.images.shape, output.masks.shape)
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(2, 16, 16, 1) (2, 16, 16)"


def test_the_objectives_are_logged_and_the_adversarial_terms_start_at_their_step(tmp_path):
    assert train(tmp_path / "run", "training.max_steps=3") == 0
    with open(tmp_path / "run" / "logs" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["adversarial"]) == 0.0 for row in rows] == [True, True, False]
    assert all(float(row["l1"]) > 0 and float(row["perceptual"]) > 0 for row in rows)
    for row in rows:
        mixed = 0.95 * float(row["hvae_loss"]) + 0.05 * (float(row["l1"]) + float(row["perceptual"]) + float(
            row["adaptive_weight"]) * float(row["adversarial"]))
        assert float(row["loss"]) == pytest.approx(mixed, rel=1e-5)


def test_objectives_are_refused_by_the_lsgan_trainer(tmp_path, capsys):
    code = train_lsgan.main(["--config", "lsgan-phantom-tiny", *TINY, "objectives.l1=true",
                             f"training.output_dir={tmp_path / 'lsgan'}", "training.max_steps=1"])
    assert code == 2
    assert "objectives.* terms apply to the HVAE trainer" in capsys.readouterr().err
