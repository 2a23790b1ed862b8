#!/usr/bin/env bash
# The time by opcode of a `heiretsu run --trace` file (cat "instr" events), most
# first: one JSON object per opcode, {"op", "count", "ms", "share"}, and a last one
# {"op": "all", ...}. With HEIRETSU_CUDA_CHECK=1 the CUDA backend waits for the
# device after every instruction, so an instruction's event is its GPU time (and
# ~10 us of synchronization); without it a device backend's events are the host's
# launch time only (runtime/exec/trace.h). bench/gpu/verify.sh's gpt2-bf16-kernels
# runs it; it needs only awk and sort.
#   usage: bench/gpu/kernel-times.sh TRACE.json
set -euo pipefail
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 TRACE.json" >&2; exit 2; }
awk '/"cat":"instr"/ {
  name = $0; sub(/.*"name":"/, "", name); sub(/".*/, "", name)
  dur = $0; sub(/.*"dur":/, "", dur); sub(/,.*/, "", dur)
  ms[name] += dur / 1000; count[name]++; total += dur / 1000
} END {
  for (n in ms) printf "%.6f %s %d\n", ms[n], n, count[n]
  printf "TOTAL %.6f\n", total
}' "$1" | sort -rg | awk '
  $1 == "TOTAL" { total = $2; next }
  { line[++n] = $0 }
  END {
    for (i = 1; i <= n; ++i) {
      split(line[i], f, " ")
      printf "{\"op\": \"%s\", \"count\": %d, \"ms\": %.3f, \"share\": %.4f}\n", f[2], f[3], f[1], (total > 0 ? f[1] / total : 0)
    }
    printf "{\"op\": \"all\", \"count\": null, \"ms\": %.3f, \"share\": 1}\n", total
  }'
