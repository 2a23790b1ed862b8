#!/usr/bin/env bash
# Data and tensor parallelism on this machine's cores against one rank (issue #15):
# `heiretsu run` of gpt-tiny and GPT-2 small (llm.c's padded vocabulary 50304, so
# that tp = 2 splits it; the single rank runs the same padded model) at the same
# global batch (GLOBAL_BATCH sequences of 64 tokens, default 4: bench/run-cpu.sh's
# micro-batch; one microbatch per step, so micro-batch GLOBAL_BATCH / dp) as 1 rank, dp = 2, dp = 2 with ZeRO-1, and tp = 2, with the default
# threads (heiretsu run gives each of the L local ranks cores / L OpenMP and OpenBLAS
# threads). Each multi-rank layout runs twice: with the default transport (shared
# memory for the collectives of ranks on one machine: runtime/comm/shm_comm.h) and
# with HEIRETSU_COMM_SHM=0 (Gloo's TCP for everything, as before 2026-12-01's last
# session). The layouts run in turn, REPS times (default 2), so drift and other load
# hit them alike; each run's line goes to bench/results/cpu_ranks.jsonl.
#
# A line: {"date", "cpu" (bench/cpu-name.sh), "cores" (nproc), "result": {"model",
# "layout", "dp", "tp", "zero", "transport" ("shm", "tcp", or "single" for one rank),
# "global_batch", "micro_batch_size", "seq", "steps", "step_ms" (median
# step_ms of the --metrics lines after step 2), "step_ms_each", "tokens_per_s"
# (global batch x seq / step_ms), "other_cpu_cores"}}. other_cpu_cores is the CPU
# time the machine spent on anything but this run, per second of the run's wall time
# (/proc/stat's busy time less the run's own user + system time): > 0.2 means other
# work shared the cores and the run's figures are low.
#   usage: bench/run-cpu-ranks.sh [BUILD_DIR]   (env: GLOBAL_BATCH, REPS, MODELS)
set -euo pipefail
build=${1:-build}
out=bench/results/cpu_ranks.jsonl
batch=${GLOBAL_BATCH:-4}
reps=${REPS:-2}
models=${MODELS:-gpt-tiny gpt2-small}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/^  vocab   = 50257$/  vocab   = 50257\n  padded_vocab = 50304/' examples/gpt2-small.hr \
  > "$tmp/gpt2-small.hr"
grep -q 'padded_vocab = 50304' "$tmp/gpt2-small.hr" || { echo "cannot pad gpt2-small" >&2; exit 1; }
cp examples/gpt-tiny.hr "$tmp/gpt-tiny.hr"
cpu=$("$(dirname "$0")/cpu-name.sh")
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# layout name : dp : tp : extra compile flags : HEIRETSU_COMM_SHM
layouts="single:1:1::1 dp2:2:1::1 dp2-tcp:2:1::0 dp2-zero1:2:1:--zero=1:1 dp2-zero1-tcp:2:1:--zero=1:0 tp2:1:2::1 tp2-tcp:1:2::0"
for model in $models; do
  steps=$([ "$model" = gpt-tiny ] && echo 40 || echo 8)
  for layout in $layouts; do
    IFS=: read -r name dp tp extra shm <<< "$layout"
    case "$name" in *-tcp) continue ;; esac  # the same plan as the layout without -tcp
    flags=(--dp "$dp" --tp "$tp")
    [ -n "$extra" ] && flags+=(${extra/=/ })
    "$build/bin/heiretsu" compile "$tmp/$model.hr" --emit plan -o "$tmp/$model-$name" \
      "${flags[@]}" --global-batch "$batch" --micro-batch-size "$((batch / dp))" --seq 64 > /dev/null
  done
  for rep in $(seq "$reps"); do
    for layout in $layouts; do
      IFS=: read -r name dp tp extra shm <<< "$layout"
      plan=${name%-tcp}
      transport=$([ "$dp$tp" = 11 ] && echo single || { [ "$shm" = 1 ] && echo shm || echo tcp; })
      rm -f "$tmp/m.jsonl"
      b0=$(busy)
      HEIRETSU_COMM_SHM=$shm /usr/bin/time -f "%e %U %S" -o "$tmp/time" "$build/bin/heiretsu" run "$tmp/$model-$plan" \
        --steps "$steps" --val-every 0 --metrics "$tmp/m.jsonl" --cache-dir "$tmp/cache" \
        > "$tmp/run.out" 2>&1 || { cat "$tmp/run.out" >&2; exit 1; }
      b1=$(busy)
      read -r wall user sys < "$tmp/time"
      others=$(awk -v b="$((b1 - b0))" -v hz="$hz" -v u="$user" -v s="$sys" -v w="$wall" \
        'BEGIN { o = (b / hz - u - s) / w; printf "%.2f", o < 0 ? 0 : o }')
      each=$(jq -r 'select(.step > 2) | .step_ms' "$tmp/m.jsonl" | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 }')
      median=$(jq -r 'select(.step > 2) | .step_ms' "$tmp/m.jsonl" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
      tps=$(awk -v m="$median" -v t="$((batch * 64))" 'BEGIN { printf "%.1f", t / m * 1000 }')
      zero=$([ "$extra" = "--zero=1" ] && echo 1 || echo 0)
      line=$(printf '{"model": "%s", "layout": "%s", "dp": %d, "tp": %d, "zero": %d, "transport": "%s", "global_batch": %d, "micro_batch_size": %d, "seq": 64, "steps": %d, "step_ms": %s, "step_ms_each": [%s], "tokens_per_s": %s, "other_cpu_cores": %s}' \
        "$model" "$name" "$dp" "$tp" "$zero" "$transport" "$batch" "$((batch / dp))" "$steps" "$median" "$each" "$tps" "$others")
      echo "$line"
      echo "$line" >> "$tmp/lines.jsonl"
      printf '{"date": "%s", "cpu": "%s", "cores": %s, "result": %s}\n' \
        "$(date -u +%Y-%m-%dT%H:%MZ)" "$cpu" "$(nproc)" "$line" >> "$out"
    done
  done
done
# The summary: per model and layout, tokens/s over the same repetition's one rank,
# each repetition's and their median (the machine drifts: compare within a
# repetition, read the median).
echo
echo "tokens/s against the same repetition's one rank ($cpu, $(nproc) cores, global batch $batch x 64):"
jq -rs '
  group_by(.model)[] as $m
  | ($m | map(select(.layout == "single") | .tokens_per_s)) as $one
  | ($m | map(.layout) | unique) as $layouts
  | $layouts[] as $l
  | select($l != "single")
  | [$m | map(select(.layout == $l)) | to_entries[] | .value.tokens_per_s / $one[.key]] as $r
  | ($r | sort) as $s
  | "\($m[0].model) \($l): \($r | map(. * 100 | round / 100) | join(", ")); median \(
      if ($s | length) % 2 == 1 then $s[($s | length - 1) / 2]
      else ($s[($s | length) / 2 - 1] + $s[($s | length) / 2]) / 2 end | . * 100 | round / 100)"
' "$tmp/lines.jsonl"
