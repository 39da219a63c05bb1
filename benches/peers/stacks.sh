#!/usr/bin/env bash
# Times PyTorch and ONNX Runtime on the stack shapes (stack_peers.py) between two runs of ours
# (benches/harness/stack_shapes.rs) with the same thread count, and writes stacks.md beside this
# script. Not part of CI; uses the virtual environment run.sh makes (and makes it if missing).
#   bash benches/peers/stacks.sh [threads]
set -euo pipefail
cd "$(dirname "$0")"
threads="${1:-2}"
source ./venv.sh
ours() { (cd ../.. && cargo run --quiet --release --example stack_shapes -- "$threads"); }
{
  ours
  echo
  "$venv/bin/python" stack_peers.py --threads "$threads"
  echo
  ours
} | tee stacks.md
