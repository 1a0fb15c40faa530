#!/usr/bin/env bash
# Reproduces the bundled default model: trains cpu-128.yaml on the shared BraTS FLAIR train split (10 patients),
# then replaces hvae_pipeline/checkpoints/default/ with the exported pipeline (only once training has succeeded).
# Usage: bash training/build_default_model.sh [section.key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
output_dir=runs/cpu-128
.venv/bin/python training/train_hvae.py --config cpu-128 "training.output_dir=${output_dir}" "$@"
target=hvae_pipeline/checkpoints/default
staging="${target}.partial"
rm -rf "$staging" && cp -r "${output_dir}/pipeline" "$staging"
cp "${output_dir}/loss_curve.png" "$staging/loss_curve.png"
rm -rf "$target" && mv "$staging" "$target"
echo "Bundled default model updated in $target"
