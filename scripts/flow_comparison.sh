#!/usr/bin/env bash
# Does the Hamiltonian flow earn its cost? (RESULTS.md, section 4.) From the same starting weights (default: stage 1 of
# training/build_default_model.sh, a VAE-trained network; the recorded run started from the bundled model of commit
# 123993d, i.e. that warm start plus 30 steps at step 1e-3), three contenders at equal idle-machine time on 2 CPU cores:
#   learnt  = 10 flow-only steps (cpu-128-flow.yaml, networks frozen) + 45 joint exact steps (cpu-128.yaml)
#   paper   = 52 exact steps with the paper's fixed step 1e-3 (cpu-128-paper-flow.yaml)
#   vae     = 450 VAE steps (the same network, flow off, same learning rate)
# then scores them on the 6 val patients: importance-sampled log p(x, m) (128 samples, 24 evenly spaced slices),
# the ELBO with the flow on and off (4 draws on every slice), and image quality with each one's fitted prior.
# Usage: bash scripts/flow_comparison.sh [START_PIPELINE] [OUT]   (~1.5 h on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/.."
start="${1:-runs/cpu-128-warmup/pipeline}"
out="${2:-runs/flow-comparison}"
py=.venv/bin/python
train() { local name=$1; shift; $py training/train_hvae.py "$@" "training.output_dir=$out/$name" --resume-from-checkpoint latest; }
train flow --config cpu-128-flow "training.init_from=$start"
# The z_0 prior at export, so that the z_K fit below can be compared with it.
train learnt --config cpu-128 "training.init_from=$out/flow/pipeline" training.latent_prior_source=posterior
train paper --config cpu-128-paper-flow "training.init_from=$start"
train vae --config cpu-128-warmup model.n_leapfrog=0 model.beta_zero=1 training.vae_warmup_steps=0 \
  "training.init_from=$start" training.learning_rate=1e-4 training.lr_scheduler=constant training.lr_warmup_steps=0 \
  training.max_steps=450 training.checkpointing_steps=50 training.sample_steps=450
$py training/fit_latent_prior.py --pipeline "$out/learnt/pipeline" --config cpu-128 --source flow \
  --out "$out/learnt-zk-prior"
split=(--data brats --root ../shared/data/brats-msd-flair --image-glob "images/{case}_Tumor.nii.gz"
       --label-glob "labels/{case}_Seg.nii.gz"
       --test-patients BRATS_036 BRATS_050 BRATS_082 BRATS_089 BRATS_190 BRATS_259)
generators=(--generator "VAE=$out/vae/pipeline" --generator "HVAE-paper=$out/paper/pipeline"
            --generator "HVAE-learnt=$out/learnt/pipeline")
.venv/bin/hvae-evaluate likelihood "${generators[@]}" "${split[@]}" --num-importance-samples 128 \
  --importance-slices 24 --elbo-draws 4 --out "$out/results"
.venv/bin/hvae-evaluate image-quality "${generators[@]}" --generator "HVAE-learnt-zK=$out/learnt-zk-prior" \
  "${split[@]}" --num-samples 500 --sampling-min-tumour-area 0 --out "$out/results"
$py scripts/tumour_areas.py "VAE=$out/vae/pipeline" "HVAE-paper=$out/paper/pipeline" \
  "HVAE-learnt=$out/learnt/pipeline" "HVAE-learnt-zK=$out/learnt-zk-prior" --num-samples 512 --prior fitted \
  --real-config cpu-128 | tee "$out/results/tumour_areas.txt"
