// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-precision{precision=bf16}))' | FileCheck %s
// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-precision{precision=fp16}))' | FileCheck %s --check-prefix=F16
// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-precision))' | FileCheck %s --check-prefix=F32

// Tests which buffers become 16-bit: the linear's input and output and the norm's
// output (activation slots only) do; the norm's statistics, a buffer an all_reduce
// also touches, the io buffers and the parameter's buffers do not. fp16 is the same
// with f16; fp32 (the default) changes nothing.
// CHECK-LABEL: plan.program "mixed"
// CHECK-DAG: plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
// CHECK-DAG: plan.buffer "x" : memref<4x8xbf16>
// CHECK-DAG: plan.buffer "h" : memref<4x8xbf16>
// CHECK-DAG: plan.buffer "mean" : memref<4xf32>
// CHECK-DAG: plan.buffer "rstd" : memref<4xf32>
// CHECK-DAG: plan.buffer "reduced" : memref<4x8xf32>
// CHECK-DAG: plan.buffer "loss" {io = "loss"} : memref<f32>
// CHECK-DAG: plan.param "w" ones : memref<8x8xf32>
// F16-DAG: plan.buffer "x" : memref<4x8xf16>
// F16-DAG: plan.buffer "reduced" : memref<4x8xf32>
// F32-NOT: bf16
// F32-NOT: f16
plan.program "mixed" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 8 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %w, %dw, %mw, %vw = plan.param "w" ones : memref<8x8xf32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<8xf32>
  %b, %db, %mb, %vb = plan.param "b" zeros : memref<8xf32>
  %x = plan.buffer "x" : memref<4x8xf32>
  %h = plan.buffer "h" : memref<4x8xf32>
  %mean = plan.buffer "mean" : memref<4xf32>
  %rstd = plan.buffer "rstd" : memref<4xf32>
  %reduced = plan.buffer "reduced" : memref<4x8xf32>
  plan.unit "forward" forward {
    plan.kernel "layernorm"(%x, %g, %b, %h, %mean, %rstd) ints = [4, 8] floats = [1.000000e-05] absent = [] : memref<4x8xf32>, memref<8xf32>, memref<8xf32>, memref<4x8xf32>, memref<4xf32>, memref<4xf32>
    plan.kernel "linear"(%h, %w, %x) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x8xf32>
    plan.kernel "linear"(%h, %w, %reduced) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x8xf32>
    plan.kernel "all_reduce"(%reduced) ints = [0, 0] floats = [] absent = [] : memref<4x8xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
