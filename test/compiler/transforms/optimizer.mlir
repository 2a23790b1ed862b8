// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-optimizer))' | FileCheck %s

// Tests that the update unit is the global gradient norm over every parameter
// gradient, then one clip_adamw per parameter with weight decay on the matrix
// (flag 1) and not on the norm weight (flag 0).
// CHECK-LABEL: plan.program "opt"
// CHECK: %[[W:.*]], %[[DW:.*]], %[[MW:.*]], %[[VW:.*]] = plan.param "w"
// CHECK: %[[G:.*]], %[[DG:.*]], %[[MG:.*]], %[[VG:.*]] = plan.param "g"
// CHECK: plan.unit "update" update {
// CHECK-NEXT: plan.kernel "grad_norm_sq"(%[[DW]], %[[DG]]) ints = [0, 0, 0, 0] floats = []
// CHECK-NEXT: plan.kernel "clip_adamw"(%[[W]], %[[DW]], %[[MW]], %[[VW]]) ints = [32, 1, 0, 0]
// CHECK-NEXT: plan.kernel "clip_adamw"(%[[G]], %[[DG]], %[[MG]], %[[VG]]) ints = [8, 0, 0, 0]
// CHECK-NEXT: }
plan.program "opt" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %w, %dw, %mw, %vw = plan.param "w" normal std = 0.02 decay : memref<4x8xf32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<8xf32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
