#!/usr/bin/env bash
# fp32 GEMM on heiretsu's linear-layer shapes (forward, dx and dW of GPT-2 small's
# and gpt-tiny's layers: bench/blas_gemm.cc) with three libraries -- OpenBLAS
# (cblas_sgemm, what heiretsu links), BLIS (bli_sgemm, Debian's default threading
# variant) and oneDNN (dnnl_sgemm) -- to choose the CPU BLAS by measurement
# (issue #15). OpenBLAS runs twice: with OPENBLAS_CORETYPE unset (its own
# detection) and set as runtime/cpu/threading.cc would set it (SkylakeX where the
# CPU has AVX-512 and OpenBLAS did not detect an AVX-512 core; otherwise heiretsu
# sets nothing, and this run names the detected core explicitly).
# Each library is a separate executable built from the same source with
# g++ -O3 -march=native into a temp dir, run with THREADS threads (default 2:
# OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, BLIS_NUM_THREADS); each first checks its
# GEMMs against a float64 reference (--check), then times every shape (median of 7
# after 2 warm-ups). Appends one JSON line per measurement, with the date, the CPU
# and its vector flags, to bench/results/blas.jsonl, and prints a summary table.
# Not a build dependency: needs libopenblas-dev, libblis-dev, libdnnl-dev.
# Run it under the shared lock so nothing else competes for the cores:
#   flock /tmp/heiretsu-build.lock bench/run-blas.sh
# usage: [THREADS=2] bench/run-blas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
out=bench/results/blas.jsonl
lib=/usr/lib/x86_64-linux-gnu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cxx="g++ -std=c++17 -O3 -march=native -Wall -Wextra"
$cxx -DBENCH_OPENBLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/blas_gemm.cc \
  -o "$tmp/openblas" -lopenblas
# BLIS: the variant the libblis.so alternative points at (Debian: blis-openmp or
# blis-pthread), linked by its directory so the choice is explicit.
blis_dir=$(dirname "$(readlink -f "$lib/libblis.so")")
blis_inc=/usr/include/x86_64-linux-gnu/$(basename "$blis_dir")
$cxx -DBENCH_BLIS -isystem "$blis_inc" bench/blas_gemm.cc -o "$tmp/blis" \
  -L"$blis_dir" -Wl,-rpath,"$blis_dir" -lblis -fopenmp -lpthread
$cxx -DBENCH_DNNL bench/blas_gemm.cc -o "$tmp/onednn" -ldnnl -fopenmp

cpu=$(bench/cpu-name.sh)
flags=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)
have=()
for f in sse4_2 avx fma avx2 avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 amx_tile; do
  case " $flags " in *" $f "*) have+=("$f") ;; esac
done
flag_summary=${have[*]}
avx512=yes  # what runtime/cpu/kernels.cc's CpuHasAvx512 requires
for f in avx512f avx512bw avx512dq avx512vl; do
  case " $flags " in *" $f "*) ;; *) avx512=no ;; esac
done

detected=$(env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 "$tmp/openblas" --info | jq -r .kernel)
case "$detected" in
  SkylakeX|Cooperlake|SapphireRapids) chosen=$detected ;;
  *) if [ "$avx512" = yes ]; then chosen=SkylakeX; else chosen=$detected; fi ;;
esac

date=$(date -u +%Y-%m-%dT%H:%MZ)
: > "$tmp/run.jsonl"
run() {  # run NAME CORETYPE-or-empty EXE
  local name=$1 core=$2 exe=$3
  local envs=(OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
              BLIS_NUM_THREADS="$threads")
  local set_core=(env -u OPENBLAS_CORETYPE)
  [ -n "$core" ] && set_core=(env OPENBLAS_CORETYPE="$core")
  # The 1-minute load average before the variant starts: near 0 when nothing
  # else runs (the benchmark's own threads count once it has run a while).
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $name (OPENBLAS_CORETYPE=${core:-unset}, $threads threads, load $load)" >&2
  local line
  for mode in --check ""; do
    while IFS= read -r line; do
      echo "$line" >&2
      printf '{"date": "%s", "cpu": "%s", "cores": %s, "flags": "%s", "variant": "%s", "coretype_env": "%s", "load1": %s, "result": %s}\n' \
        "$date" "$cpu" "$(nproc)" "$flag_summary" "$name" "${core:-unset}" "$load" "$line" \
        | tee -a "$tmp/run.jsonl" >> "$out"
    done < <("${set_core[@]}" "${envs[@]}" "$tmp/$exe" $mode)
  done
}
run "openblas" "" openblas
run "openblas CORETYPE=$chosen" "$chosen" openblas
run "blis" "" blis
run "onednn" "" onednn

# Summary: GFLOP/s per (shape, GEMM) and library, and the FLOP-weighted rate over
# each model's GEMMs (total FLOPs / total time).
jq -rs '
  [.[] | select(.result.gflops)] as $r
  | ($r | map(.variant) | unique) as $v
  | "| shape | gemm | " + ($v | join(" | ")) + " |",
    "|---|---|" + ($v | map("---|") | join("")),
    ($r | group_by([.result.model, .result.rows, .result.layer, .result.gemm])
        | sort_by(.[0].result.model, .[0].result.rows) | .[]
        | . as $g
        | "| \($g[0].result.model) \($g[0].result.rows)x\($g[0].result.in)->\($g[0].result.out) \($g[0].result.layer) | \($g[0].result.gemm) | "
          + ($v | map(. as $n | ($g[] | select(.variant == $n) | .result.gflops | tostring)) | join(" | ")) + " |"),
    ($r | group_by([.result.model, .result.rows]) | .[]
        | . as $g
        | "| **\($g[0].result.model) rows \($g[0].result.rows), all GEMMs** | | "
          + ($v | map(. as $n | [$g[] | select(.variant == $n) | .result]
                  | ((map(2 * .m * .n * .k) | add) / (map(.median_ms) | add) / 1e6 * 10 | round / 10)
                  | tostring) | join(" | ")) + " |")
' "$tmp/run.jsonl"
