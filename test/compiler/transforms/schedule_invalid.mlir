// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule))' --split-input-file --verify-diagnostics
// RUN: not heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=interleaved}))' --split-input-file 2>&1 | FileCheck %s --check-prefix=IL
// RUN: not heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=zb-h1}))' --split-input-file 2>&1 | FileCheck %s --check-prefix=ZB
// RUN: not heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=zigzag}))' --split-input-file 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// Interleaved needs a program of several virtual chunks; unknown schedules are refused by name.
// IL: error: schedule 'interleaved' needs virtual chunks (heiretsu-stage-cuts virtual-stages > 1)
// UNKNOWN: error: schedule 'zigzag' is unknown; expected 1f1b, gpipe, interleaved or zb-h1
// A whole backward cannot run zb-h1's split order:
// ZB: error: schedule 'zb-h1' needs a split backward (a backward_weight unit: heiretsu-autodiff split-backward=true)

// Tests that the pass reads pp from the module's mesh, and refuses a module
// without one.
// expected-error @+1 {{heiretsu-schedule reads the mesh from the module's dist.mesh @world, and there is none}}
plan.program "nomesh" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests that a program is scheduled once.
module {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  // expected-error @+1 {{the program already has a plan.schedule}}
  plan.program "twice" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
    plan.unit "forward" forward {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
    }
  }
}

// -----

// Tests that a program without a forward and a backward unit has nothing to schedule.
module {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  // expected-error @+1 {{the program needs a forward and a backward unit to schedule}}
  plan.program "update_only" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
    plan.unit "update" update {
    }
  }
}

// -----

// Tests that zb-h1 needs a split backward (heiretsu-autodiff split-backward=true).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "whole" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
  }
}
