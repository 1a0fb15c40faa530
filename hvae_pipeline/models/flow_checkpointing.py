"""Gradient checkpointing of the exact Hamiltonian flow: ``U`` and ``grad U`` evaluated without keeping their graphs.

Exact HVAE training differentiates the loss *through* every ``grad U(z_k)`` of the flow, so a plain implementation keeps
K + 1 decoder forward graphs plus their first-order backward graphs alive until the end of the step: the dominant
memory of the step. :func:`checkpointed_potential_and_gradient` returns the same values, and the same gradients, but
keeps nothing: its forward computes ``U`` and ``grad U`` without a second-order graph, and its backward rebuilds that
graph one chunk of the batch at a time (samples are independent), takes the needed vector-Jacobian products and frees
it. The peak memory of the flow becomes that of one chunk of one evaluation.

Compared with wrapping the evaluation in ``torch.utils.checkpoint`` (which this replaces), the forward pass runs the
decoder once per evaluation instead of twice: a non-reentrant checkpoint drops the activations that the first-order
``autograd.grad`` inside the evaluation needs, so it recomputes them already in forward.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

# A potential on some rows of the batch: ``(z_rows, rows) -> (U per sample, tuple of per-sample auxiliary tensors)``.
# It must be deterministic (no dropout): the backward pass recomputes it.
RowPotentialFn = Callable[[torch.Tensor, slice], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]


# The chunk when the free memory cannot be read (neither CUDA's allocator nor /proc/meminfo answers).
FALLBACK_CHUNK_SIZE = 4
# Peak bytes of recomputing one evaluation for one sample, per element of the decoder's forward activations (counted in
# float32): measured on an H200 as 3.9 (small network, fp32) and 3.5 (paper network, bf16 autocast), rounded up.
RECOMPUTE_BYTES_PER_ACTIVATION = 4 * 4
# Share of the free memory that the recomputed chunk may take (the rest: the step's other tensors; on a CPU, also the
# other processes of the machine).
RECOMPUTE_MEMORY_SHARE = 0.5


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory for tensors on ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of
    ``/proc/meminfo`` on a CPU; ``None`` where neither can be read (another accelerator, a system without procfs)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose_chunk_size(device_type: str, batch_size: int, activation_elements: int,
                      free_bytes: int | None) -> int | None:
    """The flow-checkpoint chunk that suits a device: the whole batch (``None``: fastest, 2-3x faster than chunks of
    4 on CUDA and ~1.5x on CPU, BENCHMARKS.md) when its recomputation fits in half the free memory, else the largest
    chunk that does; :data:`FALLBACK_CHUNK_SIZE` when the free memory is unknown.

    Args:
        device_type: ``"cuda"``, ``"cpu"``... (the rule is the same on every device; kept for the callers' logs).
        batch_size: Samples in the batch being evaluated.
        activation_elements: Elements of the decoder's forward activations for one sample.
        free_bytes: Free memory of the device (:func:`free_memory_bytes`), ``None`` if unknown.
    """
    if free_bytes is None:
        return FALLBACK_CHUNK_SIZE
    per_sample = RECOMPUTE_BYTES_PER_ACTIVATION * activation_elements
    fitting = int(RECOMPUTE_MEMORY_SHARE * free_bytes // max(per_sample, 1))
    return None if fitting >= batch_size else max(1, fitting)


def batch_chunks(batch_size: int, chunk_size: int | None) -> list[slice]:
    """Consecutive row slices of at most ``chunk_size`` rows covering ``batch_size`` rows (``None``: one slice)."""
    step = chunk_size or batch_size
    return [slice(start, min(start + step, batch_size)) for start in range(0, batch_size, step)]


def _evaluate(potential_fn: RowPotentialFn, z_rows: torch.Tensor, rows: slice, create_graph: bool) -> tuple:
    """``(U, grad U, aux)`` on some rows, with ``z_rows`` a fresh leaf."""
    point = z_rows.detach().requires_grad_(True)
    energy, aux = potential_fn(point, rows)
    (gradient,) = torch.autograd.grad(energy.sum(), point, create_graph=create_graph)
    return point, energy, gradient, tuple(aux)


class _CheckpointedEvaluation(torch.autograd.Function):
    """``(U, grad U, *aux)`` of ``potential_fn`` at ``z``, differentiable w.r.t. ``z`` and ``parameters``."""

    @staticmethod
    def forward(ctx: Any, potential_fn: RowPotentialFn, chunk_size: int | None, z: torch.Tensor,
                *parameters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.potential_fn, ctx.chunk_size = potential_fn, chunk_size
        # The backward pass recomputes under the same autocast state as this forward pass.
        ctx.device_type = z.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        ctx.save_for_backward(z, *parameters)
        pieces = []
        with torch.enable_grad():
            for rows in batch_chunks(z.shape[0], chunk_size):
                _, energy, gradient, aux = _evaluate(potential_fn, z[rows], rows, create_graph=False)
                pieces.append((energy.detach(), gradient, *(value.detach() for value in aux)))
        return tuple(torch.cat(parts) for parts in zip(*pieces))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *output_cotangents: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, *parameters = ctx.saved_tensors
        z_gradient = torch.zeros_like(z) if ctx.needs_input_grad[2] else None
        parameter_gradients: list[torch.Tensor | None] = [None] * len(parameters)
        for rows in batch_chunks(z.shape[0], ctx.chunk_size):
            with torch.enable_grad(), torch.autocast(ctx.device_type, ctx.autocast_dtype, enabled=ctx.autocast):
                point, energy, gradient, aux = _evaluate(ctx.potential_fn, z[rows], rows, create_graph=True)
            outputs = (energy, gradient, *aux)
            cotangents = tuple(cotangent[rows] for cotangent in output_cotangents)
            gradients = torch.autograd.grad(outputs, (point, *parameters), cotangents, allow_unused=True)
            if z_gradient is not None:
                z_gradient[rows] = gradients[0]
            for index, gradient_piece in enumerate(gradients[1:]):
                if gradient_piece is not None:
                    current = parameter_gradients[index]
                    parameter_gradients[index] = gradient_piece if current is None else current + gradient_piece
        return None, None, z_gradient, *parameter_gradients


def checkpointed_potential_and_gradient(
    potential_fn: RowPotentialFn,
    z: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """``(U(z), grad U(z), aux)`` as :func:`hvae_pipeline.models.hamiltonian.potential_and_gradient` with
    ``create_graph=True`` computes them, with the same gradients, but without keeping any graph between forward and
    backward.

    Args:
        potential_fn: ``(z_rows, rows) -> (U, aux)`` on the rows ``rows`` of the batch; ``aux`` a tuple of tensors
            whose first axis is the batch. Must be deterministic.
        z: Latent batch ``(B, ...)``.
        parameters: Every tensor ``potential_fn`` depends on that needs a gradient (e.g. the decoder's parameters);
            tensors it does not use get no gradient.
        chunk_size: Samples per recomputed chunk (``None``: the whole batch). Smaller chunks lower the peak memory.
    """
    energy, gradient, *aux = _CheckpointedEvaluation.apply(potential_fn, chunk_size, z, *parameters)
    return energy, gradient, tuple(aux)
