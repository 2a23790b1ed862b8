#!/usr/bin/env bash
# Installs the Debian packages heiretsu builds against (docs/architecture.md §5), only those
# missing. Quiet and fast (one dpkg-query) when everything is present.
set -euo pipefail

PKGS=(
  cmake ninja-build ccache lld g++ make
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  libabsl-dev libflatbuffers-dev flatbuffers-compiler
  libgloo-dev libopenblas-dev libgtest-dev
)

missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
