"""Dice similarity coefficient (DSC) of segmentations, per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validation import ArrayLike, as_label_maps, check_same_shape


def dice_score(
    prediction: ArrayLike,
    target: ArrayLike,
    num_classes: int = 2,
    empty_score: float = 1.0,
) -> torch.Tensor:
    """Per-sample Dice ``2 |P & T| / (|P| + |T|)`` of predicted against target masks, background excluded.

    Empty-vs-empty convention: when neither the prediction nor the target contains a class, the Dice of that
    class is ``empty_score``, by default 1.0 (the segmenter correctly finds no tumour; MONAI's ``DiceMetric`` with
    ``ignore_empty=False`` does the same). Pass ``float("nan")`` to leave such cases out of a ``nanmean`` instead.
    An empty target with a non-empty prediction (or the reverse) scores 0.

    Args:
        prediction: Predicted masks ``(N, H, W)`` or ``(N, 1, H, W)``: 0/1 (or bool) for ``num_classes=2``,
            integer labels in ``[0, num_classes)`` otherwise. Threshold probabilities first.
        target: Ground-truth masks in the same format and shape.
        num_classes: Number of labels, background 0 included: 2 for binary tumour masks.
        empty_score: Dice reported when a class is absent from both prediction and target.

    Returns:
        ``float64`` tensor: ``(N,)`` for binary masks, ``(N, num_classes - 1)`` (classes ``1 .. num_classes - 1``)
        otherwise.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2 (background included), got {num_classes!r}")
    prediction = as_label_maps(prediction, "prediction", num_classes)
    target = as_label_maps(target, "target", num_classes)
    check_same_shape(prediction, target, "prediction", "target")
    # One-hot (N, H*W, K), then drop the background channel: Dice is reported for the foreground classes only.
    predicted_hot = F.one_hot(prediction.flatten(1), num_classes)[..., 1:].to(torch.float64)
    target_hot = F.one_hot(target.flatten(1), num_classes)[..., 1:].to(torch.float64)
    overlap = (predicted_hot * target_hot).sum(dim=1)
    total = predicted_hot.sum(dim=1) + target_hot.sum(dim=1)
    empty = torch.full_like(total, float(empty_score))
    scores = torch.where(total > 0, 2.0 * overlap / total.clamp(min=1.0), empty)
    return scores[:, 0] if num_classes == 2 else scores
