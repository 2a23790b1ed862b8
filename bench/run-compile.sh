#!/usr/bin/env bash
# Compile-time benchmark: GPT-2 small compiled to plan files for 1, 8, 64, 512 and
# 4096 ranks in dp x tp combinations (tp up to 12, GPT-2 small's head count; tp = 8
# is refused, 12 heads do not split 8 ways, so tp takes 1, 2, 4 and 12), recording wall time
# (best of 3) and the number of plan files: one per distinct rank program, so flat
# in dp and tp. Appends to bench/results/compile_time.jsonl.
#   usage: bench/run-compile.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=bench/results/compile_time.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# world:dp:tp:extra flags
for layout in 1:1:1: 8:8:1: 8:4:2: 8:2:4: 8:2:4:--sequence-parallel 64:64:1: 64:16:4: \
    512:512:1: 512:128:4: 4096:4096:1: 4096:1024:4: 4096:2048:2:--zero=1; do
  IFS=: read -r world dp tp extra <<< "$layout"
  flags=(--dp "$dp" --tp "$tp")
  [ -n "$extra" ] && flags+=(${extra/=/ })
  best=""
  for rep in 1 2 3; do
    rm -rf "$tmp/plan"
    start=$(date +%s%N)
    "$build/bin/heiretsu" compile examples/gpt2-small --emit plan -o "$tmp/plan" \
      "${flags[@]}" --micro-batch-size 1 --seq 1024 > /dev/null
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  files=$(ls "$tmp/plan" | wc -l)
  line=$(printf '{"model": "gpt2-small", "world": %d, "dp": %d, "tp": %d, "flags": "%s", "plan_files": %d, "compile_ms": %d}' \
    "$world" "$dp" "$tp" "$extra" "$files" "$best")
  echo "$line"
  printf '{"date": "%s", "cores": %s, "result": %s}\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
    "$line" >> "$out"
done
