"""Training scripts on synthetic phantoms: loss goes down, resume is exact, DDP replicas agree, exports reload."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hvae_pipeline import HVAEModel, HVAEPipeline, fit_latent_prior
from hvae_pipeline.models.lsgan import LSGANModel
from hvae_pipeline.training import plot_stages, train_hvae, train_lsgan
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.data import dataset_to_tensors, load_slice_dataset
from hvae_pipeline.training.components import initialise_from
from hvae_pipeline.training.loop import EXIT_NON_FINITE, run_training
from hvae_pipeline.training.publish import EXIT_PUSH_FAILED

REPOSITORY = Path(__file__).resolve().parents[2]

# 16 x 16 phantoms and a two-level network: each step takes a few milliseconds.
TINY = ["model.sample_size=16", "data.size=16", "data.num_phantom_slices=48", "training.batch_size=8",
        "training.log_steps=1", "training.sample_steps=1000", "training.num_threads=1"]


def metrics(output_dir: Path) -> list[dict[str, str]]:
    with open(output_dir / "logs" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "pipeline" / "model" / "diffusion_pytorch_model.safetensors")


def test_hvae_loss_goes_down_and_export_reloads(tmp_path):
    out = tmp_path / "run"
    code = train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={out}", "training.max_steps=40",
                            "training.checkpointing_steps=20", "training.vae_warmup_steps=10",
                            "training.sample_steps=20", "data.val_patients=[phantom-000]"])
    assert code == 0
    rows = metrics(out)
    assert len(rows) == 40
    # Validation every sample_steps: the column appears with the first score, earlier rows keep it empty.
    assert rows[0]["val_elbo"] == "" and float(rows[19]["val_elbo"]) < 0 and rows[39]["val_elbo"] != ""
    assert (out / "samples" / "step-000020.png").is_file()
    first, last = [float(r["loss"]) for r in rows[:5]], [float(r["loss"]) for r in rows[-5:]]
    assert sum(last) / 5 < 0.8 * sum(first) / 5
    assert all(float(r["flow_gain"]) == 0.0 for r in rows[:10])  # warm start: the VAE bound, flow off
    assert any(float(r["flow_gain"]) != 0.0 for r in rows[10:])
    pipeline = HVAEPipeline.from_pretrained(out / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    samples = pipeline(num_samples=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert samples.images.shape == (3, 16, 16, 1)
    # The export carries the latent prior fitted to the training slices (all 48 phantoms) with the final weights.
    assert pipeline.latent_prior.config.num_slices == 48 and pipeline.resolve_prior() == "fitted"
    images, masks = dataset_to_tensors(load_slice_dataset(load_config("phantom-tiny", TINY)["data"], None))
    refit = fit_latent_prior(pipeline.model, images, masks, progress=False)
    assert torch.allclose(pipeline.latent_prior.mean, refit.mean, atol=1e-5)
    assert torch.allclose(pipeline.latent_prior.scale_tril, refit.scale_tril, atol=1e-4)
    card = (out / "pipeline" / "README.md").read_text()
    assert "license: cc0" not in card.lower()  # licence is rendered from the data section, not a fixed value
    assert "CC0 (synthetic)" in card and "| steps | 40 |" in card and "K = 3 leapfrog steps" in card
    assert "Sampling prior: a full-covariance Gaussian fitted to the aggregate posterior" in card
    assert (out / "pipeline" / "samples.png").is_file() and (out / "loss_curve.png").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir()] and not list((out / "checkpoints").glob(".*"))


def test_data_patients_select_phantom_slices_and_an_absent_patient_is_named():
    data = load_config("phantom-tiny", TINY)["data"]  # 48 phantoms, 16 per patient phantom-000 .. phantom-002
    chosen = load_slice_dataset(data, ["phantom-001"])
    assert len(chosen) == 16 and set(chosen["patient_id"]) == {"phantom-001"}
    with pytest.raises(ValueError, match=r"data.patients: \['phantom-009'\] have no slices here"):
        load_slice_dataset(data, ["phantom-001", "phantom-009"])


def test_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path):
    common = ["--config", "phantom-tiny", *TINY, "training.max_steps=14", "training.checkpointing_steps=100"]
    assert train_hvae.main([*common, f"training.output_dir={tmp_path / 'straight'}"]) == 0
    interrupted = tmp_path / "interrupted"
    assert train_hvae.main([*common, f"training.output_dir={interrupted}", "--stop-after-steps", "5"]) == 0
    assert not (interrupted / "pipeline").exists()
    assert (interrupted / "checkpoints" / "checkpoint-5").is_dir()
    assert train_hvae.main([*common, f"training.output_dir={interrupted}", "--resume-from-checkpoint", "latest"]) == 0
    straight, resumed = weights(tmp_path / "straight"), weights(interrupted)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert [r["loss"] for r in metrics(tmp_path / "straight")] == [r["loss"] for r in metrics(interrupted)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_replicas_end_identical(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    out = tmp_path / "ddp"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(REPOSITORY / "training" / "train_hvae.py"), "--config", "phantom-tiny", *TINY,
               f"training.output_dir={out}", "training.max_steps=4", "training.batch_size=4",
               "training.num_threads=1"]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "ddp.log"
    with open(log, "w") as handle:  # a file, not a pipe: no wait on pipes held open by the launcher's workers
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=600, env=environment,
                                cwd=tmp_path)
    output = log.read_text()
    assert result.returncode == 0, output[-3000:]
    assert "Replicas agree: identical weights on all 2 processes" in output
    assert len(metrics(out)) == 4 and (out / "pipeline" / "model_index.json").is_file()


def test_lsgan_trains_and_samples_through_the_same_pipeline(tmp_path):
    out = tmp_path / "lsgan"
    code = train_lsgan.main(["--config", "lsgan-phantom-tiny", *TINY, f"training.output_dir={out}",
                             "training.max_steps=6"])
    assert code == 0
    rows = metrics(out)
    assert {"generator_loss", "discriminator_loss", "real_score", "fake_score"} <= rows[0].keys()
    pipeline = HVAEPipeline.from_pretrained(out / "pipeline")
    pipeline.set_progress_bar_config(disable=True)
    assert isinstance(pipeline.model, LSGANModel)
    samples = pipeline(num_samples=4, generator=torch.Generator().manual_seed(0), output_type="np")
    assert samples.images.shape == (4, 16, 16, 1) and set(samples.masks.ravel().tolist()) <= {0, 1}


def test_lsgan_losses_reach_only_their_own_network():
    model = tiny_lsgan()
    images, masks = torch.rand(4, 1, 16, 16), (torch.rand(4, 16, 16) > 0.7).long()
    output = model(images, masks, generator=torch.Generator().manual_seed(0))
    generator_params = list(model.generator.parameters())
    discriminator_params = list(model.discriminator.parameters())
    from_generator_loss = torch.autograd.grad(output.generator_loss, discriminator_params, retain_graph=True,
                                              allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in from_generator_loss)
    from_discriminator_loss = torch.autograd.grad(output.discriminator_loss, generator_params, retain_graph=True,
                                                  allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in from_discriminator_loss)
    assert all(g is not None for g in torch.autograd.grad(output.generator_loss, generator_params, retain_graph=True))


def tiny_lsgan(**overrides) -> LSGANModel:
    torch.manual_seed(0)
    return LSGANModel(sample_size=16, block_out_channels=(8, 16), attention_levels=(False, True),
                      num_attention_heads=2, attention_head_dim=4, norm_num_groups=4, discriminator_channels=(8, 16),
                      **overrides)


@pytest.mark.parametrize("noise_std", [0.0, 0.1, 0.3])
def test_lsgan_discriminator_sees_real_and_generated_pairs_with_instance_noise(noise_std):
    model = tiny_lsgan(discriminator_noise_std=noise_std)
    seen = []
    model.discriminator.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    images, masks = torch.rand(64, 1, 16, 16), (torch.rand(64, 16, 16) > 0.7).long()
    model(images, masks, generator=torch.Generator().manual_seed(0))
    generated_for_generator, real, generated_for_discriminator = seen  # order of the calls in forward
    real_pairs = torch.cat([images, masks[:, None].float()], dim=1)
    noise = real - real_pairs
    if noise_std == 0:
        assert torch.equal(noise, torch.zeros_like(noise))
    else:
        assert noise.mean().abs() < 0.05 * noise_std and abs(noise.std().item() - noise_std) < 0.02 * noise_std
    # The generator is scored on exactly the pairs the discriminator is trained against.
    assert torch.equal(generated_for_generator, generated_for_discriminator)


def test_lsgan_rejects_negative_instance_noise():
    with pytest.raises(ValueError, match="discriminator_noise_std"):
        tiny_lsgan(discriminator_noise_std=-0.1)


def save_vae_like_lsgan_generator(run: train_lsgan.LSGANRun, folder: Path, **changes) -> HVAEModel:
    """Save a VAE pipeline whose decoder has the architecture of ``run``'s generator (up to ``changes``)."""
    arguments = {key: value for key, value in run.model_arguments().items()
                 if key not in ("discriminator_channels", "discriminator_noise_std")}
    vae = HVAEModel(**{**arguments, **changes}, n_leapfrog=0, beta_zero=1.0)
    HVAEPipeline(vae).save_pretrained(folder)
    return vae


def test_lsgan_generator_starts_from_a_vae_pipelines_decoder(tmp_path):
    run = train_lsgan.LSGANRun(load_config("lsgan-phantom-tiny", TINY))
    vae = save_vae_like_lsgan_generator(run, tmp_path / "vae")
    lsgan = run.build_model()
    fresh_discriminator = {name: tensor.clone() for name, tensor in lsgan.discriminator.state_dict().items()}
    initialise_from(run, lsgan, tmp_path / "vae")
    for name, tensor in vae.decoder.state_dict().items():
        assert torch.equal(lsgan.generator.state_dict()[name], tensor), name
    for name, tensor in lsgan.discriminator.state_dict().items():
        assert torch.equal(tensor, fresh_discriminator[name]), name

    save_vae_like_lsgan_generator(run, tmp_path / "wider", block_out_channels=(8, 32))
    with pytest.raises(ValueError, match="training.init_from=.*wider.*do not fit"):
        initialise_from(run, run.build_model(), tmp_path / "wider")


@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_lsgan_discriminator_warmup_freezes_the_generator(tmp_path, warmup_steps):
    vae = save_vae_like_lsgan_generator(train_lsgan.LSGANRun(load_config("lsgan-phantom-tiny", TINY)), tmp_path / "vae")
    out = tmp_path / "lsgan"
    code = train_lsgan.main(["--config", "lsgan-phantom-tiny", *TINY, f"training.output_dir={out}",
                             "training.max_steps=3", f"training.init_from={tmp_path / 'vae'}",
                             "training.weight_decay=0", f"training.discriminator_warmup_steps={warmup_steps}"])
    assert code == 0
    trained = weights(out)
    generator_unchanged = all(torch.equal(trained[f"generator.{name}"], tensor)
                              for name, tensor in vae.decoder.state_dict().items())
    assert generator_unchanged == (warmup_steps == 3)
    assert all(float(row["discriminator_loss"]) > 0 for row in metrics(out))


def test_lsgan_discriminator_gets_its_own_learning_rate():
    run = train_lsgan.LSGANRun(load_config("lsgan-phantom-tiny", [*TINY, "training.discriminator_learning_rate=4e-4"]))
    model = run.build_model()
    generator_group, discriminator_group = run.parameter_groups(model)
    assert "lr" not in generator_group and discriminator_group["lr"] == 4e-4
    grouped = [id(p) for p in generator_group["params"] + discriminator_group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_lsgan_discriminator_layers_are_spectrally_normalised():
    model = tiny_lsgan()
    images, masks = torch.rand(8, 1, 16, 16), (torch.rand(8, 16, 16) > 0.7).long()
    for step in range(30):  # one power iteration per call: let the estimate converge
        model(images, masks, generator=torch.Generator().manual_seed(step))
    layers = [m for m in model.discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4
    for layer in layers:
        largest_singular_value = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert 0.9 < largest_singular_value < 1.05


class ExplodingRun(train_hvae.HVAERun):
    """Returns a NaN loss from step 7 on, as a diverging run would."""

    def loss_terms(self, model, images, masks, generator, step):
        terms = super().loss_terms(model, images, masks, generator, step)
        if step >= 7:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    config = load_config("phantom-tiny", [*TINY, f"training.output_dir={tmp_path}", "training.max_steps=20",
                                          "training.checkpointing_steps=5"])
    assert run_training(ExplodingRun(config), None, None, None) == EXIT_NON_FINITE
    message = capsys.readouterr().err
    assert "non-finite loss at step 8" in message and "checkpoint-5" in message
    assert (tmp_path / "checkpoints" / "checkpoint-5").is_dir()
    assert not (tmp_path / "pipeline").exists()


def test_push_to_hub_offline_keeps_the_local_export(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_printed")
    code = train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={tmp_path}",
                            "training.max_steps=2", "--push-to-hub", "nobody/hvae-test"])
    assert code == EXIT_PUSH_FAILED
    captured = capsys.readouterr()
    assert "could not push to the Hub repository 'nobody/hvae-test': offline mode is on" in captured.err
    assert "hf_secret_value_never_printed" not in captured.out + captured.err
    reloaded = HVAEPipeline.from_pretrained(tmp_path / "pipeline")
    assert reloaded.model.config.sample_size == 16


def test_fitting_the_latent_prior_can_be_switched_off(tmp_path):
    code = train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={tmp_path}",
                            "training.max_steps=2", "training.fit_latent_prior=false"])
    assert code == 0
    assert HVAEPipeline.from_pretrained(tmp_path / "pipeline").latent_prior is None
    assert "Sampling prior: N(0, I)." in (tmp_path / "pipeline" / "README.md").read_text()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["training.max_stepz=3"], "unknown key training.max_stepz"),
        (["training.max_steps"], "must look like section.key=value"),
        (["optimiser.lr=3"], "unknown section 'optimiser'"),
        (["--config", "no-such-config"], "config 'no-such-config' not found"),
        (["training.discriminator_warmup_steps=5"], "training.discriminator_warmup_steps=5 does not apply to the hvae"),
        (["training.trainable_parameters=decoder"], "training.trainable_parameters='decoder': expected 'all' or"),
        (["training.trainable_parameters=flow"], "trainable_parameters=flow needs a learnt flow"),
    ],
)
def test_bad_configuration_is_reported(arguments, message, capsys):
    if arguments[0] != "--config":
        arguments = ["--config", "phantom-tiny", *arguments]
    assert train_hvae.main(arguments) == 2
    assert message in capsys.readouterr().err


def test_lsgan_trainer_refuses_hvae_only_settings(capsys):
    assert train_lsgan.main(["--config", "lsgan-phantom-tiny", *TINY, "training.vae_warmup_steps=10"]) == 2
    assert "training.vae_warmup_steps=10 does not apply to the lsgan trainer" in capsys.readouterr().err
    assert train_lsgan.main(["--config", "lsgan-phantom-tiny", *TINY, "training.fit_latent_prior=false"]) == 2
    assert "training.fit_latent_prior=False does not apply to the lsgan trainer" in capsys.readouterr().err


def test_config_overrides_parse_yaml_values():
    config = load_config("cpu-128", ["training.adam_betas=[0.5, 0.9]", "training.ema_decay=null", "model.n_leapfrog=0"])
    assert config["training"]["adam_betas"] == [0.5, 0.9]
    assert config["training"]["ema_decay"] is None and config["model"]["n_leapfrog"] == 0
    # PyYAML alone reads "4e-4" as a string (YAML 1.1 wants "4.0e-4"); an optimiser would then fail far away.
    config = load_config("cpu-128", ["training.learning_rate=4e-4", "data.description=1e-4x"])
    assert config["training"]["learning_rate"] == 4e-4
    assert config["data"]["description"] == "1e-4x"
    with pytest.raises(ConfigError):
        load_config("cpu-128", ["data.no_such_key=1"])


def test_stage_logs_chain_into_one_curve(tmp_path, capsys):
    logs = []
    for name, steps in (("stage1", (10, 20)), ("stage2", (5, 10))):
        path = tmp_path / f"{name}.csv"
        path.write_text("step,loss,val_elbo\n" + "".join(f"{step},{100 - step},\n" for step in steps))
        logs.append(path)
    assert [row["step"] for row in plot_stages.chained_rows(logs)] == ["10", "20", "25", "30"]
    out = tmp_path / "curve.png"
    assert plot_stages.main([str(out), *map(str, logs)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.partial"))
    assert plot_stages.main([str(out), str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


LEARNT_FLOW = ["model.learn_step_size=true", "model.learn_beta_zero=true", "model.beta_zero=0.5",
               "training.flow_learning_rate=0.05"]


def test_learnt_flow_gets_its_own_learning_rate_without_weight_decay():
    run = train_hvae.HVAERun(load_config("phantom-tiny", [*TINY, *LEARNT_FLOW]))
    model = run.build_model()
    networks, flow = run.parameter_groups(model)
    assert "lr" not in networks and flow["lr"] == 0.05 and flow["weight_decay"] == 0.0
    assert [id(p) for p in flow["params"]] == [id(model.step_size_logit), id(model.beta_zero_logit)]
    assert sorted(id(p) for p in networks["params"] + flow["params"]) == sorted(id(p) for p in model.parameters())


def test_flow_only_stage_from_a_fixed_step_model_trains_the_flow_alone(tmp_path):
    """The recipe's stage 2: a fixed-step (or VAE) warm start, the networks frozen, the step sizes and beta_0 learnt
    through the exact bound (with gradient checkpointing of the flow), their distribution logged."""
    start, out = tmp_path / "start", tmp_path / "flow"
    assert train_hvae.main(["--config", "phantom-tiny", *TINY, f"training.output_dir={start}",
                            "training.max_steps=2"]) == 0
    assert train_hvae.main(["--config", "phantom-tiny", *TINY, *LEARNT_FLOW, f"training.output_dir={out}",
                            "training.max_steps=3", f"training.init_from={start / 'pipeline'}",
                            "training.trainable_parameters=flow", "training.gradient_checkpointing=true"]) == 0
    before, after = weights(start), weights(out)
    assert set(after) - set(before) == {"step_size_logit", "beta_zero_logit"}
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    initial_logit = torch.logit(torch.tensor(0.01 / 0.5))  # phantom-tiny's step 0.01, max_step_size 0.5
    assert not torch.allclose(after["step_size_logit"], initial_logit.expand_as(after["step_size_logit"]))
    assert after["beta_zero_logit"].item() != pytest.approx(0.0)  # logit(0.5) = 0 at the start
    rows = metrics(out)
    for row in rows:
        assert 0 < float(row["step_size_min"]) <= float(row["step_size_median"]) <= float(row["step_size_max"]) < 0.5
        assert 0 < float(row["beta_zero"]) < 1
    # Rows log the flow that computed their loss, i.e. before that step's update.
    assert float(rows[0]["step_size_median"]) == pytest.approx(0.01, rel=1e-5)
    card = (out / "pipeline" / "README.md").read_text()
    learnt = HVAEPipeline.from_pretrained(out / "pipeline").model.flow_summary()
    assert f"step sizes learnt per latent dimension: min {learnt['step_size_min']:.4g}" in card
    assert "Only the flow's step sizes and beta_0 were trained in this run" in card


def test_model_card_refreshed_with_the_learnt_flow_and_held_out_results(tmp_path, capsys):
    from hvae_pipeline.cli.evaluate import main as evaluate
    from hvae_pipeline.training import refresh_model_card

    out = tmp_path / "run"
    flow = ["model.learn_step_size=true", "model.learn_beta_zero=true", "model.beta_zero=0.5"]
    phantoms = ["data.num_phantom_slices=64", "training.batch_size=8", "training.num_threads=1"]
    assert train_hvae.main(["--config", "phantom-tiny", *flow, *phantoms, f"training.output_dir={out}",
                            "training.max_steps=2"]) == 0
    results = tmp_path / "results"
    assert evaluate(["likelihood", "--generator", f"H={out / 'pipeline'}", "--data", "phantom", "--size", "32",
                     "--num-phantom-slices", "64", "--test-patients", "phantom-003", "--num-importance-samples", "2",
                     "--importance-slices", "4", "--elbo-draws", "2", "--out", str(results), "--no-progress",
                     "--num-threads", "1"]) == 0
    result = json.loads((results / "likelihood.json").read_text())["results"]["H"]
    command = ["--pipeline", str(out / "pipeline"), "--config", "phantom-tiny", "--log",
               str(out / "logs" / "metrics.csv"), *flow, *phantoms, f"training.output_dir={out}"]
    assert refresh_model_card.main([*command, "--likelihood", str(results / "likelihood.json"), "--generator", "H",
                                    "--note", "Cost: 9x a VAE step."]) == 0
    card = (out / "pipeline" / "README.md").read_text()
    summary = HVAEPipeline.from_pretrained(out / "pipeline").model.flow_summary()
    assert f"median {summary['step_size_median']:.4g}" in card and "## Held-out evaluation" in card
    assert "(`hvae-evaluate likelihood`). Cost: 9x a VAE step." in card
    assert f"| flow gain (ELBO on - off, paired) | {result['flow_gain_mean']:.1f} ± " in card
    assert f"| importance-sampled log p(x, m) | {result['log_likelihood_mean']:.1f} nats/slice (4 slices) |" in card
    capsys.readouterr()
    with pytest.raises(SystemExit):
        refresh_model_card.main([*command, "--likelihood", str(results / "likelihood.json"), "--generator", "G"])
    assert "--generator G: not in" in capsys.readouterr().err
