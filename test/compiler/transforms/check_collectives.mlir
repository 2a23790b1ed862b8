// RUN: heiretsu-opt %s --heiretsu-check-collectives --split-input-file | FileCheck %s

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

// -----

// Tests the schedule's expansion: a unit's collectives count once per run (the
// forward all_reduce of stage 0 runs for both microbatches, matching stage 1's two
// in its update), a bucket_all_reduce once per step (in its unit's last run: stage
// 0's backward bucket matches stage 1's single one in its update).
// CHECK-LABEL: plan.program "s0"
// CHECK-LABEL: plan.program "s1"
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
      plan.kernel "bucket_all_reduce"(%g) ints = [1, 2] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
      plan.kernel "bucket_all_reduce"(%g) ints = [1, 2] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
}

// -----

// Tests sends and recvs that pair up between two stages, in order and size:
// stage 0 sends an activation per microbatch and receives its gradient back.
// CHECK-LABEL: plan.program "first"
// CHECK: plan.kernel "send"
// CHECK-LABEL: plan.program "last"
// CHECK: plan.kernel "recv"
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      plan.kernel "send"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
      plan.kernel "recv"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      plan.kernel "recv"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
      plan.kernel "send"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
}
