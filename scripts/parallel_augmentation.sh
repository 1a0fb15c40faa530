#!/usr/bin/env bash
# Run an `hvae-evaluate augmentation` grid as parallel processes sharing one output folder: one process per
# (generator, seed) and one real-only process per seed, then one invocation of the whole grid, which finds every run
# finished and writes the summary, table and plot. Worth it on a GPU, which one small U-Net leaves mostly idle (the
# 80-run BraTS grid took 7.6 min this way on one H200, RESULTS.md), or on a CPU with more cores than one run uses.
#
# Usage: scripts/parallel_augmentation.sh OUT "SEEDS" "COUNTS" NAME=PATH [NAME=PATH ...] -- ARGUMENTS...
#   OUT        the --out folder (resumable as usual: finished runs are not redone)
#   SEEDS      e.g. "0 1 2 3 4";  COUNTS  e.g. "0 100 300 500 1000 2000"
#   NAME=PATH  the generators (as --generator);  ARGUMENTS  every other option of hvae-evaluate augmentation
#              (data, U-Net, sampling, --device cuda --sampling-device cuda ...), given to every process
# Each process logs to OUT/logs/<generator>-seed<s>.log and uses one CPU thread (a later --num-threads overrides).
# HVAE_EVALUATE replaces the command (default: hvae-evaluate).
set -euo pipefail
usage='usage: parallel_augmentation.sh OUT "SEEDS" "COUNTS" NAME=PATH [NAME=PATH ...] -- ARGUMENTS...'
(( $# >= 3 )) || { echo "$usage" >&2; exit 2; }
out=$1 seeds=$2 counts=$3
shift 3
generators=()
while (( $# )) && [[ $1 != -- ]]; do generators+=("$1"); shift; done
(( $# )) && shift  # the --
read -r -a evaluate <<< "${HVAE_EVALUATE:-hvae-evaluate}"
positive_counts=()
for count in $counts; do
  if (( count > 0 )); then positive_counts+=("$count"); fi
done
if (( ${#positive_counts[@]} )) && (( ! ${#generators[@]} )); then
  echo "parallel_augmentation.sh: counts N > 0 need at least one NAME=PATH generator" >&2; exit 2
fi

mkdir -p "$out/logs"
processes=()
launch() {  # launch LOG_NAME ARGUMENTS...: one process in the background, its output in OUT/logs/LOG_NAME.log
  local log=$out/logs/$1.log
  shift
  "${evaluate[@]}" augmentation --out "$out" --num-threads 1 --no-progress "$@" > "$log" 2>&1 &
  processes+=("$!:$log")
}
for seed in $seeds; do
  if [[ " $counts " == *" 0 "* ]]; then launch "real-only-seed$seed" --counts 0 --seeds "$seed" "$@"; fi
  if (( ${#positive_counts[@]} )); then
    for generator in "${generators[@]}"; do
      launch "${generator%%=*}-seed$seed" --generator "$generator" --counts "${positive_counts[@]}" --seeds "$seed" "$@"
    done
  fi
done
echo "${#processes[@]} processes started; logs in $out/logs"
failed=()
for process in "${processes[@]}"; do
  wait "${process%%:*}" || failed+=("${process#*:}")
done
if (( ${#failed[@]} )); then
  echo "parallel_augmentation.sh: ${#failed[@]} processes failed; their logs:" >&2
  for log in "${failed[@]}"; do echo "--- $log" >&2; tail -n 5 "$log" >&2; done
  exit 1
fi
generator_arguments=()
for generator in "${generators[@]}"; do generator_arguments+=(--generator "$generator"); done
# The whole grid: every run is finished, so this only writes augmentation.{json,md,png}.
"${evaluate[@]}" augmentation "${generator_arguments[@]}" --counts $counts --seeds $seeds --out "$out" --no-progress \
  "$@"
