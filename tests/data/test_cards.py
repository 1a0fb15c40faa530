"""Dataset cards and the preview column of prepared slices (``hvae-data prepare``): licence, citation, source,
preprocessing and split, in the Hub's format, with no folder of the machine in them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_from_disk
from huggingface_hub import DatasetCard

from hvae_pipeline.cli.data import main
from hvae_pipeline.data import make_phantom_slices
from hvae_pipeline.data.cards import DATA_SOURCES, infer_data_source, size_category
from hvae_pipeline.outputs.export import add_preview_column
from hvae_pipeline.outputs.visualization import overlay

SMALL = ["--size", "32", "--depth", "16"]


def prepare(kind, root, out, *extra) -> int:
    return main(["prepare", kind, str(root), "--out", str(out), *SMALL, *extra])


def test_brats_card_states_the_terms_citations_preprocessing_and_split(phantom_trees, tmp_path):
    out = tmp_path / "prepared"
    assert prepare("brats", phantom_trees["brats2021"], out, "--min-tumour-area", "5") == 0

    card = DatasetCard.load(out / "dataset" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "brats-data-terms"
    assert card.data.license_link == "https://www.synapse.org/brats"
    assert card.data.task_categories == ["image-segmentation"] and card.data.size_categories == ["n<1K"]
    text = card.text
    for citation in ("menze2015brats", "bakas2017advancing", "baid2021brats"):
        assert citation in text
    assert "resampled to 32 x 32 x 16 voxels" in text and "at least 5 tumour pixels" in text
    assert "min-max normalised per slice" in text and "Channels (modalities, in order): flair; target label" in text
    dataset = load_from_disk(str(out / "dataset"))
    patients = len(set(dataset["patient_id"]))
    assert f"One split (`train` on the Hub) of {len(dataset)} slices from {patients} patients" in text
    assert str(tmp_path) not in card.content and str(phantom_trees["brats2021"].parent) not in card.content


def test_prepared_rows_hold_no_machine_paths_and_a_preview(phantom_trees, tmp_path):
    out = tmp_path / "prepared"
    assert prepare("brats", phantom_trees["msd"], out) == 0
    dataset = load_from_disk(str(out / "dataset"))
    assert dataset.column_names == ["image", "mask", "patient_id", "slice_index", "tumour_area", "source", "preview"]
    rows = dataset.remove_columns(["image", "mask", "preview"]).to_list()
    assert str(phantom_trees["msd"].parent) not in json.dumps(rows) and {row["source"] for row in rows} == {"msd"}
    stored = dataset.with_format("numpy")[0]
    preview = dataset[0]["preview"]
    assert preview.mode == "RGB" and preview.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(preview), overlay(stored["image"][0], stored["mask"]))
    card = DatasetCard.load(out / "dataset" / "README.md")
    assert card.data.license == "cc-by-sa-4.0" and "antonelli2022decathlon" in card.text  # MSD: CC BY-SA 4.0


def test_unknown_origin_is_said_and_can_be_given(phantom_trees, tmp_path, capsys):
    guessed, given = tmp_path / "guessed", tmp_path / "given"
    patterns = ["--image-glob", "images/{case}_Tumor.nii.gz", "--label-glob", "labels/{case}_Seg.nii.gz"]
    assert prepare("brats", phantom_trees["glob"], guessed, *patterns) == 0
    assert "Pass --data-source (brats, hecktor, msd-task01, unknown)" in capsys.readouterr().err
    card = DatasetCard.load(guessed / "dataset" / "README.md")
    assert card.data.license == "unknown" and "No citation is known for this data" in card.text

    assert prepare("brats", phantom_trees["glob"], given, *patterns, "--data-source", "msd-task01") == 0
    assert "warning" not in capsys.readouterr().err
    card = DatasetCard.load(given / "dataset" / "README.md")
    assert card.data.license == "cc-by-sa-4.0" and "Medical Segmentation Decathlon" in card.text


@pytest.mark.parametrize("kind, layouts, expected", [
    ("brats", ["msd"], "msd-task01"),
    ("brats", ["brats2021", "brats2023"], "brats"),
    ("brats", ["brats2021-unlabelled"], "brats"),
    ("brats", ["msd", "brats2021"], "unknown"),  # mixed sources: no single licence
    ("brats", ["glob"], "unknown"),
    ("hecktor", ["hecktor2022"], "hecktor"),
    ("pairs", ["pairs"], "unknown"),
])
def test_data_source_implied_by_the_layout(kind, layouts, expected):
    assert infer_data_source(kind, layouts) == expected
    assert expected in DATA_SOURCES


def test_size_categories_follow_the_hubs_buckets():
    assert [size_category(n) for n in (1, 999, 1000, 50_000, 200_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M"]


def test_preview_column_colours_every_class_over_the_first_channel():
    slices = make_phantom_slices(3, size=16, num_classes=3, seed=0)
    with_preview = add_preview_column(slices)
    stored = slices.with_format("numpy")
    for index in range(3):
        expected = overlay(stored[index]["image"][0], stored[index]["mask"])
        np.testing.assert_array_equal(np.asarray(with_preview[index]["preview"]), expected)
