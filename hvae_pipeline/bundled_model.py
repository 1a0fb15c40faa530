"""The bundled default model, and a clearly labelled untrained fallback while none is bundled."""

from __future__ import annotations

import logging

from .hub.bundled_checkpoint import BUNDLED_CHECKPOINT, has_bundled_checkpoint
from .hub.model_card import pipeline_title
from .models import HVAEModel
from .pipeline import HVAEPipeline

logger = logging.getLogger(__name__)

# Network of the CPU-trainable configuration (training/configs/cpu-128.yaml), used for the untrained fallback.
SMALL_MODEL_CONFIG = dict(
    sample_size=128,
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=1,
    attention_levels=(False, False, False, True),
    num_attention_heads=4,
    attention_head_dim=32,
)


def load_pipeline(model: str | None = None, allow_untrained: bool = True) -> tuple[HVAEPipeline, str]:
    """Load a pipeline by path or Hub id, or the bundled default.

    Args:
        model: A folder written by ``save_pretrained``, a Hub repository id, or ``None`` for the bundled model.
        allow_untrained: When ``model`` is ``None`` and no model is bundled, return a freshly initialised model
            (its samples are noise) instead of raising.

    Returns:
        ``(pipeline, description)`` where ``description`` says plainly what was loaded: the model's name in its card
        and where it came from (the bundled model, a folder's name or a Hub id), never a path of this machine.
    """
    if model is not None or has_bundled_checkpoint():
        pipeline = HVAEPipeline.from_pretrained(str(BUNDLED_CHECKPOINT) if model is None else model)
        return pipeline, pipeline_title(pipeline)
    if not allow_untrained:
        raise FileNotFoundError(f"no bundled default model at {BUNDLED_CHECKPOINT}; pass a model path or Hub id")
    logger.warning("No trained default model is bundled yet: sampling from an UNTRAINED model (its output is noise).")
    untrained = HVAEModel(**SMALL_MODEL_CONFIG).eval()
    return HVAEPipeline(untrained), "UNTRAINED randomly initialised model (no trained default model is bundled yet)"
