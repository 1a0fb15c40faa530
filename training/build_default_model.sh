#!/usr/bin/env bash
# Reproduces the bundled default model on the shared BraTS FLAIR train split (10 patients), in three stages:
# 1. cpu-128-warmup.yaml: 1000 steps with the VAE bound (flow off), ~25 min on 2 idle cores;
# 2. cpu-128-flow.yaml: 10 steps training only the flow's step sizes (one per latent dimension) and beta_0 on the
#    frozen stage-1 networks, with the exact HVAE bound (K = 3), ~2 min;
# 3. cpu-128.yaml: 45 steps of the exact HVAE bound training everything, the flow included, ~9 min; its export
#    carries the latent prior fitted to the training slices (training.fit_latent_prior), which sampling uses by default;
# then replaces hvae_pipeline/checkpoints/default/ with the exported pipeline (only once every stage succeeded).
# Each stage resumes from its last checkpoint when rerun after an interruption.
# Usage: bash training/build_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for stage in cpu-128-warmup cpu-128-flow cpu-128; do
  .venv/bin/python training/train_hvae.py --config "$stage" --resume-from-checkpoint latest
done
target=hvae_pipeline/checkpoints/default
staging="${target}.partial"
rm -rf "$staging" && cp -r runs/cpu-128/pipeline "$staging"
.venv/bin/python training/plot_stages.py "$staging/loss_curve.png" runs/cpu-128-warmup/logs/metrics.csv \
  runs/cpu-128-flow/logs/metrics.csv runs/cpu-128/logs/metrics.csv
rm -rf "$target" && mv "$staging" "$target"
echo "Bundled default model updated in $target"
