#!/usr/bin/env bash
# Compile-time benchmark: GPT-2 small compiled to plan files for 1, 8, 64, 512 and
# 4096 ranks in dp x tp (x pp) combinations, recording wall time (best of 3) and the
# number of plan files: one per distinct rank program (one per pipeline stage), so
# flat in dp and tp. The model is GPT-2 small with llm.c's padded vocabulary
# (padded_vocab = 50304; 50257 splits over no tp) and tp divides its 12 heads: 2 or
# 4 here (8 does not divide 12, so the 4096-rank pipeline is pp=8 x tp=4 x dp=128).
# Pipelines run 1F1B over 2 pp microbatches. Appends to
# bench/results/compile_time.jsonl.
#   usage: bench/run-compile.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=bench/results/compile_time.jsonl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/^  vocab   = 50257$/  vocab   = 50257\n  padded_vocab = 50304/' examples/gpt2-small.hr > "$tmp/gpt2-small-padded.hr"
grep -q 'padded_vocab = 50304' "$tmp/gpt2-small-padded.hr" || { echo "cannot pad examples/gpt2-small.hr" >&2; exit 1; }
# world:dp:tp:pp:extra flags
for layout in 1:1:1:1: 8:8:1:1: 8:4:2:1: 8:2:4:1: 8:2:4:1:--sequence-parallel 64:64:1:1: \
    64:16:4:1: 512:512:1:1: 512:128:4:1: 4096:4096:1:1: 4096:1024:4:1: \
    4096:2048:2:1:--zero=1 4096:1024:4:1:--sequence-parallel 64:8:2:4: 4096:128:4:8: \
    4096:128:4:8:--schedule=zb-h1; do
  IFS=: read -r world dp tp pp extra <<< "$layout"
  microbatches=$(( pp == 1 ? 1 : 2 * pp ))
  flags=(--dp "$dp" --tp "$tp" --pp "$pp" --microbatches "$microbatches")
  [ -n "$extra" ] && flags+=(${extra/=/ })
  best=""
  for rep in 1 2 3; do
    rm -rf "$tmp/plan"
    start=$(date +%s%N)
    "$build/bin/heiretsu" compile "$tmp/gpt2-small-padded.hr" --emit plan -o "$tmp/plan" \
      "${flags[@]}" --micro-batch-size 1 --seq 1024 > /dev/null
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  files=$(ls "$tmp/plan" | wc -l)
  line=$(printf '{"model": "gpt2-small padded_vocab=50304", "world": %d, "dp": %d, "tp": %d, "pp": %d, "microbatches": %d, "flags": "%s", "plan_files": %d, "compile_ms": %d}' \
    "$world" "$dp" "$tp" "$pp" "$microbatches" "$extra" "$files" "$best")
  echo "$line"
  printf '{"date": "%s", "cores": %s, "result": %s}\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
    "$line" >> "$out"
done
