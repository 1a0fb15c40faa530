"""Dataset cards: the ``README.md`` written with every prepared or generated slice dataset.

A card says where the slices come from, under which licence and citation they may be shared, how they were
preprocessed and how they are split, in the format the Hugging Face Hub reads (``huggingface_hub.DatasetCard``: YAML
metadata, then Markdown). Nothing in a card names a folder of the machine that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from huggingface_hub import DatasetCard, DatasetCardData

CARD_FILE = "README.md"
NOT_FOR_CLINICAL_USE = "Synthetic, not for clinical use."

_MENZE_2015 = """@article{menze2015brats,
  title   = {The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)},
  author  = {Menze, Bjoern H. and Jakab, Andras and Bauer, Stefan and others},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {34},
  number  = {10},
  pages   = {1993--2024},
  year    = {2015},
  doi     = {10.1109/TMI.2014.2377694}
}"""
_BAKAS_2017 = """@article{bakas2017advancing,
  title   = {Advancing The Cancer Genome Atlas glioma MRI collections with expert segmentation labels and radiomic
             features},
  author  = {Bakas, Spyridon and Akbari, Hamed and Sotiras, Aristeidis and others},
  journal = {Scientific Data},
  volume  = {4},
  pages   = {170117},
  year    = {2017},
  doi     = {10.1038/sdata.2017.117}
}"""
_ANTONELLI_2022 = """@article{antonelli2022decathlon,
  title   = {The Medical Segmentation Decathlon},
  author  = {Antonelli, Michela and Reinke, Annika and Bakas, Spyridon and others},
  journal = {Nature Communications},
  volume  = {13},
  pages   = {4128},
  year    = {2022},
  doi     = {10.1038/s41467-022-30695-9}
}"""
_BAID_2021 = """@article{baid2021brats,
  title   = {The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and Radiogenomic Classification},
  author  = {Baid, Ujjwal and Ghodasara, Satyam and Mohan, Suyash and others},
  journal = {arXiv preprint arXiv:2107.02314},
  year    = {2021}
}"""
_OREILLER_2022 = """@article{oreiller2022hecktor,
  title   = {Head and neck tumor segmentation in PET/CT: The HECKTOR challenge},
  author  = {Oreiller, Valentin and Andrearczyk, Vincent and Jreige, Mario and others},
  journal = {Medical Image Analysis},
  volume  = {77},
  pages   = {102336},
  year    = {2022},
  doi     = {10.1016/j.media.2021.102336}
}"""
_KEBAILI_2023 = """@article{kebaili2023endtoend,
  title   = {End-to-end autoencoding architecture for the simultaneous generation of medical images and corresponding
             segmentation masks},
  author  = {Kebaili, Aghiles and Lapuyade-Lahorgue, J{\\'e}r{\\^o}me and Vera, Pierre and Ruan, Su},
  journal = {arXiv preprint arXiv:2311.10472},
  year    = {2023}
}"""


@dataclass(frozen=True)
class DataSource:
    """Where real slices come from, and the terms under which they (and data derived from them) may be shared.

    Attributes:
        name: The key users pass (``hvae-data prepare --data-source NAME``).
        title: What the source is, in words.
        license: Hub licence identifier (``"cc-by-sa-4.0"``, ``"other"`` for data-use terms, ``"unknown"``).
        license_name: Name of the terms when ``license`` is ``"other"``.
        license_link: Where the licence or terms are published.
        terms: One sentence on what the licence asks of whoever shares the slices.
        citations: BibTeX entries the source asks its users to cite.
    """

    name: str
    title: str
    license: str
    license_name: str | None
    license_link: str | None
    terms: str
    citations: tuple[str, ...]


DATA_SOURCES = {
    source.name: source
    for source in (
        DataSource(
            "msd-task01",
            "BraTS 2016/2017 brain tumour MRI as distributed in the Medical Segmentation Decathlon "
            "(Task01_BrainTumour, http://medicaldecathlon.com/)",
            "cc-by-sa-4.0",
            None,
            "https://creativecommons.org/licenses/by-sa/4.0/",
            "CC BY-SA 4.0: slices derived from it must credit the source and be shared under the same licence.",
            (_MENZE_2015, _BAKAS_2017, _ANTONELLI_2022),
        ),
        DataSource(
            "brats",
            "BraTS challenge brain tumour MRI (BraTS 2021 and the BraTS-GLI adult glioma releases, "
            "https://www.synapse.org/brats)",
            "other",
            "brats-data-terms",
            "https://www.synapse.org/brats",
            "The BraTS data-use terms: check that they allow sharing derived slices before publishing them.",
            (_MENZE_2015, _BAKAS_2017, _BAID_2021),
        ),
        DataSource(
            "hecktor",
            "HECKTOR head-and-neck PET/CT (https://hecktor.grand-challenge.org/)",
            "other",
            "hecktor-data-terms",
            "https://hecktor.grand-challenge.org/",
            "The HECKTOR data-use terms: check that they allow sharing derived slices before publishing them.",
            (_OREILLER_2022,),
        ),
        DataSource(
            "unknown",
            "data of unstated origin",
            "unknown",
            None,
            None,
            "Unknown: state the data's licence and citation in this card before sharing the slices.",
            (),
        ),
    )
}
# The source implied by a loader's detected layout (the dataset's `source` column), when a layout says it.
LAYOUT_SOURCES = {"msd": "msd-task01", "brats2021": "brats", "brats2023": "brats"}


def infer_data_source(kind: str, layouts: Sequence[str]) -> str:
    """The :data:`DATA_SOURCES` key that a loader ``kind`` and the layouts it detected imply, else ``"unknown"``.

    Args:
        kind: ``"brats"``, ``"hecktor"`` or ``"pairs"``.
        layouts: The values of the dataset's ``source`` column (``"msd"``, ``"brats2021"``, ``"glob"``, ...).
    """
    if kind == "hecktor":
        return "hecktor"
    implied = {LAYOUT_SOURCES.get(layout.removesuffix("-unlabelled"), "unknown") for layout in layouts}
    return implied.pop() if len(implied) == 1 else "unknown"


def size_category(count: int) -> str:
    """The Hub's ``size_categories`` bucket of ``count`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if count < limit:
            return name
    return "100K<n<1M"


def _card(data: DatasetCardData, sections: Sequence[str]) -> DatasetCard:
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _citation_section(citations: Sequence[str], missing: str) -> str:
    if not citations:
        return f"## Citation\n\n{missing}"
    return "## Citation\n\n```bibtex\n" + "\n\n".join(citations) + "\n```"


def _columns_section(columns: dict[str, str]) -> str:
    return "## Columns\n\n" + "\n".join(f"- `{name}`: {meaning}" for name, meaning in columns.items())


def prepared_dataset_card(
    source: DataSource,
    title: str,
    num_slices: int,
    num_patients: int,
    preprocessing: Sequence[str],
    columns: dict[str, str],
) -> DatasetCard:
    """The card of slices prepared from real data (``hvae-data prepare``).

    Args:
        source: Where the volumes or pictures come from (licence, citation).
        title: The dataset's name, e.g. ``"brats slices"``.
        num_slices: Rows of the dataset.
        num_patients: Distinct ``patient_id`` values.
        preprocessing: One sentence per preprocessing step.
        columns: Column name -> meaning.
    """
    licence = source.license_name or source.license
    data = DatasetCardData(
        license=source.license,
        pretty_name=title,
        task_categories=["image-segmentation"],
        annotations_creators=["expert-generated"] if source.name != "unknown" else None,
        size_categories=[size_category(num_slices)],
        tags=["medical-imaging", "tumour-segmentation", "hvae-pipeline"],
        **({"license_name": source.license_name} if source.license_name else {}),
        **({"license_link": source.license_link} if source.license_link else {}),
    )
    return _card(data, [
        f"# {title}",
        f"2D axial slices with tumour masks, prepared from {source.title} with `hvae-data prepare`.",
        f"## Source and licence\n\nSource: {source.title}. Licence: {licence}. {source.terms}",
        "## Preprocessing\n\n" + "\n".join(f"- {step}" for step in preprocessing),
        f"## Split\n\nOne split (`train` on the Hub) of {num_slices} slices from {num_patients} patients. It is not "
        "divided further: split it by patient (`hvae_pipeline.data.split_by_patient`, no patient in two splits) "
        "before training and evaluating, so that no patient's slices are on both sides.",
        _columns_section(columns),
        _citation_section(source.citations, "No citation is known for this data: add the one its source asks for."),
    ])


@dataclass(frozen=True)
class GeneratingModel:
    """The model that drew synthetic pairs, as a dataset card names it (no local folder paths).

    Attributes:
        name: Its Hub id, the name of its folder, or what the bundled or an untrained model is.
        license: The licence its model card states, or ``None`` when it has no card.
        datasets: The training datasets its model card lists.
    """

    name: str
    license: str | None
    datasets: tuple[str, ...] = ()


def synthetic_dataset_card(
    model: GeneratingModel, num_pairs: int, settings: dict[str, object], columns: dict[str, str]
) -> DatasetCard:
    """The card of pairs sampled from a generator (``hvae-generate --format dataset``).

    Args:
        model: The generating model.
        num_pairs: Rows of the dataset.
        settings: The sampling settings (seed, temperature, prior, mask threshold, minimum tumour area, ...).
        columns: Column name -> meaning.
    """
    licence = model.license or "unknown"
    # Known training sources are named and cited: CC BY-SA asks derived data to credit its source.
    known = [DATA_SOURCES[name] for name in model.datasets if name in DATA_SOURCES]
    trained_on = "; ".join(DATA_SOURCES[name].title if name in DATA_SOURCES else name for name in model.datasets)
    citations = [_KEBAILI_2023] + list(dict.fromkeys(entry for source in known for entry in source.citations))
    data = DatasetCardData(
        license=licence,
        pretty_name=f"Synthetic image + tumour-mask pairs from {model.name}",
        task_categories=["image-segmentation"],
        annotations_creators=["machine-generated"],
        size_categories=[size_category(num_pairs)],
        tags=["medical-imaging", "tumour-segmentation", "synthetic", "hvae-pipeline"],
        **({"source_datasets": list(model.datasets)} if model.datasets else {}),
    )
    return _card(data, [
        f"# Synthetic image + tumour-mask pairs from {model.name}",
        f"**{NOT_FOR_CLINICAL_USE}** {num_pairs} paired 2D slices and tumour masks drawn from a generative model with "
        "`hvae-generate`, meant to augment the training sets of segmentation networks. No pair shows a real patient; "
        "the images are not diagnostic.",
        f"## Generating model and licence\n\n- Model: {model.name}\n- Its licence: {licence} (the pairs are shared "
        f"under it: they derive from the model, and through it from its training data)\n- Its training data: "
        f"{trained_on or 'see the generating model card'}",
        "## Sampling\n\n" + "\n".join(f"- {name}: {value}" for name, value in settings.items()),
        f"## Split\n\nOne split (`train` on the Hub) of {num_pairs} synthetic pairs, all drawn from the same model; "
        "keep them out of any test set of real patients.",
        _columns_section(columns),
        _citation_section(citations, ""),
    ])
