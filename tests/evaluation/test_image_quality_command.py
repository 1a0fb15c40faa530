"""``hvae-evaluate image-quality`` on SYNTHETIC 32 x 32 phantoms with a tiny untrained generator (FID skipped)."""

from __future__ import annotations

import json
import math

import pytest
from evaluation_helpers import PHANTOM_DATA, QUIET, TINY_SAMPLING, TINY_UNET, save_tiny_generator

from hvae_pipeline.cli.evaluate import main
from hvae_pipeline.evaluation.image_quality import ms_ssim_kernel_size

pytest.importorskip("monai", reason="SSIM and MS-SSIM need the eval extra (MONAI)")


def test_writes_the_table_for_several_generators_and_resumes(tmp_path, capsys):
    first = save_tiny_generator(tmp_path / "first", seed=0)
    second = save_tiny_generator(tmp_path / "second", seed=1)
    # Areas of 32 x 32 masks are small: 10-px bins from 0 px instead of the paper's 25-px bins from 200 px.
    command = ["image-quality", "--generator", f"A={first}", "--generator", f"B={second}", "--out",
               str(tmp_path / "out"), "--num-samples", "20", "--diversity-pairs", "50", "--no-fid",
               "--area-bins-start", "0", "--area-bin-width", "10", *PHANTOM_DATA, *TINY_SAMPLING, *TINY_UNET, *QUIET]
    assert main(command) == 0
    summary = json.loads((tmp_path / "out" / "image_quality.json").read_text())
    assert list(summary["results"]) == ["A", "B"] and summary["num_real_test_slices"] == 16
    for result in summary["results"].values():
        assert result["num_samples"] == 20
        assert math.isfinite(result["psnr_mean"]) and 0 < result["psnr_std"]
        assert -1 <= result["ssim_mean"] <= 1
        assert result["fid"] is None and result["kid_mean"] is None
        assert result["not_computed"] == {"FID": "disabled (--no-fid)", "KID": "disabled (--no-fid)"}
        # TSTR: a U-Net trained on the 20 samples alone, scored on the 16 real test slices, over the reference.
        assert 0.0 <= result["tstr_dice"] <= 1.0
        assert result["tstr_ratio"] == pytest.approx(result["tstr_dice"] / summary["tstr_reference_dice"])
        assert 0 < result["ms_ssim_diversity"] <= 1 and result["ms_ssim_kernel_size"] == 2
        # Phantom tumours (< 60 px) and the untrained generator's masks (>= 110 px) share no 10-px bin.
        assert result["tumour_area_jsd"] == pytest.approx(1.0)
    assert summary["results"]["A"]["psnr_mean"] != summary["results"]["B"]["psnr_mean"]

    table = (tmp_path / "out" / "image_quality.md").read_text()
    assert ("| generator | PSNR (dB) | SSIM | FID | KID x 1000 | TSTR DSC (%) | TSTR / real-only | MS-SSIM diversity "
            "| tumour-area JSD |") in table
    reference = json.loads((tmp_path / "out" / "runs" / "image-quality__tstr-reference.json").read_text())
    assert reference["dice_mean"] == summary["tstr_reference_dice"] and reference["num_real_train_slices"] == 32
    assert f"scores {100 * reference['dice_mean']:.1f} %" in table
    row = next(line for line in table.splitlines() if line.startswith("| A |"))
    assert f"{summary['results']['A']['psnr_mean']:.2f} ± " in row and "not computed" in row
    assert "- A: FID not computed: disabled (--no-fid)" in table

    record = tmp_path / "out" / "runs" / "image-quality__A.json"
    before = record.stat().st_mtime_ns
    capsys.readouterr()
    assert main(command) == 0
    assert "0 generators scored, 2 already finished (skipped)" in capsys.readouterr().out
    assert record.stat().st_mtime_ns == before


def test_ms_ssim_window_shrinks_with_the_image_and_stops_below_32_px():
    assert [ms_ssim_kernel_size(side) for side in (16, 31, 32, 64, 128, 256)] == [None, None, 2, 4, 7, 7]


def test_image_quality_needs_only_test_patients_and_a_generator(tmp_path, capsys):
    code = main(["image-quality", "--out", str(tmp_path), "--data", "phantom", "--size", "32",
                 "--num-phantom-slices", "32", "--test-patients", "phantom-001", *QUIET])
    assert code == 2
    assert "give at least one generator" in capsys.readouterr().err

