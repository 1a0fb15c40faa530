#!/usr/bin/env bash
# One-thread cost of the scarcity study's generators: wall seconds of trainer runs of the scarcity recipes on BraTS
# (the K = 1 and K = 10 draws of the packaged split) with few steps, so that seconds per step (difference of two step
# counts) and the fixed cost per stage run (start-up, data, export) can be read off and multiplied by the recipe's
# steps. Run from the repository root; writes into a fresh folder (first argument, default /tmp/scarcity-costs); further
# arguments name the runs to do (default: all), e.g. hvae-k10-s1 hvae-k10-s4.
# Usage: OMP_NUM_THREADS=1 bash scripts/measure_scarcity_costs.sh [OUT [RUN ...]]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/scarcity-costs}"
shift || true
wanted=" $* "
if [ -e "$out" ]; then echo "$out exists: pass a new folder" >&2; exit 2; fi
mkdir -p "$out"
export OMP_NUM_THREADS=1
k1='["BRATS_002"]'
k10='["BRATS_001","BRATS_002","BRATS_004","BRATS_008","BRATS_009","BRATS_011","BRATS_017","BRATS_027","BRATS_030","BRATS_033"]'
run() {  # name config patients steps [overrides...]
  local name=$1 config=$2 patients=$3 steps=$4
  shift 4
  if [ "$wanted" != "  " ] && [[ "$wanted" != *" $name "* ]]; then return; fi
  local start end
  start=$(date +%s.%N)
  .venv/bin/python -m hvae_pipeline.training.train_hvae --config "$config" "training.output_dir=\"$out/$name\"" \
    "data.patients=$patients" data.val_patients=null training.num_threads=1 "training.max_steps=$steps" \
    "training.sample_steps=$steps" training.checkpointing_steps=1000 "$@" > "$out/$name.log" 2>&1
  end=$(date +%s.%N)
  echo "{\"run\": \"$name\", \"config\": \"$config\", \"steps\": $steps, \"seconds\": $(echo "$end - $start" | bc)}"
}
run vae-k1-s5 scarcity-vae "$k1" 5
run vae-k1-s25 scarcity-vae "$k1" 25
run vae-k10-s5 scarcity-vae "$k10" 5
run vae-k10-s25 scarcity-vae "$k10" 25
init='training.init_from="hvae_pipeline/checkpoints/default"'
run hvae-k10-s1 scarcity-hvae "$k10" 1 "$init"
run hvae-k10-s4 scarcity-hvae "$k10" 4 "$init"
run flow-k10-s1 scarcity-hvae-flow "$k10" 1 "$init"
run flow-k10-s4 scarcity-hvae-flow "$k10" 4 "$init"
