#!/usr/bin/env bash
# Job teardown (issue #4): a dp=2 x tp=2 job (or, with `pp`, a dp=2 x pp=2 pipeline)
# whose rank 1 is killed, or stops answering, must end as a whole within 10 s,
# non-zero, with one message naming the rank.
#   usage: teardown.sh BIN_DIR WORK_DIR kill|stop [tp|pp]
set -uo pipefail
bin=$1 work=$2 mode=$3 layout=${4:-tp}
mkdir -p "$work"
spec=$(dirname "$0")/../../examples/gpt-tiny.hr
if [ "$layout" = pp ]; then
  flags="--dp 2 --pp 2 --micro-batch-size 1 --microbatches 4"
else
  flags="--dp 2 --tp 2 --micro-batch-size 2"
fi
"$bin/heiretsu" compile "$spec" --emit plan -o "$work/plan" $flags --seq 64 > /dev/null || exit 1

# A long run, so the job is surely mid-training when rank 1 is hit; a short
# collective timeout so a stopped rank is noticed quickly.
HEIRETSU_COMM_TIMEOUT_MS=2000 "$bin/heiretsu" run "$work/plan" --steps 100000 \
  --cache-dir "$work/cache" > "$work/out.log" 2> "$work/err.log" &
job=$!

# Find rank 1's worker: a heiretsu-rank process whose environment has RANK=1.
rank1=""
for _ in $(seq 200); do
  for pid in $(pgrep -f "heiretsu-rank $work/plan" || true); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx 'RANK=1'; then rank1=$pid; fi
  done
  [ -n "$rank1" ] && grep -q '| loss' "$work/out.log" && break
  sleep 0.1
done
[ -n "$rank1" ] || { echo "rank 1 never started"; kill $job; exit 1; }

start=$(date +%s%N)
if [ "$mode" = kill ]; then kill -KILL "$rank1"; else kill -STOP "$rank1"; fi
wait $job
code=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
left=$(pgrep -f "heiretsu-rank $work/plan" | wc -l)
echo "exit code $code after $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s; workers left: $left"
grep '^heiretsu: rank' "$work/err.log"
[ "$elapsed_ms" -lt 10000 ] && echo "within 10 s" || echo "TOO SLOW: ${elapsed_ms} ms"
