"""Reading uploads: pictures and NIfTI volumes are brought to the model's grid, wrong files get a clear refusal."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch

from hvae_pipeline.demo.uploads import DemoInputError, prepare_mask, prepare_slice
from hvae_pipeline.data import axial_slices


def _save_picture(path: Path, pixels: np.ndarray) -> Path:
    PIL.Image.fromarray(pixels).save(path)
    return path


def test_non_square_slice_is_padded_resized_and_normalised(tmp_path: Path) -> None:
    pixels = np.full((30, 40), 100, np.uint8)
    pixels[10:20, 15:25] = 200
    path = _save_picture(tmp_path / "slice.tif", pixels)

    prepared = prepare_slice(path, 0, image_channels=1, sample_size=16)

    assert prepared.image.shape == (1, 1, 16, 16) and prepared.image.dtype == torch.float32
    assert prepared.image.min() == 0.0 and prepared.image.max() == 1.0
    assert prepared.original_size == (30, 40)
    # The 30x40 slice sits in the middle rows of a 40x40 square filled with its minimum (100 -> 0 after min-max).
    assert (prepared.image[0, 0, :1] == 0).all() and (prepared.image[0, 0, -1:] == 0).all()
    assert prepared.image[0, 0, 8, 8] == 1.0
    assert prepared.notes == [
        "The 30x40 slice was centred on a square, padded with its minimum value.",
        "Resized 40x40 to 16x16 and min-max normalised (values 100..200 mapped to 0..1).",
    ]


def test_grey_stored_as_rgb_is_accepted_but_colour_is_refused(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    grey_rgb = _save_picture(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=2))
    colour = np.stack([grey, grey[::-1], grey.T], axis=2)

    prepared = prepare_slice(grey_rgb, 0, image_channels=1, sample_size=16)
    expected = (grey - grey.min()) / (grey.max() - grey.min())
    np.testing.assert_allclose(prepared.image[0, 0].numpy(), expected, atol=1e-6)
    assert "grey.png stores grey levels in 3 identical channels: one was used." in prepared.notes
    with pytest.raises(DemoInputError, match=r"colour.png has 3 channels but the model expects a greyscale"):
        prepare_slice(_save_picture(tmp_path / "colour.png", colour), 0, image_channels=1, sample_size=16)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", "notes.txt: unsupported file type. Upload a PNG or TIF slice"),
        ("broken.png", b"not a png", "broken.png: not a readable PNG/TIF picture"),
        ("broken.nii.gz", b"not a volume", "broken.nii.gz: not a readable NIfTI volume"),
    ],
)
def test_wrong_kind_of_file_is_refused_with_its_name(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(DemoInputError, match=message) as refusal:
        prepare_slice(path, 0, image_channels=1, sample_size=16)
    assert str(tmp_path) not in str(refusal.value)  # the upload's temporary folder means nothing to the user


def test_too_small_slice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DemoInputError, match="tiny.png is 4x4 pixels; slices between 8 and 2048"):
        prepare_slice(_save_picture(tmp_path / "tiny.png", np.zeros((4, 4), np.uint8)), 0, 1, 16)


def test_nifti_slice_is_read_in_the_training_orientation(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).random((16, 16, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "volume.nii.gz")

    prepared = prepare_slice(tmp_path / "volume.nii.gz", 3, image_channels=1, sample_size=16)

    shown = axial_slices(volume)[3]
    np.testing.assert_allclose(prepared.image[0, 0].numpy(), (shown - shown.min()) / (shown.max() - shown.min()), atol=1e-6)
    with pytest.raises(DemoInputError, match=r"slice index 5 is outside the volume, which has 5 axial slices \(0 to 4\)"):
        prepare_slice(tmp_path / "volume.nii.gz", 5, image_channels=1, sample_size=16)


def test_nifti_with_two_modalities_is_refused_by_a_one_channel_model(tmp_path: Path) -> None:
    flair_and_t1 = np.random.default_rng(2).random((16, 16, 2, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(flair_and_t1, np.eye(4)), tmp_path / "two.nii")

    with pytest.raises(DemoInputError, match="two.nii has 2 channels but the model expects a greyscale"):
        prepare_slice(tmp_path / "two.nii", 0, image_channels=1, sample_size=16)


def test_mask_is_resized_with_nearest_labels_and_checked_against_the_model(tmp_path: Path) -> None:
    labels = np.zeros((32, 32), np.uint8)
    labels[:16] = 2
    path = _save_picture(tmp_path / "labels.png", labels)

    multi_class = prepare_mask(path, 0, (32, 32), mask_channels=3, sample_size=16)
    binary = prepare_mask(path, 0, (32, 32), mask_channels=1, sample_size=16)

    assert multi_class.mask.shape == (1, 16, 16) and set(multi_class.mask.unique().tolist()) == {0, 2}
    assert (multi_class.mask[0, :8] == 2).all() and (multi_class.mask[0, 8:] == 0).all()
    assert set(binary.mask.unique().tolist()) == {0, 1}
    assert binary.notes == ["Mask values [0, 2] were read as tumour wherever non-zero."]
    with pytest.raises(DemoInputError, match="holds label 2 but the model knows classes 0 to 1 only"):
        prepare_mask(path, 0, (32, 32), mask_channels=2, sample_size=16)
    with pytest.raises(DemoInputError, match="labels.png is 32x32 but its slice is 30x40"):
        prepare_mask(path, 0, (30, 40), mask_channels=1, sample_size=16)


def test_mask_with_fractional_values_is_refused(tmp_path: Path) -> None:
    path = _save_picture(tmp_path / "soft.tif", np.full((16, 16), 0.5, np.float32))

    with pytest.raises(DemoInputError, match="soft.tif: a mask must hold non-negative integer labels"):
        prepare_mask(path, 0, (16, 16), mask_channels=1, sample_size=16)
