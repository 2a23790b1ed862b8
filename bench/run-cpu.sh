#!/usr/bin/env bash
# Runs the CPU step benchmark for gpt-tiny and GPT-2 small at micro-batch 4,
# sequence 64, and GPT-2 small at micro-batch 1, sequence 1024, and appends the
# results (with the machine and date) to bench/results/cpu_step.jsonl.  usage: bench/run-cpu.sh [BUILD_DIR]
# Each record adds "other_cpu_cores": the CPU time the machine spent on anything
# but the benchmark, per second of its wall time (/proc/stat's busy time less the
# benchmark's own user + system time); > 0.2 means other work shared the cores.
# For dp = 2 and tp = 2 against one rank, see bench/run-cpu-ranks.sh.
set -euo pipefail
build=${1:-build}
out=bench/results/cpu_step.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# model:micro-batch:sequence; GPT-2 small also at its own context (1024), where
# attention is a large part of the step.
for config in gpt-tiny:4:64 gpt2-small:4:64 gpt2-small:1:1024; do
  IFS=: read -r model mbs seq <<< "$config"
  "$build/bin/heiretsu" compile "examples/$model" --emit plan -o "$tmp/$model-$seq" \
    --micro-batch-size "$mbs" --seq "$seq" > /dev/null
  hp=$("$build/bin/heiretsu" compile "examples/$model" --emit summary | grep hyperparams)
  get() { echo "$hp" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  b0=$(busy)
  /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$build/bin/heiretsu-bench-cpu" \
    "$tmp/$model-$seq/program-0.hplan" \
    --layers "$(get layers)" --heads "$(get heads)" --head-dim "$(get head_dim)" \
    --steps "${STEPS:-5}" --warmup 1 > "$tmp/line"
  b1=$(busy)
  read -r wall user sys < "$tmp/time"
  others=$(awk -v b="$((b1 - b0))" -v hz="$hz" -v u="$user" -v s="$sys" -v w="$wall" \
    'BEGIN { o = (b / hz - u - s) / w; printf "%.2f", o < 0 ? 0 : o }')
  line=$(sed "s/}\$/, \"other_cpu_cores\": $others}/" "$tmp/line")
  echo "$line"
  printf '{"date": "%s", "cpu": "%s", "cores": %s, "result": %s}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$("$(dirname "$0")/cpu-name.sh")" \
    "$(nproc)" "$line" >> "$out"
done
