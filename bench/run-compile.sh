#!/usr/bin/env bash
# Compile-time benchmark: GPT-2 small compiled to plan files for 1, 8, 64, 512 and
# 4096 ranks, recording wall time and the number of plan files (one per distinct
# rank program, so flat in dp). Appends to bench/results/compile_time.jsonl.
# Layouts with tp, pp or ep > 1 are refused by the compiler until those passes
# exist, so today every world size is pure data parallelism.
#   usage: bench/run-compile.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=bench/results/compile_time.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for world in 1 8 64 512 4096; do
  best=""
  for rep in 1 2 3; do
    rm -rf "$tmp/plan"
    start=$(date +%s%N)
    "$build/bin/heiretsu" compile examples/gpt2-small --emit plan -o "$tmp/plan" \
      --dp "$world" --micro-batch-size 1 --seq 1024 > /dev/null
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  files=$(ls "$tmp/plan" | wc -l)
  line=$(printf '{"model": "gpt2-small", "world": %d, "dp": %d, "tp": 1, "plan_files": %d, "compile_ms": %d}' \
    "$world" "$world" "$files" "$best")
  echo "$line"
  printf '{"date": "%s", "cores": %s, "result": %s}\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
    "$line" >> "$out"
done
