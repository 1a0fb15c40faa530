#!/usr/bin/env bash
# scripts/dhvae_comparison.sh on a lent GPU (issue 25): the same three contenders from the bundled model, at equal GPU
# time, with bf16 autocast for training (the flow's latent arithmetic stays fp32) and sampling/scoring on the GPU.
# Default budget: 900 s of training per contender (the GPU's seconds per step are measured by the script's calibration;
# not measured yet: no device was lent to the session that wrote it). Needs the project installed on that machine
# (bash scripts/setup.sh) and the shared data beside the repository.
# Usage: bash scripts/dhvae_comparison_gpu.sh [BUDGET_SECONDS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda exec bash scripts/dhvae_comparison.sh "${1:-900}" "${2:-runs/dhvae-comparison-gpu}" \
  training.mixed_precision=bf16 training.dataloader_workers=2
