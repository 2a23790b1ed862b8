#!/usr/bin/env bash
# The GPU check, in one short call on a lent GPU machine (see docs/architecture.md and
# the device tool's README): everything that needs MLIR or Debian packages is built
# and compiled here; the GPU machine only runs.
#
#   bench/gpu/verify.sh prepare      here: builds, compiles the plans, and gathers
#                                    the binaries, the shared libraries the GPU
#                                    machine lacks, the plans and a corpus into one
#                                    .gpu/pack.tar.gz (about 30 MB, at most 60; .gpu
#                                    is ignored by git; carry it: run(carry=[".gpu"]))
#   bench/gpu/verify.sh run [SECS]   there: unpacks it under $TMPDIR (or /tmp), then
#                                    within about SECS seconds (default 420),
#                                    each check under its own timeout, writing
#                                    $OUT/verify.jsonl (one JSON line per check) and
#                                    $OUT/*.log, and printing a table last
#
# Checks, cheapest first, so that a short lease still answers the first questions:
#   gpu-info         the device is visible (heiretsu-gpu-info; a CUDA failure other
#                    than "no device" / "no driver at all" is a FAIL naming CUDA's
#                    error, not a skip: runtime/cuda/device_probe.h)
#   cuda-check-gpt   every instruction of gpt-tiny's step on the GPU against the CPU
#                    backend (outputs poisoned first; the backend in check mode, so
#                    a fault names its instruction) and 5 training steps
#   cuda-check-llama the same for llama-tiny (RoPE, GQA, RMSNorm, SwiGLU)
#   cuda-check-hd64  the same, head_dim 64 with a padded vocabulary (test/e2e/inputs)
#   cuda-check-hd128 the same, head_dim 128 with GQA 4/2
#   cuda-check-grid  cuda-hd128 with every grid-stride launch capped at 2 blocks
#                    (each kernel, attention's included, loops over its range)
#   cuda-check-zero  the instructions of gpt-tiny --dp 2 --zero 1 as rank 1 (moment
#                    shards starting mid-parameter)
#   cuda-check-tp    the instructions of cuda-hd64 --tp 2 as rank 1 (vocabulary-
#                    parallel embedding and loss over the padded block)
#   cuda-check-decode llama-tiny's decode program (KV append, cached attention,
#                    RoPE at an offset) with every launch capped at 2 blocks, and
#                    5 decode runs whose caches the earlier runs filled
#   train-200        gpt-tiny, 200 steps on the default corpus, CPU and CUDA: the
#                    largest relative loss difference over the curve
#   tp2-one-gpu      tp = 2 with both ranks on the one GPU (collectives staged through
#                    host memory over Gloo) against the single-rank CUDA run
#   zero1-one-gpu    dp = 2 with ZeRO-1, both ranks on the one GPU, against the same
#                    single-rank CUDA run
# Without a GPU (here) `run` says `skipped: no GPU` for each check and exits 0.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pack="$root/.gpu"

prepare() {
  local tree="$pack/tree"
  make -C "$root" build >/dev/null || { echo "verify: the build failed"; exit 1; }
  local bin="$root/build/bin"
  rm -rf "$pack" && mkdir -p "$tree/bin" "$tree/lib" "$tree/plans" "$tree/corpus"
  for b in heiretsu heiretsu-rank heiretsu-cuda-check heiretsu-gpu-info; do
    [ -x "$bin/$b" ] || { echo "verify: $bin/$b is missing (is CUDA found by the build?)"; exit 1; }
    cp "$bin/$b" "$tree/bin/"
  done
  # Shared libraries from Debian packages the GPU machine's image does not have
  # (glibc, libstdc++ and CUDA's own are there).
  ldd "$bin/heiretsu-rank" "$bin/heiretsu-cuda-check" | awk '/=> \// {print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+)\.so|/usr/local/cuda/' |
    while read -r lib; do cp -L "$lib" "$tree/lib/"; done
  local c="$bin/heiretsu compile"
  $c "$root/examples/gpt-tiny" -o "$tree/plans/gpt" --seq 64 --micro-batch-size 2 >/dev/null &&
  $c "$root/examples/llama-tiny" -o "$tree/plans/llama" --seq 64 --micro-batch-size 2 >/dev/null &&
  $c "$root/examples/gpt-tiny" -o "$tree/plans/train" --seq 64 --micro-batch-size 4 >/dev/null &&
  $c "$root/examples/gpt-tiny" -o "$tree/plans/tp2" --seq 64 --micro-batch-size 4 --tp 2 >/dev/null &&
  $c "$root/test/e2e/inputs/cuda-hd64.hr" -o "$tree/plans/hd64" --seq 64 --micro-batch-size 2 >/dev/null &&
  $c "$root/test/e2e/inputs/cuda-hd128.hr" -o "$tree/plans/hd128" --seq 64 --micro-batch-size 2 >/dev/null &&
  $c "$root/examples/gpt-tiny" -o "$tree/plans/zero" --seq 64 --micro-batch-size 2 --dp 2 --zero 1 >/dev/null &&
  $c "$root/test/e2e/inputs/cuda-hd64.hr" -o "$tree/plans/tp" --seq 64 --micro-batch-size 2 --tp 2 >/dev/null ||
    { echo "verify: compiling the plans failed"; exit 1; }
  # The default corpus, prepared here (the GPU machine has no licence texts to read).
  "$bin/heiretsu" data prepare --tokenizer byte /usr/share/common-licenses/* -o "$tree/corpus" >/dev/null ||
    { echo "verify: preparing the corpus failed"; exit 1; }
  # One gzip'd tar (about 30 MB; the tree is over 80 MB, mostly OpenBLAS and ICU's
  # data): the device tool carries at most 64 MiB. `run` unpacks it.
  tar -C "$tree" -czf "$pack/pack.tar.gz" . && rm -rf "$tree" ||
    { echo "verify: packing .gpu failed"; exit 1; }
  local bytes
  bytes=$(stat -c %s "$pack/pack.tar.gz")
  if [ "$bytes" -gt $((60 * 1024 * 1024)) ]; then
    echo "verify: .gpu/pack.tar.gz is $((bytes >> 20)) MiB, over the 60 MiB the issue allows"; exit 1
  fi
  echo "verify: .gpu/pack.tar.gz is $((bytes >> 20)) MiB; carry it: run(carry=[\".gpu\"], command=\"bench/gpu/verify.sh run\")"
}

run() {
  local budget=${1:-420} start=$SECONDS
  local out=${OUT:-/tmp/heiretsu-gpu-out}
  mkdir -p "$out"
  [ -f "$pack/pack.tar.gz" ] || { echo "verify: no .gpu/pack.tar.gz (run 'bench/gpu/verify.sh prepare' first and carry .gpu)"; exit 2; }
  local tree="${TMPDIR:-/tmp}/heiretsu-gpu"
  rm -rf "$tree" && mkdir -p "$tree" && tar -C "$tree" -xzf "$pack/pack.tar.gz" ||
    { echo "verify: unpacking .gpu/pack.tar.gz failed"; exit 2; }
  local bin="$tree/bin" plans="$tree/plans"
  # CUDA's libraries where the image keeps them, then ours.
  local cuda_libs
  cuda_libs=$(ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/lib /usr/local/cuda*/targets/x86_64-linux/lib \
    /opt/*/.venv/lib/python3*/site-packages/nvidia/cu*/lib 2>/dev/null | tr '\n' ':')
  export LD_LIBRARY_PATH="$tree/lib:${cuda_libs}${LD_LIBRARY_PATH:-}"
  : > "$out/verify.jsonl"
  local rows=()
  record() { # name, status, detail
    rows+=("$(printf '%-18s %-8s %s' "$1" "$2" "$3")")
    printf '{"check":"%s","status":"%s","detail":"%s","seconds":%d}\n' "$1" "$2" \
      "$(echo "$3" | tr -d '"\\' | tr '\n' ' ')" "$((SECONDS - start))" >> "$out/verify.jsonl"
  }
  left() { echo $((budget - (SECONDS - start))); }
  # "N steps, max rel loss diff X" of two metrics files, step by step.
  compare() {
    paste <(sed -n 's/.*"loss":\([^,]*\),.*/\1/p' "$1") <(sed -n 's/.*"loss":\([^,]*\),.*/\1/p' "$2") |
      awk '{d = $1 - $2; if (d < 0) d = -d; r = d / $1; if (r > m) m = r; n++}
           END {printf "%d steps, max rel loss diff %.3g", n, m}'
  }
  check() { # name, timeout, command...: PASS on exit 0 without FAIL lines
    local name=$1 limit=$2; shift 2
    if [ "$(left)" -lt "$limit" ]; then record "$name" SKIP "out of time"; return; fi
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    if grep -q '^skipped: no GPU' "$out/$name.log"; then record "$name" SKIP "no GPU"
    elif [ $rc -eq 0 ] && ! grep -q '^FAIL' "$out/$name.log"; then
      record "$name" PASS "$(grep -E '^(PASS|device|cuda driver)' "$out/$name.log" | tail -1)"
    else record "$name" FAIL "exit $rc: $(grep -m1 -E 'FAIL|error' "$out/$name.log")"; fi
  }
  check gpu-info 30 "$bin/heiretsu-gpu-info"
  if grep -q '^skipped: no GPU' "$out/gpu-info.log"; then
    for c in cuda-check-gpt cuda-check-llama cuda-check-hd64 cuda-check-hd128 cuda-check-grid \
      cuda-check-zero cuda-check-tp cuda-check-decode train-200 tp2-one-gpu zero1-one-gpu; do
      record "$c" SKIP "no GPU"
    done
  else
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv > "$out/nvidia-smi.csv" 2>&1
    check cuda-check-gpt 120 "$bin/heiretsu-cuda-check" "$plans/gpt/program-0.hplan"
    check cuda-check-llama 120 "$bin/heiretsu-cuda-check" "$plans/llama/program-0.hplan"
    check cuda-check-hd64 90 "$bin/heiretsu-cuda-check" "$plans/hd64/program-0.hplan"
    check cuda-check-hd128 90 "$bin/heiretsu-cuda-check" "$plans/hd128/program-0.hplan"
    check cuda-check-grid 90 "$bin/heiretsu-cuda-check" "$plans/hd128/program-0.hplan" --max-blocks 2
    check cuda-check-zero 90 "$bin/heiretsu-cuda-check" "$plans/zero/program-0.hplan" --rank 1
    check cuda-check-tp 60 "$bin/heiretsu-cuda-check" "$plans/tp/program-0.hplan" --rank 1
    check cuda-check-decode 60 "$bin/heiretsu-cuda-check" "$plans/llama/decode.hplan" --max-blocks 2
    local flags=(--steps 200 --lr 3e-3 --warmup 10 --data "$tree/corpus" --log-every 50)
    if [ "$(left)" -ge 150 ]; then
      timeout 70 "$bin/heiretsu" run "$plans/train" "${flags[@]}" --metrics "$out/train-cpu.jsonl" > "$out/train-cpu.log" 2>&1
      timeout 70 "$bin/heiretsu" run "$plans/train" "${flags[@]}" --backend cuda --metrics "$out/train-cuda.jsonl" > "$out/train-cuda.log" 2>&1
      local diff
      diff=$(compare "$out/train-cpu.jsonl" "$out/train-cuda.jsonl")
      case "$diff" in
        "200 steps"*) record train-200 MEASURED "$diff (CPU vs CUDA, fp32)" ;;
        *) record train-200 FAIL "$diff; see train-cpu.log, train-cuda.log" ;;
      esac
    else record train-200 SKIP "out of time"; fi
    local tpflags=(--steps 20 --lr 3e-3 --data "$tree/corpus" --backend cuda) tp1=0
    if [ "$(left)" -ge 90 ]; then
      tp1=1
      timeout 40 "$bin/heiretsu" run "$plans/train" "${tpflags[@]}" --metrics "$out/tp1.jsonl" > "$out/tp1.log" 2>&1
      timeout 40 "$bin/heiretsu" run "$plans/tp2" "${tpflags[@]}" --metrics "$out/tp2.jsonl" > "$out/tp2.log" 2>&1
      local tpdiff
      tpdiff=$(compare "$out/tp1.jsonl" "$out/tp2.jsonl")
      case "$tpdiff" in
        "20 steps"*) record tp2-one-gpu MEASURED "$tpdiff (tp=2 vs one rank, CUDA)" ;;
        *) record tp2-one-gpu FAIL "$tpdiff; see tp1.log, tp2.log" ;;
      esac
    else record tp2-one-gpu SKIP "out of time"; fi
    if [ "$(left)" -ge 50 ] && [ "$tp1" = 1 ]; then
      # The zero plan (micro-batch 2 on each of 2 ranks) has tp1's global batch of 4.
      timeout 40 "$bin/heiretsu" run "$plans/zero" "${tpflags[@]}" --metrics "$out/zero1.jsonl" > "$out/zero1.log" 2>&1
      local zdiff
      zdiff=$(compare "$out/tp1.jsonl" "$out/zero1.jsonl")
      case "$zdiff" in
        "20 steps"*) record zero1-one-gpu MEASURED "$zdiff (dp=2 zero=1 vs one rank, CUDA)" ;;
        *) record zero1-one-gpu FAIL "$zdiff; see tp1.log, zero1.log" ;;
      esac
    else record zero1-one-gpu SKIP "out of time or no single-rank run"; fi
  fi
  printf '%s\n' "${rows[@]}"
  echo "verify: $((SECONDS - start)) s; results in $out/verify.jsonl"
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bench/gpu/verify.sh prepare | run [SECONDS]" >&2; exit 2 ;;
esac
