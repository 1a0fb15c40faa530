"""Model cards generated from a training run, rendered from the top-level ``model_card.md`` template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hvae_pipeline.evaluation.records import write_text_atomically

TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"

BRATS_MSD_DESCRIPTION = (
    "BraTS FLAIR volumes with expert whole-tumour masks, as distributed in the Medical Segmentation Decathlon "
    "(Task01_BrainTumour, channel 0 = FLAIR, labels binarised), resampled to 128 x 128 x 64 (axial slices), "
    "per-slice min-max normalised to [0, 1], slices without tumour dropped."
)
BRATS_CITATION = (
    "Training data: B. H. Menze et al., \"The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)\", IEEE TMI "
    "34(10), 2015; S. Bakas et al., \"Advancing The Cancer Genome Atlas glioma MRI collections with expert "
    "segmentation labels and radiomic features\", Scientific Data 4, 2017; M. Antonelli et al., \"The Medical "
    "Segmentation Decathlon\", Nature Communications 13, 2022 (data under CC BY-SA 4.0)."
)


def _flow_description(model_config: dict[str, Any], flow: dict[str, float] | None) -> str:
    """The flow's step size and beta_0: the learnt values when they were learnt, else the config's."""
    learnt = [name for name in ("learn_step_size", "learn_beta_zero") if model_config.get(name)]
    if not flow or not learnt:
        return (f"step size {model_config.get('step_size', 1e-3)}, momentum tempered quadratically from "
                f"beta_0 = {model_config.get('beta_zero', 0.3)} to 1")
    step = (f"step sizes learnt per latent dimension: min {flow['step_size_min']:.4g}, median "
            f"{flow['step_size_median']:.4g}, max {flow['step_size_max']:.4g} (initial "
            f"{model_config.get('step_size', 1e-3)})" if model_config.get("learn_step_size")
            else f"step size {model_config.get('step_size', 1e-3)}")
    beta = "learnt" if model_config.get("learn_beta_zero") else "fixed"
    return f"{step}, momentum tempered quadratically from beta_0 = {flow['beta_zero']:.3f} ({beta}) to 1"


def _objective(model_config: dict[str, Any], warmup_steps: int, trained_steps: int, init_from: str | None,
               flow: dict[str, float] | None = None, trainable: str = "all") -> str:
    steps = model_config.get("n_leapfrog", 3)
    start = f" Started from the weights of {init_from}." if init_from else ""
    if steps == 0:
        return "the VAE evidence lower bound (no Hamiltonian flow: the VAE baseline)." + start
    if warmup_steps >= trained_steps:
        return (f"the VAE bound only: the flow was off for all {trained_steps} steps (a VAE warm start). The model has "
                f"the HVAE configuration (K = {steps}), so sampling, which uses only the decoder, is unchanged; "
                "the Hamiltonian stage continues from it (training/configs/cpu-128.yaml)." + start)
    text = f"the Hamiltonian VAE bound with K = {steps} leapfrog steps ({_flow_description(model_config, flow)})."
    if trainable == "flow":
        text += " Only the flow's step sizes and beta_0 were trained in this run; the networks were frozen."
    if model_config.get("flow_gradient", "exact") == "detached":
        text += (" Trained with flow_gradient='detached': gradients through grad U were dropped, a cheaper but "
                 "BIASED gradient estimator of this bound.")
    else:
        text += " Exact gradients through the flow (second order)."
    if warmup_steps:
        text += f" The first {warmup_steps} steps used the VAE bound (flow off) as a cheap warm start."
    return text + start


def _prior_description(kind: str, fitted: bool, patient_count: int, source: str = "posterior") -> str:
    if kind == "hvae" and fitted:
        patients = f" of the {patient_count} training patients" if patient_count else ""
        latents = ("the aggregate posterior (the encoder's z_0)" if source == "posterior"
                   else "the flow's z_K (the latents the decoder was trained on; Monte Carlo)")
        return (f"a full-covariance Gaussian fitted to {latents} on the training slices"
                f"{patients} (`latent_prior/`), used by default; `pipeline(..., prior=\"standard\")` samples N(0, I) "
                "as in the paper.")
    return "N(0, I)."


def likelihood_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Card rows of one generator's ``hvae-evaluate likelihood`` result (its ``results[NAME]`` entry)."""
    rows = [("importance-sampled log p(x, m)", f"{result['log_likelihood_mean']:.1f} nats/slice "
             f"({result.get('importance_slices', result['num_slices'])} slices)"),
            ("ELBO", f"{result['elbo_mean']:.1f} nats/slice ({result['num_slices']} slices)")]
    if result.get("flow_gain_mean") is not None and result["n_leapfrog"] > 0:
        rows += [("ELBO with the flow off (same weights)", f"{result['elbo_flow_off_mean']:.1f} nats/slice"),
                 ("flow gain (ELBO on - off, paired)", f"{result['flow_gain_mean']:.1f} ± "
                  f"{result['flow_gain_standard_error']:.1f} (s.e.) nats/slice")]
    return rows


def write_model_card(path: Path, run: Any, steps: int, seconds: float, last_metrics: dict[str, Any],
                     flow: dict[str, float] | None = None,
                     evaluation: tuple[str, list[tuple[str, str]]] | None = None) -> None:
    """Render the card of a finished run to ``path`` (``README.md`` of the exported pipeline).

    Args:
        path: The card file.
        run: The finished training run (its config describes the model, data and optimiser).
        steps: Training steps done; seconds: their wall time.
        last_metrics: The last logged row (shown as final metrics).
        flow: The trained model's :meth:`~hvae_pipeline.HVAEModel.flow_summary` (learnt step sizes and beta_0).
        evaluation: ``(description, rows)`` of held-out results measured after training (e.g. from
            :func:`likelihood_rows`), shown in a "Held-out evaluation" section.
    """
    config = run.config
    data, training = config["data"], config["training"]
    model_config = dict(config["model"])
    sample_size = model_config.get("sample_size", data["size"])
    patients = data["patients"] or []
    is_brats_msd = data["kind"] == "brats" and "msd" in str(data["root"] or "")
    licence = data["licence"] or ("CC BY-SA 4.0" if is_brats_msd else "see the data provider's terms")
    card_data = ModelCardData(
        license="cc-by-sa-4.0" if licence == "CC BY-SA 4.0" else "other",
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=["medical-imaging", "hamiltonian-vae", "segmentation", "data-augmentation", "brats", "hvae-pipeline"],
    )
    parameter_count = sum(p.numel() for p in run.build_model().parameters())
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=f"hvae-pipeline {run.kind.upper()} ({Path(training['output_dir']).name})",
        model_kind="Hamiltonian VAE" if model_config.get("n_leapfrog", 3) else "VAE",
        modality_description=" + ".join(m.upper() for m in data["modalities"]),
        mask_description="binary whole-tumour masks" if data["label"] != "multiclass" else "multi-class tumour masks",
        sample_size=sample_size,
        latent_description=f"{model_config.get('latent_channels', 3)} channels",
        repo_id_or_path="path/to/this/folder",
        block_out_channels=tuple(model_config.get("block_out_channels", (128, 256, 512, 512))),
        layers_per_block=model_config.get("layers_per_block", 2),
        objective_description=_objective(model_config, training["vae_warmup_steps"], steps, training["init_from"],
                                         flow, training["trainable_parameters"])
        if run.kind == "hvae"
        else "least-squares GAN (LSGAN baseline).",
        image_likelihood=model_config.get("image_likelihood", "bernoulli").capitalize(),
        mask_likelihood="Bernoulli" if data["label"] != "multiclass" else "categorical",
        parameter_count=f"{parameter_count:,}",
        prior_description=_prior_description(run.kind, training["fit_latent_prior"], len(patients),
                                             training["latent_prior_source"]),
        data_description=data["description"] or (BRATS_MSD_DESCRIPTION if is_brats_msd else f"{data['kind']} data.")
        + (f" Patients: {', '.join(map(str, patients))}." if patients else ""),
        data_licence=licence,
        patient_count=len(patients) if patients else "all available",
        training_rows=[
            ("steps", steps),
            ("wall time", f"{seconds / 60:.1f} min"),
            ("batch size", training["batch_size"]),
            ("optimiser", f"AdamW lr {training['learning_rate']}, betas {tuple(training['adam_betas'])}, "
                          f"weight decay {training['weight_decay']}"),
            ("LR schedule", f"{training['lr_scheduler']} (warm-up {training['lr_warmup_steps']} steps)"),
            ("gradient clipping", training["max_grad_norm"]),
            ("EMA decay", training["ema_decay"]),
            ("mixed precision", training["mixed_precision"]),
            ("seed", training["seed"]),
        ],
        metric_rows=[(k, f"{float(v):.2f}") for k, v in last_metrics.items() if k not in ("step", "lr") and v != ""],
        data_citation=BRATS_CITATION if is_brats_msd else "",
        evaluation_description=evaluation[0] if evaluation else "",
        evaluation_rows=evaluation[1] if evaluation else [],
    )
    write_text_atomically(path, str(card))  # a reader never sees half a card
