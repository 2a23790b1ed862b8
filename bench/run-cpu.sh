#!/usr/bin/env bash
# Runs the CPU step benchmark for gpt-tiny and GPT-2 small at micro-batch 4,
# sequence 64, and appends the results (with the machine and date) to
# bench/results/cpu_step.jsonl.  usage: bench/run-cpu.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=bench/results/cpu_step.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in gpt-tiny gpt2-small; do
  "$build/bin/heiretsu" compile "examples/$model" --emit plan -o "$tmp/$model" \
    --micro-batch-size 4 --seq 64 > /dev/null
  hp=$("$build/bin/heiretsu" compile "examples/$model" --emit summary | grep hyperparams)
  get() { echo "$hp" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  line=$("$build/bin/heiretsu-bench-cpu" "$tmp/$model/program-0.hplan" \
    --layers "$(get layers)" --heads "$(get heads)" --head-dim "$(get head_dim)" \
    --steps "${STEPS:-5}" --warmup 1)
  echo "$line"
  printf '{"date": "%s", "cpu": "%s", "cores": %s, "result": %s}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(nproc)" "$line" >> "$out"
done
