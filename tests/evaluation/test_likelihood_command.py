"""``hvae-evaluate likelihood`` on SYNTHETIC 32 x 32 phantoms with tiny untrained HVAE and VAE generators."""

from __future__ import annotations

import json

import pytest
import torch
from evaluation_helpers import PHANTOM_DATA, QUIET, TINY_SIZE, save_tiny_generator

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.cli.evaluate import main
from hvae_pipeline.models.lsgan import LSGANModel

TINY_NETWORK = dict(sample_size=TINY_SIZE, block_out_channels=(8, 16), layers_per_block=1,
                    attention_levels=(False, True), num_attention_heads=2, attention_head_dim=4, norm_num_groups=4)


def test_scores_hvae_and_vae_with_paired_differences_and_resumes(tmp_path, capsys):
    hvae = save_tiny_generator(tmp_path / "hvae", seed=0)
    torch.manual_seed(0)
    vae = tmp_path / "vae"
    HVAEPipeline(HVAEModel(**TINY_NETWORK, n_leapfrog=0, beta_zero=1.0).eval()).save_pretrained(vae)
    command = ["likelihood", "--generator", f"HVAE={hvae}", "--generator", f"VAE={vae}", "--out",
               str(tmp_path / "out"), "--num-importance-samples", "8", "--batch-size", "7", *PHANTOM_DATA, *QUIET]
    assert main(command) == 0
    summary = json.loads((tmp_path / "out" / "likelihood.json").read_text())
    results = summary["results"]
    assert list(results) == ["HVAE", "VAE"]
    assert (results["HVAE"]["n_leapfrog"], results["VAE"]["n_leapfrog"]) == (3, 0)
    for result in results.values():
        assert result["num_slices"] == 16  # one phantom test patient, batches of 7 + 7 + 2
        # Jensen: the log of a mean of importance weights is above the single-draw ELBO (by a lot, untrained).
        assert result["log_likelihood_mean"] > result["elbo_mean"]
        assert result["log_likelihood_per_pixel"] == pytest.approx(result["log_likelihood_mean"] / TINY_SIZE**2)
    records = {name: json.loads((tmp_path / "out" / "runs" / f"likelihood__{name}.json").read_text())
               for name in ("HVAE", "VAE")}
    per_slice = {name: torch.tensor(record["per_slice_log_likelihood"]) for name, record in records.items()}
    difference = summary["paired_differences"]["VAE - HVAE"]
    assert difference["mean"] == pytest.approx((per_slice["VAE"] - per_slice["HVAE"]).mean().item(), rel=1e-9)
    assert difference["standard_error"] > 0
    table = (tmp_path / "out" / "likelihood.md").read_text()
    assert "| HVAE | 3 |" in table and "| VAE - HVAE |" in table

    capsys.readouterr()
    assert main(command) == 0
    assert "0 generators scored, 2 already finished (skipped)" in capsys.readouterr().out


def test_a_generator_without_encoder_is_refused(tmp_path, capsys):
    lsgan = tmp_path / "lsgan"
    model = LSGANModel(sample_size=TINY_SIZE, block_out_channels=(8, 16), attention_levels=(False, True),
                       num_attention_heads=2, attention_head_dim=4, norm_num_groups=4, discriminator_channels=(8, 16))
    HVAEPipeline(model.eval()).save_pretrained(lsgan)
    code = main(["likelihood", "--generator", f"GAN={lsgan}", "--out", str(tmp_path / "out"), *PHANTOM_DATA, *QUIET])
    assert code == 2
    assert "GAN (LSGANModel) has no encoder" in capsys.readouterr().err


def test_bad_estimator_settings_are_refused(tmp_path, capsys):
    hvae = save_tiny_generator(tmp_path / "hvae")
    code = main(["likelihood", "--generator", f"HVAE={hvae}", "--out", str(tmp_path / "out"),
                 "--num-importance-samples", "0", *PHANTOM_DATA, *QUIET])
    assert code == 2
    assert "num_importance_samples must be >= 1" in capsys.readouterr().err
