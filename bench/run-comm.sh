#!/usr/bin/env bash
# The collectives between the ranks of this machine over each transport (TCP
# through Gloo, shared memory: runtime/comm/shm_comm.h), all_reduce, reduce_scatter,
# all_gather and a send_recv hand-off from 4 KiB to 128 MiB (bench/comm.cc says what is measured), for
# 2 ranks (RANKS to change). Appends one line per (transport, collective, size) to
# bench/results/comm.jsonl: {"date", "cpu" (bench/cpu-name.sh), "cores", "result"}.
# Run it under the shared lock so nothing else competes for the cores:
#   flock /tmp/heiretsu-build.lock bench/run-comm.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
out=bench/results/comm.jsonl
cpu=$("$(dirname "$0")/cpu-name.sh")
"$build/bin/heiretsu-bench-comm" --ranks "${RANKS:-2}" --reps "${REPS:-5}" | while read -r line; do
  echo "$line"
  printf '{"date": "%s", "cpu": "%s", "cores": %s, "result": %s}\n' \
    "$(date -u +%Y-%m-%dT%H:%MZ)" "$cpu" "$(nproc)" "$line" >> "$out"
done
