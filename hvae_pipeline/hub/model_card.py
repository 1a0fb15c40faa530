"""Model cards of saved pipelines, rendered from ``model_card_template.md`` (beside this module).

One template serves the cards that training writes (``training/model_card.py`` adds what only a run knows: data,
optimiser, logged metrics, held-out results) and the card that :meth:`~hvae_pipeline.HVAEPipeline.push_to_hub` renders
for a pipeline that has none. Every card says "not for clinical use", the licence of the training data and how to load
the pipeline; its metadata (``huggingface_hub.ModelCardData``) carries ``datasets``, ``metrics`` and a ``model-index``
of measured results when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.cards import DATA_SOURCES
from ..models.generator import PairAutoencoder, PairGenerator

if TYPE_CHECKING:  # the pipeline imports this module
    from ..data.cards import GeneratingModel
    from ..pipeline import HVAEPipeline

TEMPLATE = Path(__file__).with_name("model_card_template.md")
CARD_FILE = "README.md"
# Where the card's loading snippet points until the pipeline is pushed; a push replaces it with the repository id.
LOCAL_LOCATION = "path/to/this/folder"
CARD_TAGS = ["medical-imaging", "hamiltonian-vae", "segmentation", "data-augmentation", "brats", "hvae-pipeline"]
# Marks a card as rendered by hvae-pipeline (kept by a push) rather than diffusers' generic one (replaced).
OWN_CARD_TAG = "hvae-pipeline"
TASK = "unconditional-image-generation"
# The Hub repository of the flagship model, the bundled one; `model_card.md` at the repository root is its card there.
FLAGSHIP_REPO_ID = "hvae-pipeline/hvae-brats-flair-128"


@dataclass(frozen=True)
class TrainingData:
    """What a card says about the data a model was trained on.

    Attributes:
        description: Source, preprocessing and patients, in words.
        licence: The data's licence in words (``"CC BY-SA 4.0"``); the model inherits its terms.
        license_id: The Hub's licence identifier (``"cc-by-sa-4.0"``, ``"other"``, ``"unknown"``).
        datasets: Dataset names for the card's ``datasets`` field (e.g. ``"msd-task01"``).
        modalities: The image channels in words (``"FLAIR"``).
        patient_count: Number of training patients, or words (``"all available"``).
        citation: The data's citation text (empty when none is required).
    """

    description: str
    licence: str
    license_id: str
    datasets: tuple[str, ...] = ()
    modalities: str = "medical image"
    patient_count: int | str = "not recorded"
    citation: str = ""


UNRECORDED_DATA = TrainingData(
    description="Not recorded with this pipeline (it was not exported by hvae-pipeline's training scripts). State the "
                "training data, its licence and its citation here before sharing the model: a model carries the terms "
                "of the data it was trained on.",
    licence="unknown (see the data provider's terms)",
    license_id="unknown",
)


@dataclass(frozen=True)
class Evaluation:
    """Held-out results shown in the card: a table for readers and ``model-index`` entries for the Hub.

    Attributes:
        description: How and on what the results were measured.
        rows: ``(measure, value in words)`` table rows.
        results: The same numbers as ``huggingface_hub.EvalResult`` entries.
    """

    description: str
    rows: list[tuple[str, str]]
    results: list[EvalResult] = field(default_factory=list)


def generator_fields(model: PairGenerator, flow: dict[str, float] | None = None) -> dict[str, Any]:
    """Template fields that the generator alone determines: kind, sizes, network, likelihoods, base objective.

    Args:
        model: The pipeline's generator (its config describes it).
        flow: The HVAE's :meth:`~hvae_pipeline.HVAEModel.flow_summary` (learnt step sizes and beta_0), if any.
    """
    config = model.config
    is_autoencoder = isinstance(model, PairAutoencoder)
    n_leapfrog = config.get("n_leapfrog", 0) if is_autoencoder else 0
    channels = tuple(config.block_out_channels)
    decoder_channels = tuple(config.get("decoder_block_out_channels") or channels)
    return dict(
        model_kind=("Hamiltonian VAE" if n_leapfrog else "VAE") if is_autoencoder else "least-squares GAN",
        mask_description="binary tumour masks" if config.mask_channels == 1
        else f"{config.mask_channels}-class tumour masks",
        sample_size=config.sample_size,
        latent_description=f"{model.latent_shape[0]} channels",
        block_out_channels=channels if decoder_channels == channels
        else f"{channels} in the encoder, {decoder_channels} in the decoder",
        layers_per_block=config.layers_per_block,
        objective_description=model_objective(config, flow) if is_autoencoder
        else "least-squares GAN (LSGAN baseline).",
        image_likelihood=config.get("image_likelihood", "bernoulli").capitalize() if is_autoencoder else "none (GAN)",
        mask_likelihood=("Bernoulli" if config.mask_channels == 1 else "categorical") if is_autoencoder
        else "none (GAN)",
        parameter_count=f"{sum(p.numel() for p in model.parameters()):,}",
    )


def model_objective(config: Any, flow: dict[str, float] | None = None) -> str:
    """The bound an HVAE or VAE of this config is trained with, with its flow's step sizes and beta_0.

    Args:
        config: The model's config (``n_leapfrog``, ``step_size``, ``beta_zero``, ``learn_*``, ``flow_gradient``).
        flow: The learnt values (:meth:`~hvae_pipeline.HVAEModel.flow_summary`); the config's are shown without it.
    """
    steps = config.get("n_leapfrog", 3)
    if steps == 0:
        return "the VAE evidence lower bound (no Hamiltonian flow: the VAE baseline)."
    text = f"the Hamiltonian VAE bound with K = {steps} leapfrog steps ({_flow_description(config, flow)})."
    if config.get("flow_gradient", "exact") == "detached":
        return text + (" Trained with flow_gradient='detached': gradients through grad U were dropped, a cheaper but "
                       "BIASED gradient estimator of this bound.")
    return text + " Exact gradients through the flow (second order)."


def _flow_description(config: Any, flow: dict[str, float] | None) -> str:
    """The flow's step size and beta_0: the learnt values when they were learnt, else the config's."""
    learnt = [name for name in ("learn_step_size", "learn_beta_zero") if config.get(name)]
    if not flow or not learnt:
        return (f"step size {config.get('step_size', 1e-3)}, momentum tempered quadratically from "
                f"beta_0 = {config.get('beta_zero', 0.3)} to 1")
    step = (f"step sizes learnt per latent dimension: min {flow['step_size_min']:.4g}, median "
            f"{flow['step_size_median']:.4g}, max {flow['step_size_max']:.4g} (initial "
            f"{config.get('step_size', 1e-3)})" if config.get("learn_step_size")
            else f"step size {config.get('step_size', 1e-3)}")
    beta = "learnt" if config.get("learn_beta_zero") else "fixed"
    return f"{step}, momentum tempered quadratically from beta_0 = {flow['beta_zero']:.3f} ({beta}) to 1"


def card_data(model_name: str, data: TrainingData, evaluation: Evaluation | None = None,
              base_model: str | None = None) -> ModelCardData:
    """The card's metadata: licence, library, task, tags, ``datasets``, ``metrics`` and ``model-index``.

    Args:
        model_name: The name the ``model-index`` lists its results under.
        data: The training data (licence, dataset names).
        evaluation: Measured results, if any: their metric types fill ``metrics``, the results ``model-index``.
        base_model: The Hub id of the model it was fine-tuned from, if any.
    """
    results = evaluation.results if evaluation else []
    return ModelCardData(
        license=data.license_id,
        library_name="diffusers",
        pipeline_tag=TASK,
        tags=list(CARD_TAGS),
        datasets=list(data.datasets) or None,
        metrics=sorted({result.metric_type for result in results}) or None,
        model_name=model_name,
        eval_results=results or None,
        base_model=base_model,
    )


def render_model_card(fields: dict[str, Any], data: TrainingData, evaluation: Evaluation | None = None,
                      base_model: str | None = None, location: str = LOCAL_LOCATION) -> ModelCard:
    """Render the template.

    Args:
        fields: Template fields: :func:`generator_fields` plus ``model_name``, ``provenance``, ``prior_description``
            and, from a training run, ``objective_description``, ``training_rows`` and ``metric_rows``.
        data: The training data.
        evaluation: Held-out results (a section and the ``model-index``).
        base_model: See :func:`card_data`.
        location: Where the loading snippet loads from: a folder, or the Hub repository id once pushed.
    """
    return ModelCard.from_template(
        card_data(fields["model_name"], data, evaluation, base_model),
        template_path=str(TEMPLATE),
        repo_id_or_path=location,
        modality_description=data.modalities,
        data_description=data.description,
        data_licence=data.licence,
        patient_count=data.patient_count,
        data_citation=data.citation,
        evaluation_description=evaluation.description if evaluation else "",
        evaluation_rows=evaluation.rows if evaluation else [],
        **fields,
    )


def pipeline_model_card(pipeline: "HVAEPipeline", location: str = LOCAL_LOCATION) -> ModelCard:
    """The card of a pipeline that has none: what its generator and latent prior say, the data left to state.

    Args:
        pipeline: The pipeline.
        location: See :func:`render_model_card`.
    """
    from .. import __version__

    model = pipeline.model
    flow = model.flow_summary() if hasattr(model, "flow_summary") else None  # the HVAE and VAE; the LSGAN has no flow
    fields = generator_fields(model, flow)
    fields.update(
        model_name=f"hvae-pipeline {fields['model_kind']}",
        provenance=f"Packaged with hvae-pipeline {__version__}; how it was trained is not recorded with it.",
        prior_description=prior_description(
            pipeline.latent_prior.config.source if pipeline.latent_prior is not None else None),
    )
    return render_model_card(fields, UNRECORDED_DATA, location=location)


def prior_description(fitted_to: str | None, patient_count: int = 0) -> str:
    """How the pipeline draws latents by default: its fitted Gaussian, or ``N(0, I)``.

    Args:
        fitted_to: The ``source`` of the pipeline's :class:`~hvae_pipeline.models.GaussianLatentPrior`
            (``"posterior"``: the encoder's z_0, ``"flow"``: the flow's z_K), or ``None`` when it has none.
        patient_count: Training patients it was fitted on (0: not stated).
    """
    if fitted_to is None:
        return "N(0, I)."
    patients = f" of the {patient_count} training patients" if patient_count else ""
    latents = ("the aggregate posterior (the encoder's z_0)" if fitted_to == "posterior"
               else "the flow's z_K (the latents the decoder was trained on; Monte Carlo)")
    return (f"a full-covariance Gaussian fitted to {latents} on the training slices{patients} (`latent_prior/`), "
            "used by default; `pipeline(..., prior=\"standard\")` samples N(0, I) as in the paper.")


def likelihood_evaluation(summary: dict[str, Any], generator: str, dataset_type: str, note: str = "") -> Evaluation:
    """The held-out results of one generator of an ``hvae-evaluate likelihood`` summary (``likelihood.json``).

    Args:
        summary: The summary's JSON content.
        generator: The generator's name in ``summary["results"]``.
        dataset_type: The evaluation data's dataset name for the ``model-index`` (as in the card's ``datasets``).
        note: A sentence appended to the description (e.g. the comparison and its cost).

    Raises:
        KeyError: ``generator`` is not in the summary's results.
    """
    result = summary["results"][generator]
    settings = summary["settings"]
    description = (f"Held-out slices: {summary['data']}. log p(x, m) importance-sampled with "
                   f"{settings['num_importance_samples']} samples per slice through the model's own flow; ELBOs "
                   f"averaged over {settings.get('elbo_draws', 1)} draws per slice (`hvae-evaluate likelihood`). "
                   + note)
    rows = [("importance-sampled log p(x, m)", f"{result['log_likelihood_mean']:.1f} nats/slice "
             f"({result.get('importance_slices', result['num_slices'])} slices)"),
            ("ELBO", f"{result['elbo_mean']:.1f} nats/slice ({result['num_slices']} slices)")]
    measured = [("log_likelihood", "importance-sampled log p(x, m) (nats/slice)", result["log_likelihood_mean"]),
                ("elbo", "ELBO (nats/slice)", result["elbo_mean"])]
    if result.get("flow_gain_mean") is not None and result["n_leapfrog"] > 0:
        rows += [("ELBO with the flow off (same weights)", f"{result['elbo_flow_off_mean']:.1f} nats/slice"),
                 ("flow gain (ELBO on - off, paired)", f"{result['flow_gain_mean']:.1f} ± "
                  f"{result['flow_gain_standard_error']:.1f} (s.e.) nats/slice")]
        measured.append(("flow_gain", "flow gain: ELBO with the flow on - off (nats/slice)", result["flow_gain_mean"]))
    results = [EvalResult(task_type=TASK, dataset_type=dataset_type, dataset_name=f"{dataset_type} held-out patients",
                          dataset_split="test", metric_type=metric, metric_name=name, metric_value=round(value, 2))
               for metric, name, value in measured]
    return Evaluation(description, rows, results)


def find_model_card(pipeline: "HVAEPipeline") -> Path | None:
    """The model card (``README.md``) of the pipeline's folder, or of its cached Hub download; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    source = pipeline.name_or_path
    if not source:
        return None
    if Path(source).is_dir():
        card = Path(source) / "README.md"
        return card if card.is_file() else None
    cached = try_to_load_from_cache(source, "README.md")
    return Path(cached) if isinstance(cached, str) else None


def is_own_card(card: ModelCard) -> bool:
    """Whether ``card`` was rendered by hvae-pipeline (and so says "not for clinical use" and the data's licence)."""
    return OWN_CARD_TAG in (card.data.get("tags") or [])


def point_card_at(card: ModelCard, location: str) -> ModelCard:
    """A copy of ``card`` whose loading snippet loads from ``location`` (a Hub repository id once pushed)."""
    return ModelCard(card.content.replace(f'"{LOCAL_LOCATION}"', f'"{location}"'))


def own_model_card(pipeline: "HVAEPipeline") -> ModelCard | None:
    """The card hvae-pipeline rendered for the folder (or cached Hub download) the pipeline was loaded from, if any.

    Args:
        pipeline: A pipeline, loaded with ``from_pretrained`` or built in memory (then it has none).
    """
    path = find_model_card(pipeline)
    card = ModelCard.load(path) if path is not None else None
    return card if card is not None and is_own_card(card) else None


def hub_repo_of_folder(folder: str | Path) -> str | None:
    """The Hub repository a folder was downloaded from (``.../models--OWNER--NAME/snapshots/REVISION``), or ``None``.

    Args:
        folder: A pipeline folder, e.g. a training run's ``training.init_from``.
    """
    for part in Path(folder).resolve().parts:
        if part.startswith("models--"):  # the Hub cache's name of `OWNER/NAME` (ids cannot contain "--")
            return part.removeprefix("models--").replace("--", "/")
    return None


def generating_model(pipeline: "HVAEPipeline") -> "GeneratingModel":
    """What a dataset card says of the pipeline that drew the pairs: its Hub id or folder name (never the folder's
    path on this machine), and the licence and training data of its model card."""
    from huggingface_hub import ModelCard

    from .. import __version__
    from .bundled_checkpoint import BUNDLED_CHECKPOINT
    from ..data.cards import GeneratingModel

    source = pipeline.name_or_path
    if not source:
        name = "an untrained model (random weights)"
    elif Path(source).resolve() == BUNDLED_CHECKPOINT.resolve():
        name = f"the bundled default model of hvae-pipeline {__version__}"
    elif Path(source).is_dir():
        name = f"{Path(source).resolve().name} (a local pipeline folder)"
    else:
        name = source  # a Hub id
    card_path = find_model_card(pipeline)
    if card_path is None:
        return GeneratingModel(name, None)
    card: ModelCard = ModelCard.load(card_path)
    return GeneratingModel(name, card.data.get("license"), tuple(card.data.get("datasets") or ()))


def card_model_name(card: ModelCard) -> str | None:
    """The model's name in its card: the ``model-index`` name, else the card's first ``# `` title, else ``None``."""
    if card.data.get("model_name"):
        return card.data.model_name
    titles = [line[2:].strip() for line in card.text.splitlines() if line.startswith("# ")]
    return titles[0] if titles else None


def pipeline_title(pipeline: "HVAEPipeline") -> str:
    """How to name a loaded pipeline to a person: its card's model name and where it came from (the bundled model, a
    folder's name or a Hub id), never a folder's path on this machine."""
    origin = generating_model(pipeline).name
    card_path = find_model_card(pipeline)
    name = card_model_name(ModelCard.load(card_path)) if card_path is not None else None
    return f"{name}, {origin}" if name else origin


def dataset_title(name: str) -> str:
    """A card's ``datasets`` entry in words (``"msd-task01"``: the Decathlon's BraTS and where it is published);
    names of no known data source are returned as they are."""
    source = DATA_SOURCES.get(name)
    return source.title if source is not None and source.name != "unknown" else name


def flagship_model_card(repo_id: str = FLAGSHIP_REPO_ID) -> ModelCard:
    """The bundled model's card as :meth:`~hvae_pipeline.HVAEPipeline.push_to_hub` publishes it: the card training
    rendered from the template, its loading snippet pointed at ``repo_id``. ``model_card.md`` at the repository
    root is this card (``flagship_model_card().save("model_card.md")``)."""
    from .bundled_checkpoint import BUNDLED_CHECKPOINT

    return point_card_at(ModelCard.load(BUNDLED_CHECKPOINT / CARD_FILE), repo_id)
