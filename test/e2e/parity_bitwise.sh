#!/usr/bin/env bash
# Shows that two builds train bit-identically on every parity layout: runs the parity
# suite (parity.sh) with the binaries of each build, then compares, layout by layout,
# every logged loss's exact bits (loss_hex in the metrics) and every checkpoint's
# tensors.bin byte for byte. Used to prove that a restructuring (plan format,
# executor) changed no arithmetic; it is not part of `make test` because it needs a
# second build (e.g. the previous commit's build/bin copied aside).
#   usage: parity_bitwise.sh OLD_BIN_DIR NEW_BIN_DIR WORK_DIR
# Prints "same NAME" or "DIFF NAME" per run and checkpoint, then a summary; exits 1 on
# a difference.
set -uo pipefail
old=$1 new=$2 work=$3
here=$(dirname "$0")
rm -rf "$work/old" "$work/new"
"$here/parity.sh" "$old" "$work/old" "$work/cache" > "$work/old.log" 2>&1 || { echo "old build's parity run failed: $work/old.log"; exit 1; }
"$here/parity.sh" "$new" "$work/new" "$work/cache" > "$work/new.log" 2>&1 || { echo "new build's parity run failed: $work/new.log"; exit 1; }
same=0 diff=0
bits() { sed -n 's/.*"loss_hex":"\([^"]*\)".*/\1/p' "$1"; }
for f in "$work"/old/*.jsonl; do
  n=$(basename "$f")
  if [ -s "$f" ] && cmp -s <(bits "$f") <(bits "$work/new/$n"); then
    echo "same $n ($(bits "$f" | wc -l) losses)"; same=$((same + 1))
  else
    echo "DIFF $n"; diff=$((diff + 1))
  fi
done
for f in "$work"/old/*.ckpt/step_*/tensors.bin; do
  rel=${f#"$work/old/"}
  if cmp -s "$f" "$work/new/$rel"; then same=$((same + 1)); else echo "DIFF $rel"; diff=$((diff + 1)); fi
done
echo "bitwise: $same same, $diff different"
[ "$diff" -eq 0 ]
