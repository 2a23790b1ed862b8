// RUN: heiretsu-opt %s --heiretsu-check-collectives | FileCheck %s

// Tests that one SPMD program, whose block collectives expect groups of the mesh's
// sizes, passes unchanged.
// CHECK: plan.program "spmd"
// CHECK: plan.kernel "all_gather_into"
dist.mesh @world dp = 2 pp = 1 tp = 2 ep = 1
plan.program "spmd" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %a = plan.buffer "a" : memref<1x2x8xf32>
  %b = plan.buffer "b" : memref<1x4x8xf32>
  plan.unit "forward" forward {
    plan.kernel "all_gather_into"(%a, %b) ints = [2, 1, 2, 16, 0] floats = [] absent = [] : memref<1x2x8xf32>, memref<1x4x8xf32>
    plan.kernel "all_reduce"(%b) ints = [2, 0] floats = [] absent = [] : memref<1x4x8xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
    plan.kernel "all_reduce"(%b) ints = [0, 2] floats = [] absent = [] : memref<1x4x8xf32>
  }
  plan.schedule {
    plan.run "forward" microbatch 0
    plan.run "backward" microbatch 0
    plan.run "forward" microbatch 1
    plan.run "backward" microbatch 1
    plan.run "update"
  }
}
