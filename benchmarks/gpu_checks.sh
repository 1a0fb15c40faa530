#!/usr/bin/env bash
# The GPU checks of issues 4, 7 and 8 in one run (a lent GPU machine has minutes, not hours):
#   1. train step time and peak memory, small network, 128 x 128, batch 16, K = 3, fp32 then bf16 autocast;
#   2. the paper's network at batch 16 (bf16): peak memory of the exact HVAE with and without checkpointing;
#   3. a short bf16 run of training/train_hvae.py with paper-128.yaml on real BraTS FLAIR slices (step time, loss).
# Usage: bash benchmarks/gpu_checks.sh DATA_ROOT OUT_DIR   (DATA_ROOT holds images/ and labels/ as brats-msd-flair)
# Each stage has its own time limit so that a failure or an overrun still leaves the earlier results in OUT_DIR.
set -u
data_root=${1:?usage: gpu_checks.sh DATA_ROOT OUT_DIR}
out=${2:?usage: gpu_checks.sh DATA_ROOT OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$python -c "import torch, diffusers, datasets, pyarrow, accelerate; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'accelerate', \
accelerate.__version__)" | tee -a "$out/gpu.txt"

for precision in fp32 bf16; do
  timeout 300 $python benchmarks/bench_train_step.py --device cuda --precision "$precision" --size 128 --batch 16 \
    --network small --rounds 2 --steps 6 2>&1 | tee "$out/train_step_small_$precision.txt"
done
timeout 150 $python benchmarks/bench_train_step.py --device cuda --precision bf16 --size 128 --batch 16 \
  --network paper --rounds 1 --steps 4 --contenders vae,exact,exact-ckpt 2>&1 | tee "$out/train_step_paper_bf16.txt"

timeout 200 $python training/train_hvae.py --config paper-128 "data.root=$data_root" data.val_patients=null \
  data.num_proc=8 training.output_dir=/tmp/paper-128-gpu training.max_steps=40 training.log_steps=5 \
  training.sample_steps=40 training.checkpointing_steps=1000 training.ema_decay=null 2>&1 \
  | tr '\r' '\n' | grep -v "it/s\]$" | tail -40 | tee "$out/train_paper_bf16.txt"
cp /tmp/paper-128-gpu/logs/metrics.csv "$out/train_paper_bf16_metrics.csv" 2>/dev/null
cp /tmp/paper-128-gpu/samples/*.png "$out/" 2>/dev/null
exit 0
