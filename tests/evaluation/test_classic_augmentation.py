"""Classic augmentation keeps image and mask aligned, is seeded, and leaves runs without it unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from hvae_pipeline.evaluation.classic_augmentation import ClassicAugmentation
from hvae_pipeline.evaluation.segmentation import UNetSettings


def blobs(count: int, size: int = 64) -> torch.Tensor:
    """Masks ``(count, size, size)`` of one off-centre ellipse each, at different places and shapes."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    generator = torch.Generator().manual_seed(0)
    centres = 16 + 32 * torch.rand(count, 2, generator=generator)
    radii = 5 + 8 * torch.rand(count, 2, generator=generator)
    inside = ((rows - centres[:, 0, None, None]) / radii[:, 0, None, None]) ** 2 \
        + ((cols - centres[:, 1, None, None]) / radii[:, 1, None, None]) ** 2 < 1
    return inside.to(torch.uint8)


@pytest.mark.parametrize("seed", range(5))
def test_a_mask_shaped_image_stays_its_own_mask(seed):
    masks = blobs(32)
    images, moved_masks = ClassicAugmentation(seed)(masks[:, None].float(), masks)
    assert moved_masks.dtype == torch.uint8 and set(moved_masks.unique().tolist()) <= {0, 1}
    assert images.min() >= 0 and images.max() <= 1
    # The intensity changes are monotonic: thresholding the image half-way between its extremes gives its shape.
    low, high = images.amin(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))
    shape = images[:, 0] > ((low + high) / 2)[:, None, None]
    overlap = (shape & moved_masks.bool()).sum(dim=(1, 2))
    dice = 2 * overlap / (shape.sum(dim=(1, 2)) + moved_masks.sum(dim=(1, 2)))
    # Bilinear vs nearest resampling may differ on boundary pixels only.
    assert dice.min() > 0.95
    moved = (moved_masks != masks).flatten(1).any(dim=1)
    assert moved.float().mean() > 0.5  # and the slices were transformed (most of them, at these probabilities)


def test_flips_alone_move_image_and_mask_exactly_together():
    masks = blobs(64)
    images, moved_masks = ClassicAugmentation(3)(masks[:, None].float(), masks)
    unchanged_area = moved_masks.sum(dim=(1, 2)) == masks.sum(dim=(1, 2))
    # Slices that were only flipped (same area, a flip of the original) match their image pixel for pixel.
    checked = 0
    for index in torch.nonzero(unchanged_area).flatten().tolist():
        flips = [masks[index], masks[index].flip(0), masks[index].flip(1), masks[index].flip(0, 1)]
        if any(torch.equal(moved_masks[index], flipped) for flipped in flips):
            shape = images[index, 0] > (images[index].min() + images[index].max()) / 2
            assert torch.equal(shape, moved_masks[index].bool())
            checked += 1
    assert checked >= 10  # about half of the slices are not deformed


def test_same_seed_same_transforms_and_other_seed_other_ones():
    masks = blobs(8)
    images = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    first = ClassicAugmentation(7)(images, masks)
    again = ClassicAugmentation(7)(images, masks)
    other = ClassicAugmentation(8)(images, masks)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_augment_enters_the_unet_settings_only_when_used():
    assert "augment" not in UNetSettings().as_dict()
    assert UNetSettings(augment="classic").as_dict()["augment"] == "classic"
    assert "classic augmentation" in UNetSettings(augment="classic").describe()
    with pytest.raises(ValueError, match="augmentation 'elastic'"):
        UNetSettings(augment="elastic")


def test_augmentation_command_records_classic_runs_apart_from_plain_ones(tmp_path, capsys):
    pytest.importorskip("monai", reason="the downstream U-Net needs the eval extra (MONAI)")
    from evaluation_helpers import PHANTOM_DATA, QUIET, TINY_UNET

    from hvae_pipeline.cli.evaluate import main

    def augmentation(*extra: str) -> int:
        return main(["augmentation", "--out", str(tmp_path / "out"), "--counts", "0", "--num-seeds", "1",
                     *PHANTOM_DATA, *TINY_UNET, *QUIET, *extra])

    assert augmentation() == 0
    record = json.loads((tmp_path / "out" / "runs" / "augmentation__real-only__n0__seed0.json").read_text())
    assert "augment" not in record["settings"]["unet"]  # the identity of records made before the option existed
    assert augmentation("--augment", "classic") == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["augmentation", "--out", str(tmp_path / "classic"), "--counts", "0", "--num-seeds", "1",
                 "--augment", "classic", *PHANTOM_DATA, *TINY_UNET, *QUIET]) == 0
    record = json.loads((tmp_path / "classic" / "runs" / "augmentation__real-only__n0__seed0.json").read_text())
    assert record["settings"]["unet"]["augment"] == "classic"
    assert "classic augmentation" in (tmp_path / "classic" / "augmentation.md").read_text()
