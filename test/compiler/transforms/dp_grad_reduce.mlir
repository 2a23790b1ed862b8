// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-dp-grad-reduce))' | FileCheck %s

// Tests that the update stream starts with one all_reduce (axis dp = 0, average =
// 2) over every parameter gradient, before the gradient norm.
// CHECK-LABEL: plan.program "dp"
// CHECK: %[[W:.*]], %[[DW:.*]], %{{.*}}, %{{.*}} = plan.param "w"
// CHECK: %[[G:.*]], %[[DG:.*]], %{{.*}}, %{{.*}} = plan.param "g"
// CHECK: plan.update {
// CHECK-NEXT: plan.kernel "all_reduce"(%[[DW]], %[[DG]]) ints = [0, 2] floats = []
// CHECK-NEXT: plan.kernel "grad_norm_sq"
plan.program "dp" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %w, %dw, %mw, %vw = plan.param "w" normal std = 0.02 decay : memref<4x8xf32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<8xf32>
  plan.microbatch {
  }
  plan.update {
    plan.kernel "grad_norm_sq"(%dw, %dg) ints = [0, 0] floats = [] absent = [] : memref<4x8xf32>, memref<8xf32>
  }
}
