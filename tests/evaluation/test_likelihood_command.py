"""``hvae-evaluate likelihood`` on SYNTHETIC 32 x 32 phantoms with tiny untrained HVAE and VAE generators."""

from __future__ import annotations

import json

import pytest
import torch
from evaluation_helpers import PHANTOM_DATA, QUIET, TINY_SIZE, save_tiny_generator
from model_helpers import random_pairs

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.cli.evaluate import main
from hvae_pipeline.evaluation import LikelihoodSettings
from hvae_pipeline.evaluation.likelihood import evenly_spaced, score_likelihood
from hvae_pipeline.models.lsgan import LSGANModel

TINY_NETWORK = dict(sample_size=TINY_SIZE, block_out_channels=(8, 16), layers_per_block=1,
                    attention_levels=(False, True), num_attention_heads=2, attention_head_dim=4, norm_num_groups=4)

TINY_NETWORK_16 = {**TINY_NETWORK, "sample_size": 16}


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


def test_flow_gain_pairs_the_same_posterior_draws_and_importance_slices_subsample():
    images, masks = random_pairs(6, 16)
    settings = LikelihoodSettings(num_importance_samples=4, batch_size=4, importance_slices=3, elbo_draws=2)
    torch.manual_seed(0)
    still = HVAEModel(**TINY_NETWORK_16, step_size=1e-7).eval()  # a flow that barely moves z: gain ~ 0, exactly paired
    scores = score_likelihood(still, images, masks, settings)
    assert (scores["num_slices"], scores["importance_slices"], len(scores["per_slice_log_likelihood"])) == (6, 3, 3)
    assert abs(scores["flow_gain_mean"]) < 1e-2 and scores["flow_gain_standard_error"] < 1e-2
    assert scores["flow_gain_mean"] == pytest.approx(scores["elbo_mean"] - scores["elbo_flow_off_mean"], abs=1e-6)
    assert scores["flow"]["step_size_median"] == pytest.approx(1e-7)
    moving = HVAEModel(**TINY_NETWORK_16, step_size=0.2).eval()
    moving.load_state_dict(still.state_dict())
    assert abs(score_likelihood(moving, images, masks, settings)["flow_gain_mean"]) > 1e-2
    vae = HVAEModel(**TINY_NETWORK_16, n_leapfrog=0, beta_zero=1.0).eval()
    vae_scores = score_likelihood(vae, images, masks, settings)
    assert vae_scores["flow_gain_mean"] == 0 and "flow" not in vae_scores
    assert evenly_spaced(162, 24).tolist()[:3] == [0, 7, 14] and evenly_spaced(5, None).tolist() == [0, 1, 2, 3, 4]
