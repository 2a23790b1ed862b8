#!/usr/bin/env bash
# Pipeline benchmark: gpt-tiny (examples/gpt-tiny.hr, 4 layers; or MODEL below) compiled for pp = 2
# and pp = 4 with M = pp, 2pp and 4pp microbatches under each schedule (gpipe, 1f1b,
# zb-h1; and interleaved with --virtual-stages 2 where 2 pp <= 4 layers, i.e. pp = 2,
# M a multiple of pp), then for each layout:
#   - from `heiretsu explain`: the simulated bubble, the formula and its value (also
#     computed here exactly), each stage's activation peak, and the peaks the gpipe
#     plan of the same pp and M has (compiled first; it is one of the layouts);
#   - from `heiretsu run --steps 5 --trace T.json --metrics M.jsonl` (traced steps
#     2-4), one thread per rank: the measured bubble per stage and its mean, and the
#     step time (median of steps 2..5; step 1 includes warm-up).
# Micro-batch 4 x sequence 128 (512 tokens): a stage's forward of a microbatch is
# 16-25 ms here (backward 40-55), against 0.2-1 ms per send/recv hand-off, so the
# hand-offs cost a few percent of a unit instead of up to ~15 % at micro-batch 1
# (forward ~6 ms), and the whole script takes about 80 s on the 2-core machine. pp = 4 puts 4 ranks on fewer cores where
# nproc < 4: such records say "oversubscribed": true and their measured bubble is
# mostly CPU sharing, not the schedule (bench/results/README.md).
# MODEL=gpt-wide runs gpt-tiny widened to d_model 512 (8 heads) instead: there the
# GEMMs dominate every pass, so a microbatch's forward, input-gradient and
# weight-gradient passes take about the same time, as the zb-h1 formula assumes
# (gpt-tiny's weight-gradient pass is a fifth of its input-gradient pass:
# attention's backward has no weights). MODEL=gpt-wider: d_model 1024, 16 heads,
# where the weight-gradient pass comes closest to the input-gradient pass.
# Appends one JSON line per layout to bench/results/pipeline.jsonl and prints a table.
#   usage: bench/run-pipeline.sh [BUILD_DIR]
#   env:   MODEL (gpt-tiny | gpt-wide | gpt-wider), MBS (4), SEQ (128), STEPS (5; traced steps
#          2..STEPS-1), and for a quick try: PP ("2 4"), MULTS ("1 2 4": M = pp x
#          each), OUT (the results file)
# Compiling and running apart (pp = 4 needs >= 4 cores, which the GPU machine of
# bench/gpu/verify.sh has but without the compiler): COMPILE_ONLY=DIR compiles every
# layout's plan into DIR and stops; PLANS=DIR then runs from DIR's plans instead of
# compiling (the same MODEL, MBS, SEQ, PP and MULTS; BUILD_DIR/bin/heiretsu need not
# have the compiler).
set -euo pipefail
build=${1:-build}
heiretsu="$build/bin/heiretsu"
out=${OUT:-bench/results/pipeline.jsonl}
mbs=${MBS:-4}
seq=${SEQ:-128}
steps=${STEPS:-5}
[ "$steps" -ge 4 ] || { echo "STEPS must be >= 4" >&2; exit 1; }
trace_steps="2:$((steps - 1))"
cores=$(nproc)
cpu=$("$(dirname "$0")/cpu-name.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
start_all=$(date +%s)
model=${MODEL:-gpt-tiny}
compile_only=${COMPILE_ONLY:-}
plans=${PLANS:-}
if [ -n "$plans" ]; then
  layers=$(cat "$plans/$model.layers") || { echo "PLANS=$plans has no $model plans" >&2; exit 2; }
else
case "$model" in
  gpt-tiny) cp examples/gpt-tiny.hr "$tmp/spec.hr" ;;
  gpt-wide)
    sed 's/^model "gpt-tiny"/model "gpt-wide"/; s/^  d_model = 128$/  d_model = 512/; s/^  heads   = 4$/  heads   = 8/' \
      examples/gpt-tiny.hr > "$tmp/spec.hr"
    grep -q 'd_model = 512' "$tmp/spec.hr" && grep -q 'heads   = 8' "$tmp/spec.hr" ||
      { echo "cannot widen gpt-tiny" >&2; exit 1; } ;;
  gpt-wider)
    sed 's/^model "gpt-tiny"/model "gpt-wider"/; s/^  d_model = 128$/  d_model = 1024/; s/^  heads   = 4$/  heads   = 16/' \
      examples/gpt-tiny.hr > "$tmp/spec.hr"
    grep -q 'd_model = 1024' "$tmp/spec.hr" && grep -q 'heads   = 16' "$tmp/spec.hr" ||
      { echo "cannot widen gpt-tiny" >&2; exit 1; } ;;
  *) echo "MODEL must be gpt-tiny, gpt-wide or gpt-wider, not '$model'" >&2; exit 2 ;;
esac
layers=$(sed -n 's/^  layers *= *\([0-9]*\)$/\1/p' "$tmp/spec.hr")
fi
if [ -n "$compile_only" ]; then mkdir -p "$compile_only" && echo "$layers" > "$compile_only/$model.layers"; fi

# "[a, b, c]" from words.
json_list() { local IFS=,; echo "[$*]" | sed 's/,/, /g; s/\b[-]*nan\b/null/gI'; }
# A number, or null for NaN (a stage whose pipeline phase took no time: trace.h).
json_num() { case "$1" in *[nN][aA][nN]*|"") echo null ;; *) echo "$1" ;; esac; }
# The activation peaks per stage from an explain output (the "activations peak per
# stage" block: "  stage S  BYTES (x MiB), N microbatches").
peaks() {
  sed -n '/^activations peak per stage/,$p' "$1" | sed -n 's/^  stage [0-9]*  *\([0-9]*\) .*/\1/p'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

rows=()
any_over=0
for pp in ${PP:-2 4}; do
  for mult in ${MULTS:-1 2 4}; do
    m=$((pp * mult))
    layouts="gpipe:1 1f1b:1 zb-h1:1"
    if [ $((layers % (2 * pp))) -eq 0 ] && [ $((m % pp)) -eq 0 ]; then layouts="$layouts interleaved:2"; fi
    gpipe_peaks=""
    for layout in $layouts; do
      IFS=: read -r sched v <<< "$layout"
      name="pp$pp-m$m-$sched"
      dir="$tmp/$name"
      flags=(--pp "$pp" --microbatches "$m" --schedule "$sched")
      [ "$v" -gt 1 ] && flags+=(--virtual-stages "$v")
      if [ -n "$plans" ]; then
        dir="$plans/$model-$name"
        [ -d "$dir" ] || { echo "PLANS=$plans has no plan $model-$name" >&2; exit 2; }
      else
        [ -n "$compile_only" ] && dir="$compile_only/$model-$name"
        "$heiretsu" compile "$tmp/spec.hr" --emit plan -o "$dir" "${flags[@]}" \
          --micro-batch-size "$mbs" --seq "$seq" > /dev/null
        [ -n "$compile_only" ] && continue
      fi
      "$heiretsu" explain "$dir" > "$tmp/$name.explain"
      bline=$(grep '^bubble:' "$tmp/$name.explain")
      # bubble: 20.0% of the stages' time idle (simulated); (p - 1) / (m + p - 1) = 20.0% for ...
      sim=$(echo "$bline" | sed -n 's/^bubble: \([0-9.]*\)% .*/\1/p')
      formula=$(echo "$bline" | sed -n 's/.*(simulated); \(.*\) = [0-9.]*% for .*/\1/p')
      formula_pct=$(echo "$bline" | sed -n 's/.* = \([0-9.]*\)% for .*/\1/p')
      case "$sched" in
        gpipe|1f1b) den=$((m + pp - 1)) ;;
        zb-h1) den=$((3 * m + pp - 1)) ;;
        interleaved) den=$((v * m + pp - 1)) ;;
      esac
      formula_exact=$(awk -v p="$pp" -v d="$den" 'BEGIN { printf "%.4f", (p - 1) / d }')
      awk -v a="$formula_exact" -v b="$formula_pct" 'BEGIN { exit !((a * 100 - b) ^ 2 < 0.01) }' ||
        { echo "$name: explain's formula value $formula_pct% is not (p-1)/$den = $formula_exact" >&2; exit 1; }
      read -r -a act <<< "$(peaks "$tmp/$name.explain" | xargs)"
      [ "${#act[@]}" -eq "$pp" ] || { echo "$name: expected $pp activation peaks in explain" >&2; exit 1; }
      [ "$sched" = gpipe ] && gpipe_peaks="${act[*]}"
      read -r -a gact <<< "$gpipe_peaks"

      rm -f "$tmp/$name.metrics.jsonl"
      "$heiretsu" run "$dir" --steps "$steps" --trace "$tmp/$name.trace.json" \
        --trace-steps "$trace_steps" --metrics "$tmp/$name.metrics.jsonl" \
        --log-every 1000 > "$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log" >&2; exit 1; }
      # trace: FILE (R ranks, steps A-B); measured bubble per stage: 0.21 0.20; mean 0.21
      tline=$(grep 'trace: .*measured bubble per stage' "$tmp/$name.log")
      ranks=$(echo "$tline" | sed -n 's/.*(\([0-9]*\) ranks, .*/\1/p')
      traced=$(echo "$tline" | sed -n 's/.* ranks, steps \([0-9-]*\)).*/\1/p')
      read -r -a meas <<< "$(echo "$tline" | sed -n 's/.*measured bubble per stage: \(.*\); mean .*/\1/p')"
      mean=$(echo "$tline" | sed -n 's/.*; mean \([0-9.naNinf-]*\).*/\1/p')
      # step_ms of steps 2..STEPS (one JSON object per step).
      step_all=$(sed -n 's/.*"step":\([0-9]*\),.*"step_ms":\([0-9.]*\).*/\1 \2/p' "$tmp/$name.metrics.jsonl" |
        awk '$1 >= 2 { print $2 }' | xargs)
      step_ms=$(echo "$step_all" | tr ' ' '\n' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
      tok_s=$(awk -v ms="$step_ms" -v t="$((m * mbs * seq))" 'BEGIN { printf "%.0f", t / ms * 1000 }')
      over=false; [ "$ranks" -gt "$cores" ] && over=true && any_over=1
      diff=$(awk -v a="$mean" -v b="$formula_exact" 'BEGIN { printf "%.3f", a - b }')
      sim_f=$(awk -v s="$sim" 'BEGIN { printf "%.3f", s / 100 }')

      line=$(printf '{"model": "%s", "pp": %d, "microbatches": %d, "schedule": "%s", "virtual_stages": %d, "micro_batch_size": %d, "seq": %d, "ranks": %d, "threads_per_rank": 1, "oversubscribed": %s, "simulated_bubble": %s, "formula": "%s", "formula_bubble": %s, "measured_bubble_per_stage": %s, "measured_bubble_mean": %s, "measured_minus_formula": %s, "traced_steps": "%s", "activation_peak_bytes": %s, "gpipe_activation_peak_bytes": %s, "step_ms": %s, "step_ms_per_step": %s, "tokens_per_s": %s}' \
        "$model" "$pp" "$m" "$sched" "$v" "$mbs" "$seq" "$ranks" "$over" "$sim_f" "$formula" "$formula_exact" \
        "$(json_list "${meas[@]}")" "$(json_num "$mean")" "$(json_num "$diff")" "$traced" "$(json_list "${act[@]}")" \
        "$(json_list "${gact[@]}")" "$step_ms" "$(json_list $step_all)" "$tok_s")
      printf '{"date": "%s", "cpu": "%s", "cores": %s, "result": %s}\n' \
        "$(date -u +%Y-%m-%dT%H:%MZ)" "$cpu" "$cores" "$line" >> "$out"

      act_mib=(); for b in "${act[@]}"; do act_mib+=("$(mib "$b")"); done
      gact_mib=(); for b in "${gact[@]}"; do gact_mib+=("$(mib "$b")"); done
      label=$sched; [ "$v" -gt 1 ] && label="$sched v=$v"
      rows+=("$(printf '%-5s %-15s %3d %7.1f%% %7.1f%% %-23s %5.2f%s  %-23s %-23s %8s' \
        "pp=$pp" "$label" "$m" "$sim" "$(awk -v f="$formula_exact" 'BEGIN { print f * 100 }')" \
        "${meas[*]}" "$mean" "$($over && echo '*' || echo ' ')" "${act_mib[*]}" "${gact_mib[*]}" "$step_ms")")
      echo "done: $name" >&2
    done
  done
done

if [ -n "$compile_only" ]; then echo "compiled the plans into $compile_only"; exit 0; fi
total=$(( $(date +%s) - start_all ))
echo
echo "$model, micro-batch $mbs x seq $seq, $cores cores ($cpu), 1 thread per rank, traced steps $trace_steps"
printf '%-5s %-15s %3s %8s %8s %-23s %6s  %-23s %-23s %8s\n' layout schedule M simul. formula \
  "measured bubble/stage" mean "act. peak MiB/stage" "gpipe's MiB/stage" "ms/step"
for r in "${rows[@]}"; do echo "$r"; done
[ "$any_over" = 1 ] && echo "* oversubscribed: more ranks than cores; the measured bubble is then mostly CPU sharing"
echo "appended ${#rows[@]} records to $out; total ${total} s"
