"""Streaming: hvae-generate writes each batch before sampling the next, so memory does not grow with --num-samples,
and the pairs are those the pipeline returns in one call."""

from __future__ import annotations

import csv

import numpy as np
import PIL.Image
import pytest
import torch

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.cli import generate


@pytest.mark.parametrize("min_tumour_area", [0, 40])
def test_sample_batches_yields_the_pairs_of_one_call(tiny_pipeline_folder, min_tumour_area):
    pipeline = HVAEPipeline.from_pretrained(str(tiny_pipeline_folder))
    pipeline.set_progress_bar_config(disable=True)
    settings = dict(num_samples=7, batch_size=3, min_tumour_area=min_tumour_area, output_type="np")
    whole = pipeline(generator=torch.Generator().manual_seed(2), **settings)
    batches = list(pipeline.sample_batches(generator=torch.Generator().manual_seed(2), **settings))
    assert all(1 <= len(batch.images) <= 3 for batch in batches)
    np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), whole.images)
    np.testing.assert_array_equal(np.concatenate([b.masks for b in batches]), whole.masks)
    np.testing.assert_array_equal(np.concatenate([b.tumour_areas for b in batches]), whole.tumour_areas)


def test_generate_writes_each_batch_before_sampling_the_next(tiny_pipeline_folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    on_disk = []  # pairs already written when each batch is decoded
    decode_latents = HVAEPipeline.decode_latents

    def counting_decode(self, latents, mask_threshold=0.5):
        on_disk.append(len(list(tmp_path.glob(".out.*/images/*"))))
        return decode_latents(self, latents, mask_threshold)

    monkeypatch.setattr(HVAEPipeline, "decode_latents", counting_decode)
    argv = ["--model", str(tiny_pipeline_folder), "--num-samples", "19", "--batch-size", "4", "--min-tumour-area", "0",
            "--out", str(out)]
    assert generate.main(argv) == 0
    assert on_disk == [0, 4, 8, 12, 16]
    with open(out / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == [f"images/sample_{index:05d}.png" for index in range(19)]
    for row in rows:
        assert int(row["tumour_area"]) == int((np.array(PIL.Image.open(out / row["mask"])) > 0).sum())
    assert (out / "preview.png").is_file() and len(list((out / "masks").iterdir())) == 19
