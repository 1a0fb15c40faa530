"""Distribution distance between the tumour areas of real and generated masks."""

from __future__ import annotations

import numpy as np
import scipy.spatial.distance
import torch

from ._validation import ArrayLike, as_label_maps, check_positive_int


def _areas(masks: ArrayLike, name: str) -> torch.Tensor:
    return as_label_maps(masks, name, num_labels=2).flatten(1).sum(dim=1)


def tumour_areas(masks: ArrayLike) -> torch.Tensor:
    """Tumour area in pixels ``(N,)`` (long) of binary masks ``(N, H, W)`` or ``(N, 1, H, W)``, values 0/1 or bool."""
    return _areas(masks, "masks")


def tumour_area_jsd(
    real_masks: ArrayLike,
    generated_masks: ArrayLike,
    bin_width: int = 25,
    start: int = 0,
) -> float:
    """Jensen-Shannon divergence (base 2, in ``[0, 1]``) between the tumour-area histograms of two mask sets.

    Areas are pixel counts per mask. Both sets share the bins ``[start, start + bin_width), ...`` up to the largest
    area of either set; when ``start > 0`` one more bin ``[0, start)`` collects the smaller areas (empty masks
    included), so no mask is dropped. Each histogram is normalised to a probability vector ``p`` / ``q`` and
    ``JSD = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2`` and base-2 logarithms: 0 for identical area
    distributions, 1 when no bin holds areas of both sets. The paper's data protocol bins areas from 200 px in
    steps of 25 px (``start=200``).

    Args:
        real_masks: Real binary masks ``(N_real, H, W)`` or ``(N_real, 1, H, W)``, values 0/1 or bool.
        generated_masks: Generated binary masks (thresholded, e.g. ``mask > 0.5``), same format; sizes may differ.
        bin_width: Bin width in pixels.
        start: Left edge of the first regular bin in pixels.
    """
    check_positive_int(bin_width, "bin_width")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"`start` must be a non-negative integer, got {start!r}")
    real_areas = _areas(real_masks, "real_masks").cpu().numpy()
    generated_areas = _areas(generated_masks, "generated_masks").cpu().numpy()
    largest_area = max(real_areas.max(), generated_areas.max(), start)
    # The last edge lies strictly above the largest area so that it falls inside a bin of full width.
    edges = np.arange(start, largest_area + bin_width + 1, bin_width)
    if start > 0:
        edges = np.concatenate([[0], edges])
    real_histogram, _ = np.histogram(real_areas, bins=edges)
    generated_histogram, _ = np.histogram(generated_areas, bins=edges)
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence; it normalises the histograms.
    distance = scipy.spatial.distance.jensenshannon(real_histogram, generated_histogram, base=2)
    return float(distance**2)
