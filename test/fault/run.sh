#!/usr/bin/env bash
# The fault matrix of issue #10 as a test: killed, stopped and interrupted ranks and
# drivers; kills during a checkpoint save at random moments; corrupt and truncated
# plans, shards and checkpoints; a full disk; non-finite steps; mismatched plans at
# rendezvous; bad environment values. Each case prints one line,
#   PASS name: what was checked      or      FAIL name: what went wrong
# and the run ends with "N passed, N failed" (exit 1 if any failed).
#
#   usage: run.sh [--full] [--bin DIR] [--work DIR] [--seed N]
#     --full   repeat the randomized trials many times (kill during save: 40 trials,
#              plan byte flips: 200) instead of the quick mode's few (make test)
#     --bin    the directory of heiretsu and heiretsu-rank (default: build/bin)
#     --work   scratch directory (default: a new one under $TMPDIR, removed at the end)
#     --seed   seeds $RANDOM, so a failing trial can be repeated
#
# Every command runs under `timeout`, so a hang is a failure, not a stuck test.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
full=0
bin="$root/build/bin"
work=""
seed=$$
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --bin) bin=$2; shift ;;
    --work) work=$2; shift ;;
    --seed) seed=$2; shift ;;
    *) echo "usage: run.sh [--full] [--bin DIR] [--work DIR] [--seed N]" >&2; exit 2 ;;
  esac
  shift
done
RANDOM=$seed
own_work=0
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/heiretsu-fault.XXXXXX")
  own_work=1
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
H="$bin/heiretsu"
R="$bin/heiretsu-rank"
spec="$root/examples/gpt-tiny.hr"
cache="$work/cache"
# The launcher's job directories go here, so leftovers can be counted.
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"
# The full-disk case's tmpfs never outlives the script.
trap 'umount "$work/full" 2> /dev/null' EXIT

passed=0
failed=0
trials_total=0
pass() { echo "PASS $1: $2"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
check() {  # check NAME CONDITION-TEXT COMMAND...: PASS when the command succeeds
  local name=$1 what=$2
  shift 2
  if "$@"; then pass "$name" "$what"; else fail "$name" "$what"; fi
}
# Runs COMMAND... with a limit; sets $rc and leaves stdout+stderr in $work/out.
run() {
  local limit=$1
  shift
  timeout -k 5 "$limit" "$@" > "$work/out" 2>&1
  rc=$?
}
workers_of() { pgrep -f "heiretsu-rank $1" || true; }
# The pid of the heiretsu-rank worker of plan $1 whose environment has RANK=$2.
rank_pid() {
  local pid
  for pid in $(workers_of "$1"); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | grep -qx "RANK=$2"; then
      echo "$pid"
      return
    fi
  done
}
# Waits until a step line appears in file $1 (up to 20 s).
await_step() {
  local i
  for i in $(seq 200); do
    grep -q '| loss' "$1" 2> /dev/null && return 0
    sleep 0.1
  done
  return 1
}
# Flips byte $2 of file $1 (inverts its bits).
flip() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "\\x$(printf %02x $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2> /dev/null
}

# Plans: one rank (micro-batch 4, seq 64: the issue's repro), dp = 2, and a dp = 2 plan
# of another sequence length.
"$H" compile "$spec" --emit plan -o "$work/one" --micro-batch-size 4 --seq 64 > /dev/null &&
  "$H" compile "$spec" --emit plan -o "$work/dp2" --dp 2 --micro-batch-size 2 --seq 64 > /dev/null &&
  "$H" compile "$spec" --emit plan -o "$work/dp2s32" --dp 2 --micro-batch-size 2 --seq 32 > /dev/null ||
  { echo "FAIL setup: cannot compile the plans"; echo "0 passed, 1 failed"; exit 1; }
"$H" data prepare --tokenizer byte /usr/share/common-licenses/GPL-3 -o "$work/data" > /dev/null

#---------------------------------------------------------------------------------------
# Ranks and drivers killed, stopped, interrupted.
#---------------------------------------------------------------------------------------
long_run() {  # a dp = 2 job that runs until stopped; its driver's pid in $job
  HEIRETSU_COMM_TIMEOUT_MS=${2:-300000} "$H" run "$work/dp2" --steps 100000 --cache-dir "$cache" \
    > "$work/$1.out" 2> "$work/$1.err" &
  job=$!
  await_step "$work/$1.out"
}
job_dirs() { find "$TMPDIR" -maxdepth 1 -name 'heiretsu-job-*' | wc -l; }

# Sends signal $1 to rank 1 of the running job and waits for the job: sets r1 (its
# pid), rc (the job's exit code) and ms (how long the job took to end).
signal_rank1() {
  r1=$(rank_pid "$work/dp2" 1)
  kill -"$1" "$r1" 2> /dev/null
  local start
  start=$(date +%s%N)
  wait $job
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
}

long_run kill-rank
signal_rank1 KILL
check kill-rank "SIGKILL of rank 1: exit $rc in $ms ms, rank 1 named, no worker or job directory left" \
  test $rc -eq 1 -a $ms -lt 10000 -a -z "$(workers_of "$work/dp2")" -a "$(job_dirs)" -eq 0 \
  -a -n "$(grep -x 'heiretsu: rank 1 was killed by signal 9 (Killed); stopping the job' "$work/kill-rank.err")"

long_run stop-rank 2000
signal_rank1 STOP
check stop-rank "SIGSTOP of rank 1: exit $rc in $ms ms, rank 1 named as stopped, no worker left" \
  test $rc -eq 1 -a $ms -lt 10000 -a -z "$(workers_of "$work/dp2")" \
  -a -n "$(grep "heiretsu: rank 1 (pid $r1) is alive but stopped" "$work/stop-rank.err")"

long_run interrupt-driver
kill -INT $job
wait $job
rc=$?
check interrupt-driver "SIGINT to the driver: exit $rc (130), no worker or job directory left" \
  test $rc -eq 130 -a -z "$(workers_of "$work/dp2")" -a "$(job_dirs)" -eq 0

long_run kill-driver
kill -KILL $job
wait $job 2> /dev/null
for _ in $(seq 50); do [ -z "$(workers_of "$work/dp2")" ] && break; sleep 0.1; done
left_workers=$(workers_of "$work/dp2" | wc -l)
left_dirs=$(job_dirs)
run 60 "$H" run "$work/dp2" --steps 1 --cache-dir "$cache"
check kill-driver "SIGKILL of the driver: $left_workers workers outlive it; its job directory ($left_dirs) is removed by the next run (exit $rc)" \
  test "$left_workers" -eq 0 -a "$left_dirs" -eq 1 -a $rc -eq 0 -a "$(job_dirs)" -eq 0

#---------------------------------------------------------------------------------------
# Kills during checkpoint saves, at random moments.
#---------------------------------------------------------------------------------------
# A run saving every step is killed after a random delay; a resumed run must load the
# newest complete checkpoint (the newest step directory with a manifest), and once it
# has saved, no temporary file or empty step directory may remain.
save_trials=$([ $full = 1 ] && echo 40 || echo 3)
save_bad=0
save_detail=""
in_save=0
for trial in $(seq "$save_trials"); do
  ck="$work/ck-save"
  rm -rf "$ck"
  "$R" "$work/one" --steps 100000 --save-dir "$ck" --save-every 1 --cache-dir "$cache" \
    > "$work/save.out" 2>&1 &
  pid=$!
  await_step "$work/save.out"
  sleep "0.$((RANDOM % 10))$((RANDOM % 10))"
  kill -KILL $pid
  wait $pid 2> /dev/null
  trials_total=$((trials_total + 1))
  # In flight: a temporary file, or a step directory without its manifest, remains.
  inflight=$(find "$ck" -name '*.tmp.*' | wc -l)
  for d in "$ck"/step_*; do
    if [ -d "$d" ] && [ ! -e "$d/manifest.txt" ]; then inflight=$((inflight + 1)); fi
  done
  [ "$inflight" -gt 0 ] && in_save=$((in_save + 1))
  newest=$(for d in "$ck"/step_*; do [ -e "$d/manifest.txt" ] && echo "$d"; done | sort | tail -1)
  if [ -z "$newest" ]; then continue; fi  # killed before the first save completed
  step=$((10#$(basename "$newest" | sed 's/step_//')))
  run 120 "$R" "$work/one" --steps $((step + 1)) --save-dir "$ck" --resume "$ck" --cache-dir "$cache"
  leftovers=$(find "$ck" -name '*.tmp.*' | wc -l)
  empty=$(find "$ck" -mindepth 1 -type d -empty | wc -l)
  if [ $rc -ne 0 ] || ! grep -q "^resumed: $newest (step $step," "$work/out" ||
    [ "$leftovers" -ne 0 ] || [ "$empty" -ne 0 ]; then
    save_bad=$((save_bad + 1))
    save_detail="$save_detail; trial $trial: exit $rc, expected $newest, $leftovers temporaries, $empty empty dirs"
  fi
done
if [ $save_bad -eq 0 ]; then
  pass kill-during-save "$save_trials trials ($in_save killed with a save in flight): each resume loaded the newest complete checkpoint, no leftovers after the next save"
else
  fail kill-during-save "$save_bad of $save_trials trials wrong$save_detail"
fi

#---------------------------------------------------------------------------------------
# Corrupt and truncated plans, shards and checkpoints.
#---------------------------------------------------------------------------------------
flips=$([ $full = 1 ] && echo 200 || echo 20)
size=$(wc -c < "$work/one/program-0.hplan")
bad=0
mkdir -p "$work/flipped"
for i in $(seq "$flips"); do
  cp "$work/one/program-0.hplan" "$work/flipped/program-0.hplan"
  at=$(( (RANDOM * 32768 + RANDOM) % size ))
  flip "$work/flipped/program-0.hplan" $at
  run 30 "$R" "$work/flipped" --steps 1 --cache-dir "$cache"
  trials_total=$((trials_total + 1))
  if [ $rc -ne 2 ] || ! grep -q "flipped/program-0.hplan: " "$work/out"; then
    bad=$((bad + 1))
    echo "  byte $at flipped: exit $rc: $(head -c 300 "$work/out")"
  fi
done
check corrupt-plan "$flips random single-byte flips: $((flips - bad)) refused with exit 2 naming the file" test $bad -eq 0

mkdir -p "$work/trunc"
head -c $((size / 2)) "$work/one/program-0.hplan" > "$work/trunc/program-0.hplan"
run 30 "$R" "$work/trunc" --steps 1 --cache-dir "$cache"
check truncated-plan "a plan cut in half: exit $rc (2), named" \
  test $rc -eq 2 -a -n "$(grep 'trunc/program-0.hplan: truncated' "$work/out")"

cp "$work/data/train_000000.bin" "$work/shard.bin"
flip "$work/shard.bin" 0
run 30 "$R" "$work/one" --steps 1 --data "$work/shard.bin"
check corrupt-shard "a shard with a damaged header: exit $rc (2), named" \
  test $rc -eq 2 -a -n "$(grep 'shard.bin: bad magic' "$work/out")"
head -c 3001 "$work/data/train_000000.bin" > "$work/short.bin"
run 30 "$R" "$work/one" --steps 1 --data "$work/short.bin"
check truncated-shard "a truncated shard: exit $rc (2), named" \
  test $rc -eq 2 -a -n "$(grep 'short.bin: ' "$work/out")"

ck="$work/ck-corrupt"
run 120 "$R" "$work/one" --steps 3 --save-dir "$ck" --save-every 1 --cache-dir "$cache"
flip "$ck/step_00000003/tensors.bin" 5000
head -c 100 "$ck/step_00000002/manifest.txt" > "$work/m" && mv "$work/m" "$ck/step_00000002/manifest.txt"
run 120 "$R" "$work/one" --steps 4 --resume "$ck" --cache-dir "$cache"
check corrupt-checkpoint "a flipped byte (step 3) and a truncated manifest (step 2): exit $rc, both skipped and named, step 1 resumed" \
  test $rc -eq 0 -a -n "$(grep 'warning: skipping .*step_00000003/tensors.bin: checksum' "$work/out")" \
  -a -n "$(grep 'warning: skipping .*step_00000002/manifest.txt: truncated' "$work/out")" \
  -a -n "$(grep "^resumed: $ck/step_00000001 (step 1," "$work/out")"
head -c 1000 "$ck/step_00000001/tensors.bin" > "$work/t" && mv "$work/t" "$ck/step_00000001/tensors.bin"
run 120 "$R" "$work/one" --steps 4 --resume "$ck/step_00000001" --cache-dir "$cache"
check truncated-checkpoint "a truncated tensors.bin given as --resume: exit $rc (2), named" \
  test $rc -eq 2 -a -n "$(grep 'step_00000001/tensors.bin: 1000 bytes, but' "$work/out")"

#---------------------------------------------------------------------------------------
# A full disk.
#---------------------------------------------------------------------------------------
mkdir -p "$work/full"
if mount -t tmpfs -o size=14m tmpfs "$work/full" 2> /dev/null; then
  # One checkpoint of gpt-tiny is 10 MB: the first fits, the second cannot.
  run 120 "$R" "$work/one" --steps 3 --save-dir "$work/full/ck" --save-every 1 --cache-dir "$cache"
  leftovers=$(find "$work/full/ck" -name '*.tmp.*' | wc -l)
  rc_save=$rc
  grep -q 'No space left on device' "$work/out"
  nospace=$?
  run 120 "$R" "$work/one" --steps 2 --resume "$work/full/ck" --cache-dir "$cache"
  check full-disk "a 14 MB tmpfs: exit $rc_save (1) with 'No space left on device', $leftovers temporaries left, resume loads step 1 (exit $rc)" \
    test $rc_save -eq 1 -a $nospace -eq 0 -a "$leftovers" -eq 0 -a $rc -eq 0 \
    -a -n "$(grep "^resumed: $work/full/ck/step_00000001 (step 1," "$work/out")"
  umount "$work/full"
else
  echo "SKIP full-disk: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)"
fi

#---------------------------------------------------------------------------------------
# Non-finite steps.
#---------------------------------------------------------------------------------------
ck="$work/ck-nan"
run 120 "$R" "$work/one" --steps 12 --lr 1e6 --save-dir "$ck" --save-every 1 --cache-dir "$cache"
check nonfinite "--lr 1e6: exit $rc (1) at step 2 before its update, only step 1 saved" \
  test $rc -eq 1 -a -n "$(grep 'step 2: the gradient norm is nan' "$work/out")" \
  -a "$(ls "$ck")" = step_00000001
run 120 "$R" "$work/one" --steps 6 --lr 1e6 --on-nonfinite skip --max-consecutive-skips 100 \
  --save-dir "$ck" --save-every 1 --cache-dir "$cache"
run2=$rc
run 120 "$R" "$work/one" --steps 7 --lr 1e6 --on-nonfinite skip --resume "$ck" --cache-dir "$cache"
check nonfinite-skip "--on-nonfinite skip: exit $run2 (0) with skipped steps reported, every checkpoint finite (step 6 resumes: exit $rc)" \
  test $run2 -eq 0 -a $rc -eq 0 -a -n "$(grep "^resumed: $ck/step_00000006" "$work/out")"

#---------------------------------------------------------------------------------------
# Mismatched plans at rendezvous, reused stores.
#---------------------------------------------------------------------------------------
mkdir -p "$work/store1"
(RANK=1 WORLD_SIZE=2 HEIRETSU_STORE="$work/store1" timeout 60 "$R" "$work/dp2s32" --steps 1 \
  --cache-dir "$cache" > "$work/mm1.out" 2>&1; echo $? > "$work/mm1.rc") &
RANK=0 WORLD_SIZE=2 HEIRETSU_STORE="$work/store1" timeout 60 "$R" "$work/dp2" --steps 1 \
  --cache-dir "$cache" > "$work/mm0.out" 2>&1
rc0=$?
wait
rc1=$(cat "$work/mm1.rc")
check mismatched-plans "seq 64 and seq 32 on one store: exits $rc0 and $rc1 (2, 2), both name rank 1 and seq" \
  test "$rc0" -eq 2 -a "$rc1" -eq 2 -a -n "$(grep 'rank 1 has plan fingerprint .*seq 32 (rank 0: 64)' "$work/mm0.out")" \
  -a -n "$(grep 'rank 1 has plan fingerprint .*seq 32 (rank 0: 64)' "$work/mm1.out")"
RANK=0 WORLD_SIZE=2 HEIRETSU_STORE="$work/store1" run 60 "$R" "$work/dp2" --steps 1 --cache-dir "$cache"
check reused-store "a store used before: exit $rc (2), the store must be empty per job" \
  test $rc -eq 2 -a -n "$(grep 'the store must be an empty directory for each job' "$work/out")"

#---------------------------------------------------------------------------------------
# Bad environment values.
#---------------------------------------------------------------------------------------
bad_env=0
env_cases=0
for assignment in HEIRETSU_COMM_TIMEOUT_MS=abc HEIRETSU_COMM_TIMEOUT_MS=0 HEIRETSU_COMM_TIMEOUT_MS=-5 \
  HEIRETSU_COMM_TIMEOUT_MS=9223372036854775807 "HEIRETSU_ADDR=a b" HEIRETSU_ADDR= \
  HEIRETSU_STORE=/nonexistent RANK=x OMPI_COMM_WORLD_RANK=3 SLURM_PROCID=-1 PMI_RANK=1; do
  name=${assignment%%=*}
  value=${assignment#*=}
  extra=()
  case $name in
    HEIRETSU_*) extra=(RANK=0 WORLD_SIZE=2 HEIRETSU_STORE="$work") ;;
    OMPI_*) extra=(OMPI_COMM_WORLD_SIZE=2) ;;
    SLURM_*) extra=(SLURM_NTASKS=2) ;;
    PMI_*) extra=(PMI_SIZE=1) ;;
    RANK) extra=(WORLD_SIZE=2) ;;
  esac
  [ "$name" = HEIRETSU_STORE ] && extra=(RANK=0 WORLD_SIZE=2)
  env_cases=$((env_cases + 1))
  run 30 env "${extra[@]}" "$name=$value" "$R" "$work/dp2" --steps 1 --cache-dir "$cache"
  if [ $rc -ne 2 ] || ! grep -qF "$name" "$work/out"; then
    bad_env=$((bad_env + 1))
    echo "  $name='$value': exit $rc: $(head -c 300 "$work/out")"
  fi
done
run 30 env TMPDIR="$work/absent" "$H" run "$work/dp2" --steps 1 --cache-dir "$cache"
env_cases=$((env_cases + 1))
[ $rc -eq 2 ] && grep -q "TMPDIR='$work/absent' is not a directory" "$work/out" || bad_env=$((bad_env + 1))
check bad-environment "$env_cases bad values: $((env_cases - bad_env)) exit 2 naming the variable" test $bad_env -eq 0

echo "$passed passed, $failed failed ($trials_total randomized trials)"
[ $own_work = 1 ] && rm -rf "$work"
[ $failed -eq 0 ]
