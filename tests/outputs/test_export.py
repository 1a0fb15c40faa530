"""hvae_pipeline.outputs.export: the one writer of samples (PNG/NIfTI pairs, datasets, zip, manifest) behind the CLI, the demo
and the Python API; staged and renamed, never deleting files it did not write."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch
from datasets import load_from_disk
from huggingface_hub import DatasetCard
from model_helpers import TINY_CONFIG

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.outputs.export import FOLDER_OUTPUTS, export_samples, nifti_bytes, write_samples_zip
from hvae_pipeline.outputs.visualization import image_to_uint8
from hvae_pipeline.storage.output_folder import OutputFolderError


@pytest.fixture(scope="module")
def pipeline() -> HVAEPipeline:
    torch.manual_seed(0)
    pipeline = HVAEPipeline(HVAEModel(**TINY_CONFIG).eval())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def draw(pipeline: HVAEPipeline, output_type: str, num_samples: int = 3):
    return pipeline(num_samples=num_samples, generator=torch.Generator().manual_seed(0), output_type=output_type)


def files(folder) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_numpy_and_tensor_samples_export_to_the_same_files(pipeline, tmp_path):
    rows = export_samples(draw(pipeline, "np"), tmp_path / "np", settings={"seed": 0})
    export_samples(draw(pipeline, "pt"), tmp_path / "pt", settings={"seed": 0})
    assert files(tmp_path / "np") == files(tmp_path / "pt")
    assert sorted(files(tmp_path / "np")) == ["images/sample_00000.png", "images/sample_00001.png",
                                              "images/sample_00002.png", "manifest.csv", "manifest.json",
                                              "masks/sample_00000.png", "masks/sample_00001.png",
                                              "masks/sample_00002.png", "preview.png"]
    samples = draw(pipeline, "np")
    for row, image, mask, area in zip(rows, samples.images, samples.masks, samples.tumour_areas):
        np.testing.assert_array_equal(np.array(PIL.Image.open(tmp_path / "np" / row["image"])), image_to_uint8(image))
        np.testing.assert_array_equal(np.array(PIL.Image.open(tmp_path / "np" / row["mask"])), mask)
        assert row["tumour_area"] == area


def test_pil_output_is_the_exported_pixels(pipeline):
    pictures, arrays = draw(pipeline, "pil"), draw(pipeline, "np")
    for picture, image in zip(pictures.images, arrays.images):
        assert picture.mode == "L"
        np.testing.assert_array_equal(np.asarray(picture), image_to_uint8(image))
    assert image_to_uint8(np.array([[[0.0, 0.5, 1.0]]])).tolist() == [[[0, 128, 255]]]  # RGB kept, rounded


def test_pil_samples_are_refused(pipeline, tmp_path):
    with pytest.raises(ValueError, match="output_type='np' or 'pt'"):
        export_samples(draw(pipeline, "pil"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_never_deletes_files_it_did_not_write(pipeline, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(OutputFolderError, match="holds files this tool did not write"):
        export_samples(draw(pipeline, "np"), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
    earlier = tmp_path / "earlier"
    export_samples(draw(pipeline, "np", 3), earlier)
    with pytest.raises(OutputFolderError, match="is not empty"):
        export_samples(draw(pipeline, "np", 1), earlier)
    export_samples(draw(pipeline, "np", 1), earlier, "nifti", overwrite=True)
    assert sorted(files(earlier)) == ["images/sample_00000.nii.gz", "manifest.csv", "manifest.json",
                                      "masks/sample_00000.nii.gz", "preview.png"]
    assert "dataset/**" in FOLDER_OUTPUTS


def test_dataset_export_names_the_pipeline_and_has_a_card(pipeline, tmp_path):
    export_samples(draw(pipeline, "np", 2), tmp_path / "out", "dataset", pipeline=pipeline, settings={"seed": 0})
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert dataset["source"] == ["synthetic:an untrained model (random weights)"] * 2
    card = DatasetCard.load(tmp_path / "out" / "dataset" / "README.md")
    assert card.data.license == "unknown" and "Synthetic, not for clinical use." in card.text


def test_nifti_files_are_reproducible():
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert nifti_bytes(volume) == nifti_bytes(volume)  # no time stamp in the gzip header
    image = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(volume)))
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume)


def test_zip_is_the_only_file_of_its_folder_and_its_manifest_matches(pipeline, tmp_path):
    samples = draw(pipeline, "np", 2)
    path = write_samples_zip(tmp_path / "archive", "samples.zip", samples.images, samples.masks, samples.tumour_areas,
                             {"model": "tiny"}, seed=0)
    assert path == tmp_path / "archive" / "samples.zip" and [p.name for p in path.parent.iterdir()] == ["samples.zip"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive"]  # the staging folder was renamed
    with zipfile.ZipFile(path) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert sorted(archive.namelist()) == ["images.nii.gz", "images/sample_00000.png", "images/sample_00001.png",
                                              "manifest.csv", "manifest.json", "masks.nii.gz",
                                              "masks/sample_00000.png", "masks/sample_00001.png"]
    assert [(row["index"], row["nifti_slice"], row["seed"]) for row in rows] == [("0", "0", "0"), ("1", "1", "0")]
