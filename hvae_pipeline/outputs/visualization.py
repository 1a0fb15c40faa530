"""Pictures of paired samples: tumour overlays and image | mask | overlay grids (PIL, no plotting backend needed)."""

from __future__ import annotations

import numpy as np
import PIL.Image

# Distinct colours for tumour classes 1, 2, 3, ... (class 0 is background and stays transparent).
CLASS_COLOURS = np.array([[255, 64, 64], [64, 200, 255], [255, 220, 0], [160, 255, 96], [220, 96, 255]], np.float32)


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """``(..., H, W, 1)`` or ``(..., H, W, 3)`` floats in ``[0, 1]`` -> ``(..., H, W)`` grey or ``(..., H, W, 3)`` RGB
    uint8 pixels, as PNG files and PIL images hold them."""
    pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def to_grey_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` floats in ``[0, 1]`` -> ``(H, W)`` uint8 (first channel of multi-modal images)."""
    if image.ndim == 3:
        image = image[..., 0]
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Colour the tumour classes of ``mask`` ``(H, W)`` over a grey ``image``; returns ``(H, W, 3)`` uint8."""
    grey = to_grey_uint8(image).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for class_id in np.unique(mask):
        if class_id == 0:
            continue
        colour = CLASS_COLOURS[(int(class_id) - 1) % len(CLASS_COLOURS)]
        where = mask == class_id
        rgb[where] = (1 - alpha) * rgb[where] + alpha * colour
    return rgb.round().astype(np.uint8)


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """Class ids -> visible grey levels (binary masks become 0/255)."""
    top = max(int(mask.max()), 1)
    return (mask.astype(np.float32) * (255 / top)).round().astype(np.uint8)


def pair_strip(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One ``(H, 3W, 3)`` uint8 strip: image | mask | overlay."""
    grey = np.repeat(to_grey_uint8(image)[..., None], 3, axis=2)
    mask_rgb = np.repeat(mask_to_uint8(mask)[..., None], 3, axis=2)
    return np.concatenate([grey, mask_rgb, overlay(image, mask)], axis=1)


def sample_grid(images: np.ndarray, masks: np.ndarray, columns: int = 4, padding: int = 2) -> PIL.Image.Image:
    """A grid of image | mask | overlay strips.

    Args:
        images: ``(N, H, W, C)`` or ``(N, H, W)`` floats in ``[0, 1]``.
        masks: ``(N, H, W)`` class ids.
        columns: Strips per row.
        padding: White pixels between strips.
    """
    if len(images) == 0:
        raise ValueError("sample_grid needs at least one sample")
    strips = [pair_strip(image, mask) for image, mask in zip(images, masks)]
    height, width, _ = strips[0].shape
    columns = min(columns, len(strips))
    rows = -(-len(strips) // columns)
    canvas = np.full((rows * (height + padding) - padding, columns * (width + padding) - padding, 3), 255, np.uint8)
    for index, strip in enumerate(strips):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        canvas[top : top + height, left : left + width] = strip
    return PIL.Image.fromarray(canvas)
