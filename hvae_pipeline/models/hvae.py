"""The joint image + mask Hamiltonian VAE as a diffusers model.

Image and mask are channels of one input (the mask one-hot encoded when multi-class), seen by one encoder and produced
by one decoder, as in Kebaili et al. (arXiv 2311.10472). The posterior sample is refined by a tempered Hamiltonian flow
(:mod:`hvae_pipeline.models.hamiltonian`). ``n_leapfrog=0, beta_zero=1`` is the ordinary VAE, with the same interface.

This module's path is recorded in saved pipelines (``model_index.json``): do not move the class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor

from .flow_checkpointing import checkpointed_potential_and_gradient, choose_chunk_size, free_memory_bytes
from .hamiltonian import (
    FlowOutput,
    diagonal_gaussian_log_density,
    hamiltonian_flow,
    quadratic_temperature_schedule,
    standard_normal_log_density,
)
from .likelihoods import bernoulli_log_likelihood, categorical_log_likelihood, gaussian_log_likelihood
from .inputs import NETWORK_CONFIG_KINDS, ConfigFileChecked, check_config_types, check_count, pair_to_channels
from .blocks import Decoder, Encoder

IMAGE_LIKELIHOODS = ("bernoulli", "gaussian")
FLOW_GRADIENTS = ("exact", "detached")


@dataclass
class HVAEEncoderOutput(BaseOutput):
    """Output of :meth:`HVAEModel.encode`.

    Args:
        latent_dist: Diagonal Gaussian posterior ``q(z | x, m)`` (``.mean``, ``.std``, ``.sample(generator)``,
            ``.mode()``, ``.kl()`` against ``N(0, I)``), latent shape ``(B, latent_channels, s, s)``.
    """

    latent_dist: DiagonalGaussianDistribution


@dataclass
class HVAEDecoderOutput(BaseOutput):
    """Output of :meth:`HVAEModel.decode`.

    Args:
        images: ``(B, image_channels, H, W)`` in ``[0, 1]`` (Bernoulli or Gaussian mean).
        mask_logits: ``(B, mask_channels, H, W)``: one logit per pixel for a binary mask, per-class logits otherwise.
        image_logits: ``(B, image_channels, H, W)``, the pre-sigmoid image outputs.
    """

    images: torch.Tensor
    mask_logits: torch.Tensor
    image_logits: torch.Tensor


@dataclass
class HVAEOutput(BaseOutput):
    """Output of :meth:`HVAEModel.forward`.

    The ELBO of each sample decomposes as ``elbo = image_log_likelihood + mask_log_likelihood - kl + flow_gain``.

    Args:
        loss: Scalar ``-elbo.mean()``, to minimise.
        elbo: ``(B,)`` evidence lower bound on ``log p(x, m)`` (nats).
        image_log_likelihood: ``(B,)`` ``log p(x | z_K)``.
        mask_log_likelihood: ``(B,)`` ``log p(m | z_K)``.
        kl: ``(B,)`` analytic ``KL(q(z_0 | x, m) || N(0, I))``.
        flow_gain: ``(B,)`` ``[log p(z_K) - log p(z_0)] + [log N(rho_K) - log N(gamma_0)]``: what the Hamiltonian flow
            adds to the VAE bound (exactly 0 when ``n_leapfrog=0``).
        z: ``(B, latent_channels, s, s)`` the latent after the flow, ``z_K``.

    Fields after ``loss`` default to ``None`` only so that the output can be rebuilt from a dict, as Accelerate's
    mixed-precision wrapper does (``type(output)(dict)``); the model always fills every field.
    """

    loss: torch.Tensor
    elbo: torch.Tensor | None = None
    image_log_likelihood: torch.Tensor | None = None
    mask_log_likelihood: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    flow_gain: torch.Tensor | None = None
    z: torch.Tensor | None = None


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Promote half-precision network outputs (under bf16/fp16 autocast) to float32.

    The latent arithmetic of the flow and the per-pixel log-likelihood sums must stay in float32: bf16 keeps 8 bits of
    mantissa, so a leapfrog update ``eps * momentum`` with ``eps ~ 1e-3`` added to ``z ~ 1`` would round away.
    """
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def split_decoder_logits(logits: torch.Tensor, image_channels: int) -> HVAEDecoderOutput:
    """Split joint decoder logits into images (sigmoid, in ``[0, 1]``) and mask logits (at least float32)."""
    logits = at_least_float32(logits)
    image_logits, mask_logits = logits[:, :image_channels], logits[:, image_channels:]
    return HVAEDecoderOutput(images=torch.sigmoid(image_logits), mask_logits=mask_logits, image_logits=image_logits)



class HVAEModel(ConfigFileChecked, ModelMixin, ConfigMixin):
    r"""Hamiltonian VAE over (image, tumour mask) pairs.

    Args:
        image_channels: Number of image channels (modalities), e.g. 1 for FLAIR.
        mask_channels: 1 for a binary mask (Bernoulli likelihood); ``C > 1`` for ``C`` classes, background included
            (categorical likelihood over one-hot channels).
        sample_size: Height and width of the square slices.
        block_out_channels: Channels of each encoder level (the decoder mirrors them); there are
            ``len(block_out_channels) - 1`` downsamplings.
        layers_per_block: Residual blocks per level.
        attention_levels: Whether each level has self-attention after its residual blocks.
        latent_channels: Channels of the latent map (the latent is ``latent_channels x s x s``).
        n_leapfrog: Number of leapfrog steps ``K`` of the Hamiltonian flow (0: plain VAE).
        step_size: Leapfrog step size ``eps`` (initial value when learnt).
        learn_step_size: Learn one step size per latent dimension, kept in ``(0, max_step_size)`` by a sigmoid.
        beta_zero: Initial inverse temperature of the momentum, in ``(0, 1]``; 1 means no tempering.
        learn_beta_zero: Learn ``beta_zero``, kept in ``(0, 1)`` by a sigmoid.
        image_likelihood: ``"bernoulli"`` (the paper's, on intensities in ``[0, 1]``) or ``"gaussian"`` (mean
            ``sigmoid(logits)``, one learnt scale per channel).
        max_step_size: Upper bound of a learnt step size.
        num_attention_heads: Heads of each self-attention layer.
        attention_head_dim: Channels per attention head.
        norm_num_groups: Groups of every GroupNorm.
        flow_gradient: ``"exact"`` differentiates the loss through ``grad U`` (second order, the HVAE as published);
            ``"detached"`` treats ``grad U`` as a constant: cheaper, but a *biased* gradient estimator.
        decoder_block_out_channels: Channels of each decoder level, listed as the encoder's (from the full-resolution
            level down, one entry per level of ``block_out_channels``); ``None`` mirrors the encoder. A wider decoder
            alone spends capacity where the samples are made, not on the posterior.

    Gradient checkpointing (``enable_gradient_checkpointing()``) recomputes encoder and decoder blocks in backward and,
    for the exact flow, each evaluation of ``U`` and ``grad U``, ``flow_checkpoint_chunk_size`` samples at a time;
    gradients are unchanged (see BENCHMARKS.md for what it saves and costs).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_channels: int = 1,
        mask_channels: int = 1,
        sample_size: int = 128,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        attention_levels: Sequence[bool] = (False, False, False, True),
        latent_channels: int = 3,
        n_leapfrog: int = 3,
        step_size: float = 1e-3,
        learn_step_size: bool = False,
        beta_zero: float = 0.3,
        learn_beta_zero: bool = False,
        image_likelihood: str = "bernoulli",
        max_step_size: float = 0.5,
        num_attention_heads: int = 8,
        attention_head_dim: int = 32,
        norm_num_groups: int = 8,
        flow_gradient: str = "exact",
        decoder_block_out_channels: Sequence[int] | None = None,
    ) -> None:
        check_config_types(locals(), CONFIG_KINDS)  # before any arithmetic: a saved "32" or 2.5 fails by its name
        super().__init__()
        # Set, with `_gradient_checkpointing_func`, by diffusers' `enable_gradient_checkpointing()`: switches the
        # checkpointing of the flow's evaluations (the encoder and decoder carry their own switch).
        self.gradient_checkpointing = False
        self._flow_checkpoint_chunk_size: int | str | None = "auto"
        self._decoder_activation_elements: int | None = None  # per sample; counted once, for the "auto" chunk size
        _check_config(
            image_channels=image_channels, mask_channels=mask_channels, sample_size=sample_size,
            block_out_channels=block_out_channels, layers_per_block=layers_per_block, attention_levels=attention_levels,
            latent_channels=latent_channels, n_leapfrog=n_leapfrog, step_size=step_size, beta_zero=beta_zero,
            learn_beta_zero=learn_beta_zero, image_likelihood=image_likelihood, max_step_size=max_step_size,
            flow_gradient=flow_gradient, decoder_block_out_channels=decoder_block_out_channels,
        )
        network_kwargs = dict(
            layers_per_block=layers_per_block,
            attention_levels=tuple(attention_levels),
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
        )
        self.encoder = Encoder(image_channels + mask_channels, latent_channels,
                               block_out_channels=tuple(block_out_channels), **network_kwargs)
        decoder_channels = tuple(decoder_block_out_channels or block_out_channels)
        self.decoder = Decoder(latent_channels, image_channels + mask_channels, block_out_channels=decoder_channels,
                               **network_kwargs)
        # Only the exact flow differentiates the decoder twice (grad_z U with create_graph, then the loss through it).
        self.decoder.use_second_order_ops(flow_gradient == "exact" and n_leapfrog > 0)
        if learn_step_size:
            self.step_size_logit = nn.Parameter(torch.full(self.latent_shape, _logit(step_size / max_step_size)))
        if learn_beta_zero:
            self.beta_zero_logit = nn.Parameter(torch.tensor(_logit(beta_zero)))
        if image_likelihood == "gaussian":
            # Start at std 0.1: the scale of intensity noise in [0, 1] images; learnt from there.
            self.image_log_scale = nn.Parameter(torch.full((1, image_channels, 1, 1), -2.3))

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one latent sample, ``(latent_channels, s, s)`` with ``s = sample_size / 2^(levels - 1)``."""
        side = self.config.sample_size // 2 ** (len(self.config.block_out_channels) - 1)
        return (self.config.latent_channels, side, side)

    def leapfrog_step_size(self) -> torch.Tensor | float:
        """The leapfrog step size: a float when fixed, a ``latent_shape`` tensor in ``(0, max_step_size)`` when learnt."""
        if self.config.learn_step_size:
            return self.config.max_step_size * torch.sigmoid(self.step_size_logit)
        return self.config.step_size

    def flow_parameters(self) -> list[nn.Parameter]:
        """The flow's own learnt parameters (per-dimension step-size logits, the ``beta_zero`` logit): empty when both
        are fixed. Training gives them their own learning rate, and can train them alone on frozen networks."""
        names = ("step_size_logit", "beta_zero_logit")
        return [getattr(self, name) for name in names if hasattr(self, name)]

    def flow_summary(self) -> dict[str, float]:
        """The flow's settings as plain numbers: ``step_size_min`` / ``_median`` / ``_max`` over latent dimensions
        (equal when the step is fixed) and ``beta_zero``; for logs and model cards."""
        step_size = torch.as_tensor(self.leapfrog_step_size(), dtype=torch.float32).detach().flatten()
        return {
            "step_size_min": step_size.min().item(),
            "step_size_median": step_size.median().item(),
            "step_size_max": step_size.max().item(),
            "beta_zero": self.temperature_schedule(0)[0].item(),
        }

    def temperature_schedule(self, n_leapfrog: int | None = None) -> torch.Tensor:
        """Inverse temperatures ``beta_0 .. beta_K`` of the flow (``beta_K = 1``); ``K`` defaults to the config's."""
        if self.config.learn_beta_zero:
            beta_zero = torch.sigmoid(self.beta_zero_logit)
        else:
            beta_zero = torch.tensor(float(self.config.beta_zero), dtype=self.dtype, device=self.device)
        return quadratic_temperature_schedule(beta_zero, self.config.n_leapfrog if n_leapfrog is None else n_leapfrog)

    # -------------------------------------------------------------------------------------------- encode/decode
    def _encoder_inputs(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate inputs; return the encoder's input ``(B, image_channels + mask_channels, H, W)`` and class ids."""
        config = self.config
        inputs, class_ids = pair_to_channels(
            images, masks, config.image_channels, config.mask_channels, config.sample_size
        )
        return inputs.to(self.dtype), class_ids

    def _posterior(self, inputs: torch.Tensor) -> DiagonalGaussianDistribution:
        """``q(z | x, m)`` from the encoder's input channels, in at least float32 (see :func:`at_least_float32`)."""
        return DiagonalGaussianDistribution(at_least_float32(self.encoder(inputs)))

    # The pipeline calls encode/decode, not forward: the hook moves the weights to the execution device under
    # `pipeline.enable_model_cpu_offload()`, as diffusers' AutoencoderKL does.
    @apply_forward_hook
    def encode(self, images: torch.Tensor, masks: torch.Tensor, return_dict: bool = True) -> HVAEEncoderOutput | tuple:
        """Encode (image, mask) pairs into the diagonal Gaussian posterior ``q(z | x, m)``.

        Args:
            images: ``(B, image_channels, H, W)`` floats in ``[0, 1]``.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)``; 0/1 for a binary mask, class ids in ``[0, mask_channels)``
                otherwise.
            return_dict: Return an :class:`HVAEEncoderOutput` rather than a tuple.
        """
        inputs, _ = self._encoder_inputs(images, masks)
        posterior = self._posterior(inputs)
        return HVAEEncoderOutput(latent_dist=posterior) if return_dict else (posterior,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> HVAEDecoderOutput | tuple:
        """Decode latents into images in ``[0, 1]`` and mask logits.

        Args:
            z: ``(B, *latent_shape)`` latents.
            return_dict: Return an :class:`HVAEDecoderOutput` rather than a tuple.
        """
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"`z` must have shape (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        output = split_decoder_logits(self.decoder(z.to(self.dtype)), self.config.image_channels)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------- likelihood terms
    def _log_likelihoods(
        self, z: torch.Tensor, images: torch.Tensor, class_ids: torch.Tensor, checkpoint_blocks: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x | z), log p(m | z))`` per sample; ``checkpoint_blocks``: see :meth:`Decoder.forward`."""
        decoded = split_decoder_logits(self.decoder(z, checkpoint_blocks), self.config.image_channels)
        if self.config.image_likelihood == "bernoulli":
            image_term = bernoulli_log_likelihood(decoded.image_logits, images)
        else:
            image_term = gaussian_log_likelihood(decoded.images, self.image_log_scale, images)
        if self.config.mask_channels == 1:
            mask_term = bernoulli_log_likelihood(decoded.mask_logits[:, 0], class_ids.to(decoded.mask_logits.dtype))
        else:
            mask_term = categorical_log_likelihood(decoded.mask_logits, class_ids)
        return image_term, mask_term

    def _flow_from_posterior(
        self,
        images: torch.Tensor,
        class_ids: torch.Tensor,
        posterior: DiagonalGaussianDistribution,
        generator: torch.Generator | None,
        create_graph: bool,
        n_leapfrog: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, FlowOutput]:
        """Draw ``z_0 ~ q`` and ``gamma_0 ~ N(0, I)``, run the flow; return ``(z_0, gamma_0, flow output)``."""
        mean = posterior.mean
        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z0 = mean + posterior.std * noise
        betas = self.temperature_schedule(n_leapfrog)
        if betas.shape[0] == 1:
            # No flow: the momentum plays no part; zeros make its terms cancel exactly.
            gamma0 = torch.zeros_like(z0)
            momentum0 = gamma0
        else:
            gamma0 = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            momentum0 = gamma0 / torch.sqrt(betas[0])

        # With gradient checkpointing, the exact flow checkpoints each whole potential-and-gradient evaluation: the
        # second-order graph of grad U holds the decoder activations anyway, so checkpointing decoder blocks alone
        # would free nothing there. The blocks inside such an evaluation are then not checkpointed a second time.
        checkpoint_steps = self.gradient_checkpointing and create_graph and betas.shape[0] > 1

        def potential(
            z: torch.Tensor, rows: slice = slice(None)
        ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            image_term, mask_term = self._log_likelihoods(
                z, images[rows], class_ids[rows], checkpoint_blocks=not checkpoint_steps
            )
            return -(image_term + mask_term + standard_normal_log_density(z)), (image_term, mask_term)

        checkpoint_fn = self._checkpoint_evaluation if checkpoint_steps else None
        flow = hamiltonian_flow(z0, momentum0, potential, self.leapfrog_step_size(), betas, create_graph, checkpoint_fn)
        return z0, gamma0, flow

    @property
    def flow_checkpoint_chunk_size(self) -> int | str | None:
        """Samples per recomputed chunk of each flow evaluation under gradient checkpointing: ``"auto"`` (default:
        chosen from the device and its free memory by :func:`~hvae_pipeline.models.flow_checkpointing.choose_chunk_size`:
        the whole batch where it fits in half the free memory, on a GPU or a CPU), a number, or ``None`` (the whole
        batch). Smaller chunks lower the peak memory of the exact HVAE; gradients are unchanged."""
        return self._flow_checkpoint_chunk_size

    @flow_checkpoint_chunk_size.setter
    def flow_checkpoint_chunk_size(self, chunk_size: int | str | None) -> None:
        valid_number = isinstance(chunk_size, int) and not isinstance(chunk_size, bool) and chunk_size >= 1
        if chunk_size not in (None, "auto") and not valid_number:
            raise ValueError(f"`flow_checkpoint_chunk_size` must be a positive integer, 'auto' or None, got "
                             f"{chunk_size!r}")
        self._flow_checkpoint_chunk_size = chunk_size

    def _resolved_chunk_size(self, z: torch.Tensor) -> int | None:
        """The chunk size for an evaluation at ``z``, resolving ``"auto"`` (see :attr:`flow_checkpoint_chunk_size`)."""
        if self._flow_checkpoint_chunk_size != "auto":
            return self._flow_checkpoint_chunk_size
        free_bytes = free_memory_bytes(z.device)
        if free_bytes is not None and self._decoder_activation_elements is None:
            self._decoder_activation_elements = self._count_decoder_activations()
        return choose_chunk_size(z.device.type, z.shape[0], self._decoder_activation_elements or 0, free_bytes)

    @torch.no_grad()
    def _count_decoder_activations(self) -> int:
        """Elements of the outputs of the decoder's leaf modules for one latent sample."""
        total = 0

        def count(module: nn.Module, inputs: Any, output: Any) -> None:
            nonlocal total
            total += output.numel() if torch.is_tensor(output) else 0

        leaves = [module for module in self.decoder.modules() if next(module.children(), None) is None]
        hooks = [leaf.register_forward_hook(count) for leaf in leaves]
        try:
            self.decoder(torch.zeros(1, *self.latent_shape, device=self.device, dtype=self.dtype))
        finally:
            for hook in hooks:
                hook.remove()
        return total

    def _checkpoint_evaluation(
        self, potential_fn: Callable[..., Any], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """The flow's ``checkpoint_fn``: one evaluation of ``U`` and ``grad U`` that keeps no graph, recomputed in
        backward in chunks of ``flow_checkpoint_chunk_size`` samples (see :mod:`hvae_pipeline.models.flow_checkpointing`)."""
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return checkpointed_potential_and_gradient(potential_fn, z, parameters, self._resolved_chunk_size(z))

    # --------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        n_leapfrog: int | None = None,
    ) -> HVAEOutput | tuple:
        """Single-sample ELBO of each (image, mask) pair and the training loss.

        The estimator is ``log p(x, m | z_K) - KL(q || N(0, I)) + flow_gain``: the term ``log p(z_0) - log q(z_0)`` of
        the HVAE bound is replaced by its closed-form expectation ``-KL``, which keeps the estimator unbiased, lowers
        its variance, and makes ``n_leapfrog=0`` exactly the textbook VAE estimator.

        Args:
            images: ``(B, image_channels, H, W)`` floats in ``[0, 1]``.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)`` binary masks or class ids.
            generator: Random generator for the posterior and momentum noise.
            return_dict: Return an :class:`HVAEOutput` rather than a tuple.
            n_leapfrog: Override the number of leapfrog steps for this call; ``0`` gives the plain VAE bound whatever
                ``beta_zero`` (used for cheap VAE warm starts of an HVAE).
        """
        if n_leapfrog is not None:
            check_count(n_leapfrog, "n_leapfrog", low=0)
        inputs, class_ids = self._encoder_inputs(images, masks)
        images = inputs[:, : self.config.image_channels]
        posterior = self._posterior(inputs)
        create_graph = self.config.flow_gradient == "exact" and torch.is_grad_enabled()
        z0, gamma0, flow = self._flow_from_posterior(images, class_ids, posterior, generator, create_graph, n_leapfrog)
        image_term, mask_term = flow.aux
        kl = posterior.kl()
        flow_gain = (standard_normal_log_density(flow.z) - standard_normal_log_density(z0)) + (
            standard_normal_log_density(flow.momentum) - standard_normal_log_density(gamma0)
        )
        elbo = image_term + mask_term - kl + flow_gain
        output = HVAEOutput(
            loss=-elbo.mean(),
            elbo=elbo,
            image_log_likelihood=image_term,
            mask_log_likelihood=mask_term,
            kl=kl,
            flow_gain=flow_gain,
            z=flow.z,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def elbo_with_and_without_flow(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair ELBO with the flow and with it off (``n_leapfrog=0``: the VAE bound of the same weights), from the
        same draw of ``z_0``: their difference is what the flow adds. Without a flow the two are the same tensor.

        Args:
            images: ``(B, image_channels, H, W)`` floats in ``[0, 1]``.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)`` binary masks or class ids.
            generator: Random generator of the draws; rewound between the two bounds so that they share ``z_0``.
        """
        state = generator.get_state()
        flow_on = self(images, masks, generator=generator).elbo
        if self.config.n_leapfrog == 0:
            return flow_on, flow_on
        generator.set_state(state)
        return flow_on, self(images, masks, generator=generator, n_leapfrog=0).elbo

    @torch.no_grad()
    def estimate_log_likelihood(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        n_samples: int = 64,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-sampled estimate of ``log p(x, m)`` per pair (nats), comparable between HVAE and VAE models.

        Uses the flow's extended space as proposal: each weight is
        ``p(x, m, z_K) N(rho_K; 0, I) / (q(z_0 | x, m) N(gamma_0; 0, I))``, whose expectation is ``p(x, m)`` exactly
        (volume-preserving leapfrog, tempering Jacobian cancelled). ``log mean(weights)`` is a lower bound in
        expectation that tightens as ``n_samples`` grows, and is at least the ELBO on average.

        Args:
            images: ``(B, image_channels, H, W)`` floats in ``[0, 1]``.
            masks: ``(B, H, W)`` or ``(B, 1, H, W)`` binary masks or class ids.
            n_samples: Number of importance samples per pair.
            generator: Random generator for the proposals.

        Returns:
            ``(B,)`` tensor of log-likelihood estimates.
        """
        check_count(n_samples, "n_samples")
        inputs, class_ids = self._encoder_inputs(images, masks)
        images = inputs[:, : self.config.image_channels]
        posterior = self._posterior(inputs)
        log_weights = []
        for _ in range(n_samples):
            z0, gamma0, flow = self._flow_from_posterior(images, class_ids, posterior, generator, create_graph=False)
            image_term, mask_term = flow.aux
            log_weights.append(
                (image_term + mask_term + standard_normal_log_density(flow.z) + standard_normal_log_density(flow.momentum)
                 - diagonal_gaussian_log_density(z0, posterior.mean, posterior.std)
                 - standard_normal_log_density(gamma0)).detach()
            )
        stacked = torch.stack(log_weights)  # (n_samples, B)
        return torch.logsumexp(stacked, dim=0) - torch.log(torch.tensor(float(n_samples), dtype=stacked.dtype))


# The kind of each constructor argument (see hvae_pipeline.models.inputs.CONFIG_KINDS); strings are checked by value.
CONFIG_KINDS = {
    **NETWORK_CONFIG_KINDS, "n_leapfrog": "count or zero", "step_size": "number", "learn_step_size": "flag",
    "beta_zero": "number", "learn_beta_zero": "flag", "max_step_size": "number",
    "decoder_block_out_channels": "counts or none",
}


def _logit(probability: float) -> float:
    """``log(p / (1 - p))`` as a Python float: parameters built from it also work on the meta device."""
    return math.log(probability / (1.0 - probability))


def _check_config(
    *,
    image_channels: int,
    mask_channels: int,
    sample_size: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    attention_levels: Sequence[bool],
    latent_channels: int,
    n_leapfrog: int,
    step_size: float,
    beta_zero: float,
    learn_beta_zero: bool,
    image_likelihood: str,
    max_step_size: float,
    flow_gradient: str,
    decoder_block_out_channels: Sequence[int] | None,
) -> None:
    """Raise ``ValueError`` naming the first inconsistent constructor argument.

    Keyword-only, in the constructor's order: fifteen positional values of similar types are easy to swap unnoticed.
    """
    for name, value in [("image_channels", image_channels), ("mask_channels", mask_channels),
                        ("latent_channels", latent_channels), ("layers_per_block", layers_per_block)]:
        if int(value) < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}")
    if len(block_out_channels) < 1 or len(attention_levels) != len(block_out_channels):
        raise ValueError(
            f"`attention_levels` ({len(attention_levels)} entries) must have one entry per level of "
            f"`block_out_channels` ({len(block_out_channels)} levels)"
        )
    if decoder_block_out_channels is not None and len(decoder_block_out_channels) != len(block_out_channels):
        raise ValueError(
            f"`decoder_block_out_channels` ({len(decoder_block_out_channels)} levels) must have one entry per level of "
            f"`block_out_channels` ({len(block_out_channels)} levels): the decoder undoes the encoder's downsamplings"
        )
    factor = 2 ** (len(block_out_channels) - 1)
    if sample_size < factor or sample_size % factor != 0:
        raise ValueError(f"`sample_size`={sample_size} must be a multiple of {factor} ({len(block_out_channels)} levels)")
    if n_leapfrog < 0:
        raise ValueError(f"`n_leapfrog` must be >= 0, got {n_leapfrog}")
    if not 0.0 < step_size < max_step_size:
        raise ValueError(f"`step_size` must be in (0, max_step_size={max_step_size}), got {step_size}")
    if not 0.0 < beta_zero <= 1.0:
        raise ValueError(f"`beta_zero` must be in (0, 1], got {beta_zero}")
    if n_leapfrog == 0 and (beta_zero != 1.0 or learn_beta_zero):
        raise ValueError(
            "`n_leapfrog=0` is the plain VAE: the momentum plays no part, so set `beta_zero=1` and `learn_beta_zero=False`"
        )
    if learn_beta_zero and beta_zero >= 1.0:
        raise ValueError("`learn_beta_zero=True` needs an initial `beta_zero` strictly below 1")
    if image_likelihood not in IMAGE_LIKELIHOODS:
        raise ValueError(f"`image_likelihood` must be one of {IMAGE_LIKELIHOODS}, got {image_likelihood!r}")
    if flow_gradient not in FLOW_GRADIENTS:
        raise ValueError(f"`flow_gradient` must be one of {FLOW_GRADIENTS}, got {flow_gradient!r}")
