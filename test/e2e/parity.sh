#!/usr/bin/env bash
# The parity suite (docs/architecture.md §3): trains gpt-tiny (llama-tiny, moe-tiny) for 10 steps at
# global batch 4 on one rank and on each layout below, then compares every step's loss, the
# validation losses of steps 5 and 10, and the final parameters with the single-rank run. Both must agree within 1e-5 relative:
# losses step by step (|a - b| / |b|), parameters as one vector (L2, see
# heiretsu-ckpt-diff). Prints one line per layout and a summary; exits 1 on a FAIL.
#   usage: parity.sh BIN_DIR WORK_DIR [CACHE_DIR]
# PRECISION=bf16|fp16 instead trains every run in that precision (compile --precision)
# on a few layouts and compares them with the single-rank run in the same precision,
# losses within 1e-3 and parameters within 2e-2: a 16-bit store rounds to 2^-9 (bf16)
# or 2^-12 (fp16) relative, and a rank that sums its part of a GEMM in another order
# may land on the other side of a rounding boundary, so layouts agree only to 16-bit
# rounding (measured on the project's EPYC VM, gpt-tiny, 10 steps: losses within
# 1.5e-4 (bf16) and 2.5e-5 (fp16), parameters within 5.9e-3 and 1.6e-3).
set -uo pipefail
bin=$1 work=$2 cache=${3:-$2/cache}
precision=${PRECISION:-fp32}
case "$precision" in
  fp32) tol=1e-5 param_tol=1e-5 ;;
  bf16|fp16) tol=1e-3 param_tol=2e-2 ;;
  *) echo "parity.sh: PRECISION must be fp32, bf16 or fp16, got '$precision'" >&2; exit 2 ;;
esac
mkdir -p "$work"
spec=$(dirname "$0")/../../examples/gpt-tiny.hr

# Every run also measures the validation loss at steps 5 and 10 (2 batches of the
# default corpus's held-out tenth), compared like the losses.
# $run_env: variables for the run (e.g. HEIRETSU_COMM_SHM=0: TCP for every
# collective instead of shared memory between the ranks of this machine).
run_env=()
train() { # name, compile flags... (the model: $spec)
  local name=$1; shift
  "$bin/heiretsu" compile "$spec" --emit plan -o "$work/$name.plan" --seq 32 --precision "$precision" "$@" > /dev/null &&
  env "${run_env[@]}" "$bin/heiretsu" run "$work/$name.plan" --steps 10 --lr 3e-3 --warmup 2 --cache-dir "$cache" \
    --val-every 5 --val-batches 2 \
    --metrics "$work/$name.jsonl" --save-dir "$work/$name.ckpt" > "$work/$name.log" 2>&1
}
losses() { sed -n 's/.*"loss":\([0-9.e+-]*\),.*/\1/p' "$1"; }
val_losses() { sed -n 's/.*"val_loss":\([0-9.e+-]*\)[,}].*/\1/p' "$1"; }

train single --micro-batch-size 4 || { echo "FAIL single-rank baseline"; exit 1; }
pass=0 fail=0
base=single
run_layout() { # label, compile flags... (compared with the run named $base)
  local label=$1; shift
  local name=${label// /_}; name=${name//=/}
  if ! train "$name" "$@"; then
    echo "FAIL $label (the run failed: see $work/$name.log)"; fail=$((fail + 1)); return
  fi
  local loss_diff param_line param_diff
  loss_diff=$(paste <(losses "$work/$base.jsonl"; val_losses "$work/$base.jsonl") \
                     <(losses "$work/$name.jsonl"; val_losses "$work/$name.jsonl") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > m) m = r}
         END {if (NR != 12) m = 1; printf "%.3g", m}')
  param_line=$("$bin/heiretsu-ckpt-diff" "$work/$base.ckpt/step_00000010" "$work/$name.ckpt/step_00000010")
  param_diff=$(echo "$param_line" | sed -n 's/.*rel diff \([0-9.e+-]*\) .*/\1/p')
  local worst
  worst=$(awk -v a="$loss_diff" -v b="$param_diff" 'BEGIN {printf "%.2g", (a > b ? a : b)}')
  if awk -v a="$loss_diff" -v b="${param_diff:-1}" -v t=$tol -v pt=$param_tol 'BEGIN {exit !(a <= t && b <= pt)}'; then
    echo "PASS $label (max rel diff $worst: losses $loss_diff, parameters $param_diff)"; pass=$((pass + 1))
  else
    echo "FAIL $label (max rel diff $worst: losses $loss_diff, parameters $param_diff)"; fail=$((fail + 1))
  fi
}
if [ "$precision" != fp32 ]; then  # the 16-bit layouts
  run_layout "dp=2 tp=1 pp=1 ep=1 zero=0 sp=0 precision=$precision" --dp 2 --micro-batch-size 2
  run_layout "dp=2 tp=1 pp=1 ep=1 zero=1 sp=0 precision=$precision" --dp 2 --micro-batch-size 2 --zero 1
  run_layout "dp=1 tp=2 pp=1 ep=1 zero=0 sp=1 precision=$precision" --tp 2 --micro-batch-size 4 --sequence-parallel
  run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=1f1b precision=$precision" --pp 2 --micro-batch-size 1 --microbatches 4
  run_layout "dp=2 tp=2 pp=1 ep=1 zero=0 sp=0 precision=$precision" --dp 2 --tp 2 --micro-batch-size 2
  echo "parity: $pass passed, $fail failed (precision $precision, tolerance $tol, parameters $param_tol)"
  [ "$fail" -eq 0 ]
  exit
fi
run_layout "dp=2 tp=1 pp=1 ep=1 zero=0 sp=0" --dp 2 --micro-batch-size 2
run_layout "dp=4 tp=1 pp=1 ep=1 zero=0 sp=0" --dp 4 --micro-batch-size 1
# Several gradient buckets (1 MiB of gpt-tiny's 3.2 MiB each), reduced (ZeRO-1:
# reduce-scattered) in the background during the last microbatch's backward pass.
run_layout "dp=2 tp=1 pp=1 ep=1 zero=0 sp=0 microbatches=2 buckets=1MiB" --dp 2 --micro-batch-size 1 --microbatches 2 --bucket-mb 1
run_layout "dp=2 tp=1 pp=1 ep=1 zero=1 sp=0" --dp 2 --micro-batch-size 2 --zero 1
run_layout "dp=2 tp=1 pp=1 ep=1 zero=1 sp=0 microbatches=2 buckets=1MiB" --dp 2 --micro-batch-size 1 --microbatches 2 --zero 1 --bucket-mb 1
# The same over TCP alone (as across machines): all_reduce, reduce_scatter,
# all_gather and barriers through Gloo instead of shared memory.
run_env=(HEIRETSU_COMM_SHM=0)
run_layout "dp=2 tp=1 pp=1 ep=1 zero=0 sp=0 transport=tcp" --dp 2 --micro-batch-size 2
run_layout "dp=2 tp=2 pp=1 ep=1 zero=1 sp=1 transport=tcp" --dp 2 --tp 2 --micro-batch-size 2 --zero 1 --sequence-parallel
run_env=()
run_layout "dp=4 tp=1 pp=1 ep=1 zero=1 sp=0" --dp 4 --micro-batch-size 1 --zero 1
run_layout "dp=1 tp=2 pp=1 ep=1 zero=0 sp=0" --tp 2 --micro-batch-size 4
run_layout "dp=1 tp=2 pp=1 ep=1 zero=0 sp=1" --tp 2 --micro-batch-size 4 --sequence-parallel
run_layout "dp=1 tp=4 pp=1 ep=1 zero=0 sp=0" --tp 4 --micro-batch-size 4
run_layout "dp=1 tp=4 pp=1 ep=1 zero=0 sp=1" --tp 4 --micro-batch-size 4 --sequence-parallel
run_layout "dp=2 tp=2 pp=1 ep=1 zero=0 sp=0 buckets=1MiB" --dp 2 --tp 2 --micro-batch-size 2 --bucket-mb 1
run_layout "dp=2 tp=2 pp=1 ep=1 zero=1 sp=1" --dp 2 --tp 2 --micro-batch-size 2 --zero 1 --sequence-parallel
# Checkpoints load on any layout: a tp=2 run saves at step 5; dp=2 with ZeRO-1 and
# tp=4 with sequence parallelism each resume it to step 10 and must match the
# single-rank run (steps 6-10 and the final parameters).
resume_layout() { # label, compile flags...
  local label=$1; shift
  local name=resume_${label// /_}; name=${name//=/}; name=${name//>/}
  rm -rf "$work/$name.ckpt"
  if ! "$bin/heiretsu" compile "$spec" --emit plan -o "$work/$name.plan" --seq 32 "$@" > /dev/null ||
     ! "$bin/heiretsu" run "$work/$name.plan" --steps 10 --lr 3e-3 --warmup 2 --cache-dir "$cache" \
         --resume "$work/saved.ckpt/step_00000005" --metrics "$work/$name.jsonl" \
         --save-dir "$work/$name.ckpt" > "$work/$name.log" 2>&1; then
    echo "FAIL resume $label (see $work/$name.log)"; fail=$((fail + 1)); return
  fi
  local loss_diff param_diff
  loss_diff=$(paste <(losses "$work/$base.jsonl" | tail -5) <(losses "$work/$name.jsonl") |
    awk '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > m) m = r}
         END {if (NR != 5) m = 1; printf "%.3g", m}')
  param_diff=$("$bin/heiretsu-ckpt-diff" "$work/$base.ckpt/step_00000010" "$work/$name.ckpt/step_00000010" |
    sed -n 's/.*rel diff \([0-9.e+-]*\) .*/\1/p')
  if awk -v a="$loss_diff" -v b="${param_diff:-1}" -v t=$tol 'BEGIN {exit !(a <= t && b <= t)}'; then
    echo "PASS resume $label (losses $loss_diff, parameters $param_diff)"; pass=$((pass + 1))
  else
    echo "FAIL resume $label (losses $loss_diff, parameters $param_diff)"; fail=$((fail + 1))
  fi
}
# Pipeline stages (global batch 4 as 4 or 2 microbatches): both schedules, two and
# four stages, an uneven cut, and with dp, ZeRO-1, tp and sequence parallelism.
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=1f1b" --pp 2 --micro-batch-size 1 --microbatches 4
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=gpipe" --pp 2 --micro-batch-size 1 --microbatches 4 --schedule gpipe
run_layout "dp=1 tp=1 pp=4 ep=1 zero=0 sp=0 schedule=1f1b" --pp 4 --micro-batch-size 1 --microbatches 4
run_layout "dp=1 tp=1 pp=4 ep=1 zero=0 sp=0 schedule=gpipe" --pp 4 --micro-batch-size 1 --microbatches 4 --schedule gpipe
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=zb-h1" --pp 2 --micro-batch-size 1 --microbatches 4 --schedule zb-h1
run_layout "dp=1 tp=1 pp=4 ep=1 zero=0 sp=0 schedule=zb-h1" --pp 4 --micro-batch-size 1 --microbatches 4 --schedule zb-h1
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=interleaved v=2" --pp 2 --micro-batch-size 1 --microbatches 4 --schedule interleaved --virtual-stages 2
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 stage-layers=3,1" --pp 2 --micro-batch-size 2 --microbatches 2 --stage-layers 3,1
run_layout "dp=2 tp=1 pp=2 ep=1 zero=0 sp=0" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2
run_layout "dp=2 tp=1 pp=2 ep=1 zero=1 sp=0" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2 --zero 1
run_layout "dp=2 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=zb-h1 buckets=1MiB" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2 --schedule zb-h1 --bucket-mb 1
run_layout "dp=2 tp=1 pp=2 ep=1 zero=1 sp=0 schedule=zb-h1 buckets=1MiB" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2 --schedule zb-h1 --zero 1 --bucket-mb 1
run_layout "dp=1 tp=2 pp=2 ep=1 zero=0 sp=1" --tp 2 --pp 2 --micro-batch-size 2 --microbatches 2 --sequence-parallel
run_layout "dp=1 tp=2 pp=2 ep=1 zero=0 sp=1 schedule=zb-h1" --tp 2 --pp 2 --micro-batch-size 2 --microbatches 2 --sequence-parallel --schedule zb-h1
run_layout "dp=2 tp=2 pp=2 ep=1 zero=0 sp=0" --dp 2 --tp 2 --pp 2 --micro-batch-size 1 --microbatches 2
run_layout "dp=2 tp=1 pp=2 ep=1 zero=0 sp=0 schedule=interleaved v=2 buckets=1MiB" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2 --bucket-mb 1 --schedule interleaved --virtual-stages 2
rm -rf "$work/saved.ckpt"
if "$bin/heiretsu" run "$work/dp1_tp2_pp1_ep1_zero0_sp0.plan" --steps 10 --lr 3e-3 --warmup 2 \
     --cache-dir "$cache" --save-dir "$work/saved.ckpt" --save-every 5 > "$work/saved.log" 2>&1; then
  resume_layout "tp=2 -> dp=2 zero=1" --dp 2 --micro-batch-size 2 --zero 1
  resume_layout "tp=2 -> tp=4 sp=1" --tp 4 --micro-batch-size 4 --sequence-parallel
  resume_layout "tp=2 -> dp=2 pp=2" --dp 2 --pp 2 --micro-batch-size 1 --microbatches 2
  resume_layout "tp=2 -> pp=4" --pp 4 --micro-batch-size 1 --microbatches 4
else
  echo "FAIL resume: the tp=2 run that saves did not finish (see $work/saved.log)"; fail=$((fail + 1))
fi
# A pipeline's checkpoint (the tied table saved once) loads on one stage and on four.
rm -rf "$work/saved.ckpt"
if "$bin/heiretsu" run "$work/dp1_tp1_pp2_ep1_zero0_sp0_schedule1f1b.plan" --steps 10 --lr 3e-3 \
     --warmup 2 --cache-dir "$cache" --save-dir "$work/saved.ckpt" --save-every 5 > "$work/saved.log" 2>&1; then
  resume_layout "pp=2 -> pp=1" --micro-batch-size 4
  resume_layout "pp=2 -> pp=4" --pp 4 --micro-batch-size 1 --microbatches 4
else
  echo "FAIL resume: the pp=2 run that saves did not finish (see $work/saved.log)"; fail=$((fail + 1))
fi

# The Llama-style model: RoPE, grouped-query attention (8 heads, 2 kv heads),
# RMSNorm, SwiGLU and an untied head, against its own single-rank run.
spec=$(dirname "$0")/../../examples/llama-tiny.hr
train llama-single --micro-batch-size 4 || { echo "FAIL llama single-rank baseline"; exit 1; }
base=llama-single
run_layout "dp=1 tp=2 pp=1 ep=1 zero=0 sp=1 model=llama-tiny" --tp 2 --micro-batch-size 4 --sequence-parallel
run_layout "dp=2 tp=2 pp=1 ep=1 zero=1 sp=1 model=llama-tiny" --dp 2 --tp 2 --micro-batch-size 2 --zero 1 --sequence-parallel
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 model=llama-tiny" --pp 2 --micro-batch-size 1 --microbatches 4
# MoE (docs/architecture.md §3): every routing decision is the sequence's own, so
# any split of the batch over dp and ep (the data ranks), of the experts over ep
# and of their hidden units over tp matches one rank. Layers 1 and 3 are MoE.
spec=$(dirname "$0")/../../examples/moe-tiny.hr
train moe-single --micro-batch-size 4 || { echo "FAIL moe single-rank baseline"; exit 1; }
base=moe-single
run_layout "dp=2 tp=1 pp=1 ep=1 zero=0 sp=0 model=moe-tiny" --dp 2 --micro-batch-size 2
run_layout "dp=1 tp=1 pp=1 ep=2 zero=0 sp=0 model=moe-tiny" --ep 2 --micro-batch-size 2
run_layout "dp=1 tp=1 pp=1 ep=4 zero=0 sp=0 model=moe-tiny" --ep 4 --micro-batch-size 1
run_layout "dp=2 tp=1 pp=1 ep=2 zero=0 sp=0 model=moe-tiny" --dp 2 --ep 2 --micro-batch-size 1
run_layout "dp=2 tp=1 pp=1 ep=2 zero=1 sp=0 model=moe-tiny" --dp 2 --ep 2 --micro-batch-size 1 --zero 1
run_layout "dp=1 tp=2 pp=1 ep=2 zero=0 sp=0 model=moe-tiny" --ep 2 --tp 2 --micro-batch-size 2
run_layout "dp=1 tp=2 pp=1 ep=1 zero=0 sp=1 model=moe-tiny" --tp 2 --micro-batch-size 4 --sequence-parallel
run_layout "dp=2 tp=2 pp=1 ep=2 zero=0 sp=0 model=moe-tiny" --dp 2 --ep 2 --tp 2 --micro-batch-size 1
# MoE layers on both stages, their auxiliary losses summed over the stages.
run_layout "dp=1 tp=1 pp=2 ep=1 zero=0 sp=0 model=moe-tiny" --pp 2 --micro-batch-size 1 --microbatches 4
run_layout "dp=1 tp=1 pp=2 ep=2 zero=0 sp=0 model=moe-tiny" --ep 2 --pp 2 --micro-batch-size 1 --microbatches 2
run_layout "dp=1 tp=2 pp=2 ep=2 zero=0 sp=0 model=moe-tiny" --ep 2 --tp 2 --pp 2 --micro-batch-size 1 --microbatches 2
# The full 4D mesh, 16 ranks (oversubscribing this machine's cores).
run_layout "dp=2 tp=2 pp=2 ep=2 zero=0 sp=0 model=moe-tiny" --dp 2 --ep 2 --tp 2 --pp 2 --micro-batch-size 1 --microbatches 1
# Expert shards are saved as whole tensors: an ep=2 checkpoint resumes on one
# rank, and a dp=2 one on ep=2 x tp=2.
rm -rf "$work/saved.ckpt"
if "$bin/heiretsu" run "$work/dp1_tp1_pp1_ep2_zero0_sp0_modelmoe-tiny.plan" --steps 10 --lr 3e-3 \
     --warmup 2 --cache-dir "$cache" --save-dir "$work/saved.ckpt" --save-every 5 > "$work/saved.log" 2>&1; then
  resume_layout "ep=2 -> ep=1 model=moe-tiny" --micro-batch-size 4
  resume_layout "ep=2 -> dp=2 ep=2 zero=1 model=moe-tiny" --dp 2 --ep 2 --micro-batch-size 1 --zero 1
else
  echo "FAIL resume: the ep=2 run that saves did not finish (see $work/saved.log)"; fail=$((fail + 1))
fi
rm -rf "$work/saved.ckpt"
if "$bin/heiretsu" run "$work/dp2_tp1_pp1_ep1_zero0_sp0_modelmoe-tiny.plan" --steps 10 --lr 3e-3 \
     --warmup 2 --cache-dir "$cache" --save-dir "$work/saved.ckpt" --save-every 5 > "$work/saved.log" 2>&1; then
  resume_layout "dp=2 -> ep=2 tp=2 model=moe-tiny" --ep 2 --tp 2 --micro-batch-size 2
else
  echo "FAIL resume: the moe dp=2 run that saves did not finish (see $work/saved.log)"; fail=$((fail + 1))
fi
# SwiGLU experts, top-1, capacity 1.0: tokens are dropped (the metrics say how
# many; the check below requires some), identically on every layout.
spec=$(dirname "$0")/inputs/moe-swiglu-top1.hr
train moe-top1-single --micro-batch-size 4 || { echo "FAIL moe top-1 single-rank baseline"; exit 1; }
base=moe-top1-single
if awk -F'"moe_dropped":' 'NF > 1 {split($2, v, /[,}]/); if (v[1] > 0) found = 1} END {exit !found}' \
     "$work/moe-top1-single.jsonl"; then
  echo "PASS moe top-1 capacity 1.0 drops tokens (moe_dropped > 0 in the metrics)"; pass=$((pass + 1))
else
  echo "FAIL moe top-1 capacity 1.0: no step reports moe_dropped > 0 ($work/moe-top1-single.jsonl)"
  fail=$((fail + 1))
fi
run_layout "dp=1 tp=1 pp=1 ep=2 zero=0 sp=0 model=moe-swiglu-top1" --ep 2 --micro-batch-size 2
run_layout "dp=2 tp=2 pp=1 ep=2 zero=0 sp=0 model=moe-swiglu-top1" --dp 2 --ep 2 --tp 2 --micro-batch-size 1
# Dropless: every token kept.
spec=$(dirname "$0")/inputs/moe-dropless.hr
train moe-dropless-single --micro-batch-size 4 || { echo "FAIL moe dropless single-rank baseline"; exit 1; }
base=moe-dropless-single
run_layout "dp=1 tp=1 pp=1 ep=4 zero=0 sp=0 model=moe-dropless" --ep 4 --micro-batch-size 1
run_layout "dp=1 tp=2 pp=1 ep=2 zero=0 sp=0 model=moe-dropless" --ep 2 --tp 2 --micro-batch-size 2
# A padded vocabulary (256 classes in 384 rows; with tp = 4 the last block is all
# padding), against its own single-rank run.
spec=$(dirname "$0")/inputs/gpt-tiny-padded.hr
train padded-single --micro-batch-size 4 || { echo "FAIL padded single-rank baseline"; exit 1; }
base=padded-single
run_layout "dp=1 tp=4 pp=1 ep=1 zero=0 sp=1 model=gpt-tiny-padded" --tp 4 --micro-batch-size 4 --sequence-parallel
echo "parity: $pass passed, $fail failed (tolerance $tol)"
[ "$fail" -eq 0 ]
