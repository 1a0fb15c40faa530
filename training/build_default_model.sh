#!/usr/bin/env bash
# Reproduces the bundled default model on the shared BraTS FLAIR train split (10 patients), in two stages:
# 1. cpu-128-warmup.yaml: 1000 steps with the VAE bound (flow off), ~25 min on 2 idle cores;
# 2. cpu-128.yaml: 30 steps of the exact HVAE bound (K = 3) starting from stage 1, ~6 min; its export carries the
#    latent prior fitted to the training slices (training.fit_latent_prior, seconds), which sampling uses by default;
# then replaces hvae_pipeline/checkpoints/default/ with the exported pipeline (only once both stages succeeded).
# Usage: bash training/build_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python training/train_hvae.py --config cpu-128-warmup
.venv/bin/python training/train_hvae.py --config cpu-128
target=hvae_pipeline/checkpoints/default
staging="${target}.partial"
rm -rf "$staging" && cp -r runs/cpu-128/pipeline "$staging"
.venv/bin/python training/plot_stages.py "$staging/loss_curve.png" runs/cpu-128-warmup/logs/metrics.csv \
  runs/cpu-128/logs/metrics.csv
rm -rf "$target" && mv "$staging" "$target"
echo "Bundled default model updated in $target"
