"""Model cards of a training run: what only the run knows (data, objective schedule, optimiser, logged metrics, held-out
results), rendered with the package's template (:mod:`hvae_pipeline.hub.model_card`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hvae_pipeline.storage.atomic_write import write_text_atomically
from hvae_pipeline.hub.model_card import (
    Evaluation,
    TrainingData,
    generator_fields,
    hub_repo_of_folder,
    model_objective,
    prior_description,
    render_model_card,
)
from hvae_pipeline.training.objectives import describe_objectives

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
# The card's `datasets` name of the Decathlon's BraTS (as hvae_pipeline.data.cards names that source).
BRATS_MSD_DATASET = "msd-task01"


def training_data(data: dict[str, Any]) -> TrainingData:
    """What the card says about a run's data (its ``data`` config section): source, licence, dataset name, citation."""
    patients = data["patients"] or []
    is_brats_msd = data["kind"] == "brats" and "msd" in str(data["root"] or "")
    licence = data["licence"] or ("CC BY-SA 4.0" if is_brats_msd else "see the data provider's terms")
    description = data["description"] or (BRATS_MSD_DESCRIPTION if is_brats_msd else f"{data['kind']} data.")
    return TrainingData(
        description=description + (f" Patients: {', '.join(map(str, patients))}." if patients else ""),
        licence=licence,
        license_id="cc-by-sa-4.0" if licence == "CC BY-SA 4.0" else "other",
        datasets=(BRATS_MSD_DATASET if is_brats_msd else data["kind"],),
        modalities=" + ".join(m.upper() for m in data["modalities"]),
        patient_count=len(patients) if patients else "all available",
        citation=BRATS_CITATION if is_brats_msd else "",
    )


def _objective(model_config: Any, training: dict[str, Any], objectives: dict[str, Any], trained_steps: int,
               flow: dict[str, float] | None) -> str:
    """The model's bound (:func:`~hvae_pipeline.hub.model_card.model_objective`) and how this run scheduled it."""
    start = f" Started from the weights of {training['init_from']}." if training["init_from"] else ""
    warmup_steps = training["vae_warmup_steps"]
    if model_config.n_leapfrog and warmup_steps >= trained_steps:
        return (f"the VAE bound only: the flow was off for all {trained_steps} steps (a VAE warm start). The model has "
                f"the HVAE configuration (K = {model_config.n_leapfrog}), so sampling, which uses only the decoder, "
                "is unchanged; the Hamiltonian stage continues from it (training/configs/cpu-128.yaml)." + start)
    text = model_objective(model_config, flow)
    if model_config.n_leapfrog and training["trainable_parameters"] == "flow":
        text += " Only the flow's step sizes and beta_0 were trained in this run; the networks were frozen."
    if model_config.n_leapfrog and warmup_steps:
        text += f" The first {warmup_steps} steps used the VAE bound (flow off) as a cheap warm start."
    return text + describe_objectives(objectives) + start


def write_model_card(path: Path, run: Any, steps: int, seconds: float, last_metrics: dict[str, Any],
                     flow: dict[str, float] | None = None, evaluation: Evaluation | None = None,
                     resumes: Sequence[dict[str, Any]] = ()) -> None:
    """Render the card of a finished run to ``path`` (``README.md`` of the exported pipeline).

    Args:
        path: The card file.
        run: The finished training run (its config describes the model, data and optimiser).
        steps: Training steps done; seconds: their wall time.
        last_metrics: The last logged row (shown as final metrics).
        flow: The trained model's :meth:`~hvae_pipeline.HVAEModel.flow_summary` (learnt step sizes and beta_0).
        evaluation: Held-out results measured after training (e.g. from
            :func:`~hvae_pipeline.hub.model_card.likelihood_evaluation`): a "Held-out evaluation" section and the card's
            ``model-index``.
        resumes: The run record's resumes (``{"step": ..., "changed": {"section.key": [before, now]}}``): the
            overrides that applied from a resumed step on are listed beside the values of the last stretch.
    """
    training = run.config["training"]
    data = training_data(run.config["data"])
    model = run.build_model()
    fields = generator_fields(model, flow)
    if run.kind == "hvae":
        fields["objective_description"] = _objective(model.config, training, run.config["objectives"], steps, flow)
    if run.config["data"]["label"] == "whole_tumor":  # the data say which tumour region the binary mask is
        fields["mask_description"] = "binary whole-tumour masks"
    fitted_to = training["latent_prior_source"] if run.kind == "hvae" and training["fit_latent_prior"] else None
    fields.update(
        model_name=f"hvae-pipeline {run.kind.upper()} ({Path(training['output_dir']).name})",
        provenance=f"Trained and packaged with hvae-pipeline (`training/train_{run.kind}.py`).",
        prior_description=prior_description(fitted_to, len(run.config["data"]["patients"] or [])),
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
            *[(f"changed at step {resume['step']} (resume)", f"{key} {before!r} -> {now!r}")
              for resume in resumes for key, (before, now) in resume["changed"].items()],
        ],
        metric_rows=[(k, f"{float(v):.2f}") for k, v in last_metrics.items() if k not in ("step", "lr") and v != ""],
    )
    base_model = hub_repo_of_folder(training["init_from"]) if training["init_from"] else None
    card = render_model_card(fields, data, evaluation, base_model)
    write_text_atomically(path, str(card))  # a reader never sees half a card
