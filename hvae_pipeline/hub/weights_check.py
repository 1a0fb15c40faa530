"""Checks of loaded weights, so a broken checkpoint fails at load time rather than sampling garbage.

diffusers' ``from_pretrained`` only logs a warning when the weights file lacks a tensor of the model (that layer
keeps its random initialisation) or holds tensors the model does not use, and it loads NaN/inf weights as they are,
which then decode to black images and empty masks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors import safe_open

from ..models.inputs import name_list


class CorruptWeightsError(OSError):
    """A loaded model whose weights file does not match it or whose weights are not finite."""


def non_finite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``module`` holding NaN or infinite values."""
    return [name for name, tensor in module.state_dict().items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def weights_file_mismatch(module: torch.nn.Module, folder: Path) -> tuple[list[str], list[str]]:
    """Tensors of ``module`` absent from the safetensors weights in ``folder``, and tensors there it does not have.

    Args:
        module: The loaded model.
        folder: Its component folder (``config.json`` and ``diffusion_pytorch_model*.safetensors``: a single file,
            shards, or variants such as ``fp16``, whose names are pooled). Without safetensors files both lists are
            empty.

    Returns:
        ``(missing, unexpected)``, each sorted.
    """
    stem = SAFETENSORS_WEIGHTS_NAME.removesuffix(".safetensors")
    stored: set[str] = set()
    for path in Path(folder).glob(f"{stem}*.safetensors"):
        with safe_open(str(path), framework="pt") as weights:
            stored.update(weights.keys())
    if not stored:
        return [], []
    expected = set(module.state_dict())
    return sorted(expected - stored), sorted(stored - expected)


def check_loaded_weights(module: torch.nn.Module, component: str) -> None:
    """Raise :class:`CorruptWeightsError` when ``module``'s weights file does not match it or a weight is not finite.

    Args:
        module: A model loaded with ``from_pretrained`` (its ``config._name_or_path`` is the folder it came from).
        component: Its name in the pipeline (``"model"``), for the message.
    """
    folder = Path(module.config._name_or_path)
    missing, unexpected = weights_file_mismatch(module, folder)
    if missing or unexpected:
        parts = (_counted("missing", missing), _counted("unexpected", unexpected))
        mismatch = "; ".join(part for part in parts if part)
        raise CorruptWeightsError(
            f"the weights of {component!r} in {folder} do not match its config.json: {mismatch}; "
            "the file is truncated or belongs to another architecture: save the pipeline again or load the matching "
            "config"
        )
    broken = non_finite_tensors(module)
    if broken:
        raise CorruptWeightsError(
            f"the weights of {component!r} in {folder} hold NaN or infinite values: {_counted('affected', broken)}; "
            "training diverged or the file is corrupt: load an earlier checkpoint"
        )


def _counted(kind: str, names: list[str]) -> str:
    """``"7 missing tensors (a, b, c, d, e and 2 more)"``, or ``""`` for no names."""
    return f"{len(names)} {kind} tensor{'s' if len(names) > 1 else ''} ({name_list(names)})" if names else ""
