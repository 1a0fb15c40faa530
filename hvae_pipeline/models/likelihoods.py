"""Per-sample log-likelihoods of images and masks given decoder outputs.

Each function returns a tensor of shape ``(B,)``: the log-likelihood summed over channels and pixels, as the paper's
ELBO is a sum over pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bernoulli_log_likelihood(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``sum log Bernoulli(targets; sigmoid(logits))``; targets may be continuous in ``[0, 1]`` (the paper's image
    likelihood, an unnormalised continuous Bernoulli)."""
    return -F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)


def gaussian_log_likelihood(mean: torch.Tensor, log_scale: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``sum log N(targets; mean, exp(log_scale)^2)``; ``log_scale`` broadcasts against ``mean`` (e.g. per channel)."""
    log_scale = log_scale.expand_as(mean)
    squared = ((targets - mean) * torch.exp(-log_scale)).pow(2)
    per_pixel = -0.5 * squared - log_scale - 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(dim=1)


def categorical_log_likelihood(logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """``sum log Categorical(class_ids; softmax(logits))`` with logits ``(B, C, H, W)`` and class ids ``(B, H, W)``."""
    return -F.cross_entropy(logits, class_ids, reduction="none").flatten(1).sum(dim=1)
