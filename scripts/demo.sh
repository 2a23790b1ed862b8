#!/usr/bin/env bash
# `make demo`: the main job of the current milestone. The runtime does not exist
# yet, so the demo compiles every example to the graph dialect, checks it
# round-trips through heiretsu-opt, and prints each model's summary.
set -euo pipefail
dir=${1:-build}
bin="$dir/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for spec in examples/*.hr; do
  name=$(basename "$spec" .hr)
  "$bin/heiretsu" compile "$spec" --emit mlir -o "$tmp/$name.mlir"
  "$bin/heiretsu-opt" "$tmp/$name.mlir" | cmp -s - "$tmp/$name.mlir" ||
    { echo "demo: $name does not round-trip through heiretsu-opt" >&2; exit 1; }
  ops=$(grep -cE '^ +(%[^ ]+ = )?graph\.' "$tmp/$name.mlir")
  "$bin/heiretsu" compile "$spec" --emit summary
  echo "  graph        $ops graph ops, verified and round-tripped"
  echo
done
echo "Training (heiretsu run / train) arrives with the runtime; see README.md."
