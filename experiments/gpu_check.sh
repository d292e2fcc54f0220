#!/usr/bin/env bash
# The GPU check, as it runs on a GPU machine with no network (torch, transformers, lightning, peft and accelerate
# installed; nothing else assumed): install the carried wheels (experiments/gpu_wheels/, made by
# `python experiments/gpu_wheels.py make`) with no index, then run experiments/gpu_check.py with this checkout's vrm.
#   bash experiments/gpu_check.sh                 # GPU, Qwen2.5-0.5B's shape (under 10 minutes on one GPU)
#   bash experiments/gpu_check.sh --cpu --tiny    # the same code paths on a CPU, a tiny shape
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
wheels="${GPU_CHECK_WHEELS:-$here/gpu_wheels}"
python="${PYTHON:-python}"
if [[ ! -f "$wheels/requirements.txt" || ! -f "$wheels/wheels.tar.xz" ]]; then
  echo "gpu_check.sh: no $wheels/requirements.txt or wheels.tar.xz: run 'python experiments/gpu_wheels.py make'" \
       "where the package registry can be reached, and carry experiments/gpu_wheels" >&2
  exit 2
fi
unpacked="$(mktemp -d)"
trap 'rm -rf "$unpacked"' EXIT
# filter="data" where this Python has it (3.11.4 and later): no member may land outside the folder.
"$python" -c 'import sys, tarfile; t = tarfile.open(sys.argv[1]); kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}; t.extractall(sys.argv[2], **kw)' \
  "$wheels/wheels.tar.xz" "$unpacked"
# Installs only what is missing; a wheel that does not fit this Python or platform fails here, naming it.
"$python" -m pip install --quiet --no-index --find-links "$unpacked" -r "$wheels/requirements.txt"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
"$python" "$here/gpu_check.py" --tokenizer "$wheels/tokenizer" "$@"
