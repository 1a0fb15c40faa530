"""Shared pieces of the benchmarks: the machine's description, medians, the compared networks and models.

Benchmarks print ratios measured in one run, with contenders alternated and repeated; run them on an idle machine
(``uptime`` before and after is printed) and compare numbers only within one run.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from typing import Any

import torch

# Networks compared (the encoder/decoder are shared by every contender of one comparison).
NETWORKS: dict[str, dict[str, Any]] = {
    # The small network of docs/ECOSYSTEM.md ("What a correct HVAE costs"), for comparability with those numbers.
    "small": dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, attention_levels=(False, False, False, True),
                  num_attention_heads=4, attention_head_dim=32, norm_num_groups=8),
    # The paper's network (training/configs/paper-128.yaml), for its memory estimate only: far too slow on CPU.
    "paper": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, attention_levels=(False, False, False, True),
                  num_attention_heads=8, attention_head_dim=32, norm_num_groups=8),
    # The bundled default model's network (training/configs/cpu-128.yaml).
    "bundled": dict(block_out_channels=(16, 32, 64, 64), layers_per_block=1, attention_levels=(False, False, False, True),
                    num_attention_heads=2, attention_head_dim=32, norm_num_groups=8),
}
HVAE_SETTINGS = dict(latent_channels=3, step_size=1e-3, beta_zero=0.3)


def machine() -> str:
    """One line describing where the numbers come from: platform, CPUs, Python, torch, threads, load average."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.platform()}, cpu_count={os.cpu_count()}, Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"torch threads={torch.get_num_threads()}, load average (1 min) {load:.2f}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def random_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in ``[0, 1]`` with smooth structure and binary masks (values do not change the cost, shapes do)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=generator)
    masks = (torch.rand(batch, size, size, generator=generator) > 0.9).long()
    return images, masks


def build_model(network: str, size: int, n_leapfrog: int, flow_gradient: str = "exact",
                decoder_width_factor: int = 1) -> torch.nn.Module:
    """Our :class:`HVAEModel` on one of :data:`NETWORKS` (``n_leapfrog=0``: the VAE, ``beta_zero=1``), its decoder's
    levels ``decoder_width_factor`` times as wide as the encoder's."""
    from hvae_pipeline import HVAEModel

    settings = dict(HVAE_SETTINGS, beta_zero=1.0) if n_leapfrog == 0 else dict(HVAE_SETTINGS)
    widths = NETWORKS[network]["block_out_channels"]
    decoder = None if decoder_width_factor == 1 else tuple(decoder_width_factor * width for width in widths)
    torch.manual_seed(0)
    return HVAEModel(sample_size=size, n_leapfrog=n_leapfrog, flow_gradient=flow_gradient, **NETWORKS[network],
                     decoder_block_out_channels=decoder, **settings)


def build_pythae_hvae(network: str, size: int, n_leapfrog: int) -> torch.nn.Module:
    """pythae 0.1.2's HVAE on *our* encoder and decoder networks (same weights' shapes, same latent, K, eps, beta_0).

    pythae models one tensor: it gets the 2-channel (image, mask) input and a 2-channel decoder, so its Bernoulli
    likelihood covers the same pixels as ours. With ``reconstruction_loss="bce"`` pythae expects *logits* from the
    decoder (``Bernoulli(logits=...)``), so the wrapper returns the decoder's logits, as our likelihood uses them.
    Distribution argument validation is switched off (process-wide) because ``Bernoulli.log_prob`` rejects the
    intensities in ``[0, 1]`` that our BCE takes; without validation it computes the same BCE with logits.
    """
    torch.distributions.Distribution.set_default_validate_args(False)
    from pythae.models import HVAE, HVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    ours = build_model(network, size, n_leapfrog)
    latent_shape = ours.latent_shape

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = ours.encoder

        def forward(self, x: torch.Tensor) -> ModelOutput:
            mean, log_variance = self.network(x).chunk(2, dim=1)
            return ModelOutput(embedding=mean.flatten(1), log_covariance=log_variance.flatten(1))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.network = ours.decoder

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=self.network(z.reshape(-1, *latent_shape)))

    config = HVAEConfig(
        input_dim=(2, size, size), latent_dim=int(torch.Size(latent_shape).numel()), reconstruction_loss="bce",
        n_lf=n_leapfrog, eps_lf=HVAE_SETTINGS["step_size"], beta_zero=HVAE_SETTINGS["beta_zero"],
    )
    return HVAE(config, encoder=Encoder(), decoder=Decoder())
