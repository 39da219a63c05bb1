#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 60) on stable, without a
# sanitizer (`-s none`). Fails on any crash. Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd fuzz
targets=$(cargo fuzz list)
cargo fuzz build -s none
# Replay every input that once crashed a target (each must now run clean).
for dir in regressions/*/; do
    t=$(basename "$dir")
    for f in "$dir"*; do
        [ -f "$f" ] || continue
        echo "fuzz: replay $f"
        cargo fuzz run -s none "$t" "$f"
    done
done
for t in $targets; do
    echo "fuzz: $t for ${secs}s"
    mkdir -p "corpus/$t"
    cargo fuzz run -s none "$t" -- -max_total_time="$secs"
done
