#!/usr/bin/env bash
# Runs the MoE expert-layer benchmark (heiretsu-bench-moe: the grouped-GEMM experts
# of moe-gpt2-small's MoE layer at micro-batch 4, seq 64 -- 8 experts x 80 rows,
# d 768, f 3072 -- with gelu and with swiglu, beside sgemm on the same shapes) and
# the whole training step of moe-gpt2-small at micro-batch 4, seq 64
# (heiretsu-bench-cpu), and appends the results, with the date, the machine, the
# version and the commit the build was made from ("+dirty" when that tree differs
# from it outside bench/), to bench/results/moe.jsonl.
# The step's "gflops" counts 6N FLOPs per token over all N parameters, every
# expert's included: for MoE it overcounts; read tokens_per_s and step_ms.
# A build without heiretsu-bench-moe (one from before the grouped GEMMs) runs the
# step only; name it with VERSION.
# usage: [VERSION=...] [STEPS=5] [REPS=10] bench/run-moe.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
version=${VERSION:-grouped GEMMs}
out=bench/results/moe.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
commit=unknown
if [ -n "$src" ] && commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null); then
  git -C "$src" diff --quiet HEAD -- . ':(exclude)bench' 2>/dev/null || commit="$commit+dirty"
fi
record() {
  echo "$1"
  printf '{"date": "%s", "cpu": "%s", "cores": %s, "version": "%s", "commit": "%s", "result": %s}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$("$(dirname "$0")/cpu-name.sh")" \
    "$(nproc)" "$version" "$commit" "$1" >> "$out"
}
if [ -x "$build/bin/heiretsu-bench-moe" ]; then
  for swiglu in 0 1; do
    record "$("$build/bin/heiretsu-bench-moe" --experts 8 --tokens 80 --d 768 --f 3072 \
      --swiglu "$swiglu" --reps "${REPS:-10}")"
  done
fi
model=moe-gpt2-small
"$build/bin/heiretsu" compile "examples/$model" --emit plan -o "$tmp/$model" \
  --micro-batch-size 4 --seq 64 > /dev/null
hp=$("$build/bin/heiretsu" compile "examples/$model" --emit summary | grep hyperparams)
get() { echo "$hp" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
record "$("$build/bin/heiretsu-bench-cpu" "$tmp/$model/program-0.hplan" \
  --layers "$(get layers)" --heads "$(get heads)" --head-dim "$(get head_dim)" \
  --steps "${STEPS:-5}" --warmup 1)"
