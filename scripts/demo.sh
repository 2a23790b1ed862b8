#!/usr/bin/env bash
# `make demo`: compiles every example (printing its summary), then trains
# examples/gpt-tiny on the CPU on the default corpus (the licence texts every
# Debian machine ships, byte-tokenized on first use into ~/.cache/heiretsu), ending
# with the run's summary, and samples text from the checkpoint it saved.
set -euo pipefail
dir=${1:-build}
bin="$dir/bin"
echo "== the examples"
for spec in examples/*.hr; do
  "$bin/heiretsu" compile "$spec" --emit summary | sed -n '1,4p'
done
echo
echo "== training gpt-tiny: 300 steps of 8 x 128 tokens on the CPU"
ck=$(mktemp -d "${TMPDIR:-/tmp}/heiretsu-demo-XXXXXX")
trap 'rm -rf "$ck"' EXIT
"$bin/heiretsu" train examples/gpt-tiny --micro-batch-size 8 --seq 128 \
  --steps 300 --lr 3e-3 --warmup 20 --log-every 25 --save-dir "$ck"
echo
echo "== a sample of the trained gpt-tiny (heiretsu sample CKPT --temperature 0.8 --top-k 40)"
"$bin/heiretsu" sample "$ck" --prompt "The licence" --tokens 100 --temperature 0.8 --top-k 40
