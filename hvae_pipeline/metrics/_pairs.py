"""Scoring many index pairs of two image batches with a per-pair metric, a chunk at a time."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# Pairs are scored in chunks so that the metric's intermediate maps stay small for thousands of pairs.
_PAIRS_PER_CHUNK = 256


def score_pairs(
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    first: torch.Tensor,
    second: torch.Tensor,
    first_index: np.ndarray,
    second_index: np.ndarray,
) -> np.ndarray:
    """Return ``metric(first[first_index[k]], second[second_index[k]])`` for every ``k`` as a numpy array."""
    scores = []
    for start in range(0, len(first_index), _PAIRS_PER_CHUNK):
        chunk = slice(start, start + _PAIRS_PER_CHUNK)
        first_chunk = first[torch.from_numpy(first_index[chunk]).to(first.device)]
        second_chunk = second[torch.from_numpy(second_index[chunk]).to(second.device)]
        scores.append(metric(first_chunk, second_chunk).cpu())
    return torch.cat(scores).numpy()
