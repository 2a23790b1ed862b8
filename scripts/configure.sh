#!/usr/bin/env bash
# Configures the CMake build: Ninja, ccache and lld when present.
set -euo pipefail
dir=${1:-build}; type=${2:-Release}
args=(-G Ninja -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type"
      -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir
      -DLLVM_DIR=/usr/lib/llvm-22/lib/cmake/llvm
      -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit)
if command -v ccache >/dev/null; then
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
if command -v ld.lld >/dev/null; then
  args+=(-DHEIRETSU_USE_LLD=ON)
fi
if [ -x /usr/local/cuda/bin/nvcc ]; then
  args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake "${args[@]}" >/dev/null
