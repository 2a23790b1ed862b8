#!/usr/bin/env bash
# `make demo`: compiles every example (printing its summary), then trains
# examples/gpt-tiny on the CPU on the default corpus (the licence texts every
# Debian machine ships, byte-tokenized on first use into ~/.cache/heiretsu).
set -euo pipefail
dir=${1:-build}
bin="$dir/bin"
echo "== the examples"
for spec in examples/*.hr; do
  "$bin/heiretsu" compile "$spec" --emit summary | sed -n '1,4p'
done
echo
echo "== training gpt-tiny: 300 steps of 8 x 128 tokens on the CPU"
"$bin/heiretsu" train examples/gpt-tiny --micro-batch-size 8 --seq 128 \
  --steps 300 --lr 3e-3 --warmup 20 --log-every 25
