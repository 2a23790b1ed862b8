// RUN: heiretsu-opt %s --heiretsu-check-collectives='tp=2 dp=2' | FileCheck %s

// Tests that one SPMD program, whose block collectives expect groups of the mesh's
// sizes, passes unchanged.
// CHECK: plan.program "spmd"
// CHECK: plan.kernel "all_gather_into"
plan.program "spmd" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %a = plan.buffer "a" : memref<1x2x8xf32>
  %b = plan.buffer "b" : memref<1x4x8xf32>
  plan.microbatch {
    plan.kernel "all_gather_into"(%a, %b) ints = [2, 1, 2, 16, 0] floats = [] absent = [] : memref<1x2x8xf32>, memref<1x4x8xf32>
    plan.kernel "all_reduce"(%b) ints = [2, 0] floats = [] absent = [] : memref<1x4x8xf32>
  }
  plan.update {
    plan.kernel "all_reduce"(%b) ints = [0, 2] floats = [] absent = [] : memref<1x4x8xf32>
  }
}
