#!/usr/bin/env bash
# Times PyTorch (CPU; its LSTM runs oneDNN) and ONNX Runtime on the shapes of benches/rnn.rs,
# with the same thread count, between two runs of ours (benches/harness/peer_shapes.rs), and writes
# peers.md beside this script. Not part of CI.
# Installs both into a virtual environment of its own, from the Python registry.
#   bash benches/peers/run.sh [threads]
set -euo pipefail
cd "$(dirname "$0")"
threads="${1:-2}"
source ./venv.sh
# Ours before and after the peers, in the same session: the machine drifts between a fast and
# a slow state, and the two runs of ours show which one the peers saw.
ours() { (cd ../.. && cargo run --quiet --release --example peer_shapes -- "$threads"); }
{
  ours
  echo
  "$venv/bin/python" peers.py --threads "$threads"
  echo
  ours
} | tee peers.md
