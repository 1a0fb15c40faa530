#!/usr/bin/env bash
# Sets up a virtual environment in .venv with the package installed.
# Usage: bash scripts/setup.sh [EXTRAS]   (EXTRAS defaults to "train,demo"; CI passes "dev")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,demo}"
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install --quiet --upgrade pip
# torch first, pinned: unpinned, the resolver pulls a multi-GB CUDA build.
$py -m pip install --quiet "torch==2.13.0"
$py -m pip install --quiet -e ".[${extras}]"
echo "hvae-pipeline installed in .venv (extras: ${extras})"
