// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-autodiff))' --verify-diagnostics

// Tests that a program without a loss cannot be differentiated.
// expected-error @+1 {{autodiff needs a cross_entropy kernel producing the loss}}
plan.program "noloss" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 2 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  %y = plan.buffer "y" : memref<4xf32>
  plan.unit "forward" forward {
    plan.kernel "gelu"(%x, %y) ints = [4] floats = [] absent = [] : memref<4xf32>, memref<4xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that a linear whose weight is an activation (not a parameter) is refused.
plan.program "actweight" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 2 : i64, vocab = 2 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x2xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x2xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<2x2xf32>
  %w = plan.buffer "w" : memref<2x2xf32>
  %l = plan.buffer "l" : memref<2x2xf32>
  %lse = plan.buffer "lse" : memref<2xf32>
  plan.unit "forward" forward {
    // expected-error @+1 {{linear weights and biases must be parameters}}
    plan.kernel "linear"(%x, %w, %l) ints = [2, 2, 2, 0] floats = [] absent = [2] : memref<2x2xf32>, memref<2x2xf32>, memref<2x2xf32>
    plan.kernel "cross_entropy"(%l, %tgt, %loss, %lse) ints = [2, 2, 2] floats = [] absent = [] : memref<2x2xf32>, memref<1x2xi32>, memref<f32>, memref<2xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that the backward pass needs a unit to go into.
// expected-error @+1 {{heiretsu-autodiff needs a plan.unit of kind backward}}
plan.program "nobackward" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 2 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that autodiff runs once: the backward unit must be empty.
plan.program "twice" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 2 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "forward" forward {
  }
  // expected-error @+1 {{the backward unit is not empty: autodiff already ran}}
  plan.unit "backward" backward {
    plan.kernel "zero"(%x) ints = [] floats = [] absent = [] : memref<4xf32>
  }
  plan.unit "update" update {
  }
}
