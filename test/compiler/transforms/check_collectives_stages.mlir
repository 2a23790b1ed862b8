// RUN: heiretsu-opt %s --heiretsu-check-collectives | FileCheck %s --check-prefix=STAGES

// Tests two pipeline stages whose collectives over pp (a tied weight's gradient
// all_reduce between them) match in order, reduction and size.
// STAGES: plan.program "s0"
// STAGES: plan.program "s1"
module {
  dist.mesh @world dp = 2 pp = 2 tp = 2 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 0 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "tied.grad" : memref<4x8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<4x8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 1 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "tied.grad" : memref<32xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<32xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}
