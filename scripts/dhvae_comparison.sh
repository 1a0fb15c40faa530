#!/usr/bin/env bash
# The discriminative HVAE's objectives at equal CPU time (issue 25). From the bundled default model, three contenders
# trained with training/configs/cpu-128-dhvae.yaml for the same number of seconds:
#   hvae        = the exact HVAE bound alone (the bundled model trained on)
#   perceptual  = 0.95 x HVAE + 0.05 x (L1 + perceptual)
#   dhvae       = 0.95 x HVAE + 0.05 x (L1 + perceptual + adaptive x GAN), the discriminator from step 50
# Each contender's seconds per step are measured first on this machine (3 steps, the last 2 timed; the dHVAE's with
# its discriminator on from the start), and its steps set so that all spend BUDGET_SECONDS training. Then all three
# are scored on the 6 val patients: FID/KID, TSTR DSC, tumour-area JSD (1000 samples, hvae-evaluate
# image-quality), held-out log p(x, m) of the HVAE part (likelihood: does the extra loss cost likelihood?), and the
# U-Net DSC with 1000 of their pairs added to the 10 real training patients, classic augmentation on every batch
# (augmentation, 3 seeds: the scarcity study's K = 10 arm on BraTS, whose pool is these 10 patients).
# Usage: [DEVICE=cuda] bash scripts/dhvae_comparison.sh [BUDGET_SECONDS] [OUT] [override ...]
#   (default 7200 s of training each: 3 x 2 h + evaluation ~1 h on 2 idle cores); the overrides go to every
#   contender's training, DEVICE (cpu) to the evaluation (scripts/dhvae_comparison_gpu.sh sets both for a GPU).
#   A rerun resumes every stage. STEPS="130 103 102" fixes the three contenders' steps (hvae, perceptual, dhvae)
#   instead of calibrating, to replicate an earlier run's plan.txt on another machine.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-7200}"
out="${2:-runs/dhvae-comparison}"
shift $(( $# < 2 ? $# : 2 ))
extra=("$@")
py=.venv/bin/python
device="${DEVICE:-cpu}"
declare -A variant=(
  [hvae]="objectives.l1=false objectives.perceptual=false objectives.adversarial=false"
  [perceptual]="objectives.adversarial=false"
  [dhvae]=""
)
names=(hvae perceptual dhvae)
start_step=$($py -c "from hvae_pipeline.training.config import load_config as c
print(c('cpu-128-dhvae')['objectives']['adversarial_start_step'])")

train() {  # NAME OUTPUT_DIR override...; a finished run (its pipeline exported) is not trained again
  local name=$1 dir=$2; shift 2
  [[ -f "$dir/pipeline/model_index.json" ]] && return 0
  # shellcheck disable=SC2086  # the variant's overrides are words
  $py training/train_hvae.py --config cpu-128-dhvae ${variant[$name]} "${extra[@]}" "$@" "training.output_dir=$dir" \
    --resume-from-checkpoint latest
}

seconds_per_step() {  # mean of steps 2 and 3 from the calibration log (seconds_per_step is the running mean)
  $py - "$1" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/logs/metrics.csv")))
first, third = float(rows[0]["seconds_per_step"]), float(rows[2]["seconds_per_step"])
print(f"{(3 * third - first) / 2:.3f}")
EOF
}

declare -A steps
mkdir -p "$out"
if [[ -n "${STEPS:-}" ]]; then
  read -r -a fixed <<< "$STEPS"
  if (( ${#fixed[@]} != 3 )); then
    echo "STEPS must hold three step counts (hvae perceptual dhvae), got: '$STEPS'" >&2
    exit 2
  fi
  for i in 0 1 2; do
    if ! [[ "${fixed[$i]}" =~ ^[1-9][0-9]*$ ]]; then
      echo "STEPS: '${fixed[$i]}' is not a positive whole number of steps" >&2
      exit 2
    fi
    steps[${names[$i]}]=${fixed[$i]}
  done
  for name in "${names[@]}"; do echo "$name: fixed by STEPS -> ${steps[$name]} steps"; done | tee "$out/plan.txt"
else
  declare -A cost
  for name in "${names[@]}"; do
    train "$name" "$out/calibration/$name" training.max_steps=3 training.log_steps=1 \
      training.checkpointing_steps=1000 training.sample_steps=1000 training.fit_latent_prior=false \
      objectives.adversarial_start_step=0
    cost[$name]=$(seconds_per_step "$out/calibration/$name")
  done
  for name in hvae perceptual; do
    steps[$name]=$($py -c "print(max(1, round($budget / ${cost[$name]})))")
  done
  # The dHVAE's first steps run without the discriminator, at the cost of the perceptual contender's.
  steps[dhvae]=$($py -c "b, s, p, d = $budget, $start_step, ${cost[perceptual]}, ${cost[dhvae]}
print(max(s + 1, round(s + (b - s * p) / d)))")
  for name in "${names[@]}"; do  # written whole: a rerun recomputes the same plan from the calibration logs
    echo "$name: ${cost[$name]} s/step here -> ${steps[$name]} steps for $budget s"
  done | tee "$out/plan.txt"
fi

for name in "${names[@]}"; do
  n=${steps[$name]}
  train "$name" "$out/$name" "training.max_steps=$n" "training.checkpointing_steps=$(( n / 8 + 1 ))" \
    "training.sample_steps=$n"
done

split=(--data brats --root ../shared/data/brats-msd-flair --image-glob "images/{case}_Tumor.nii.gz"
       --label-glob "labels/{case}_Seg.nii.gz"
       --test-patients BRATS_036 BRATS_050 BRATS_082 BRATS_089 BRATS_190 BRATS_259)
generators=()
for name in "${names[@]}"; do generators+=(--generator "$name=$out/$name/pipeline"); done
train=(--train-patients BRATS_001 BRATS_002 BRATS_004 BRATS_008 BRATS_009 BRATS_011 BRATS_017 BRATS_027 BRATS_030
       BRATS_033)
# Two single-thread processes side by side (on 2 cores, two 2-thread processes slow small ops ~100x): seeds 0 and 1
# of the augmentation grid in one; image quality, likelihood and seed 2 in the other. A last pass finds every run's
# record and writes the grid's report.
evaluate=(env OMP_NUM_THREADS=1 .venv/bin/hvae-evaluate)
augmentation=(augmentation "${generators[@]}" "${split[@]}" "${train[@]}" --counts 0 1000 --augment classic
              --sampling-device "$device" --num-threads 1 --out "$out/results")
"${evaluate[@]}" "${augmentation[@]}" --seeds 0 1 &
first_seeds=$!
"${evaluate[@]}" image-quality "${generators[@]}" "${split[@]}" "${train[@]}" --num-samples 1000 \
  --sampling-device "$device" --device "$device" --num-threads 1 --out "$out/results"
"${evaluate[@]}" likelihood "${generators[@]}" "${split[@]}" --num-importance-samples 128 \
  --importance-slices 24 --elbo-draws 4 --num-threads 1 --out "$out/results"
"${evaluate[@]}" "${augmentation[@]}" --seeds 2
wait "$first_seeds"
"${evaluate[@]}" "${augmentation[@]}" --seeds 0 1 2
