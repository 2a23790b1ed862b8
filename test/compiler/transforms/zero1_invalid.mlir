// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-zero1))' --split-input-file --verify-diagnostics
// RUN: not heiretsu-opt %S/zero1.mlir --pass-pipeline='builtin.module(plan.program(heiretsu-zero1{bucket-bytes=0}))' 2>&1 | FileCheck %s --check-prefix=BYTES

// Tests that ZeRO-1's reduce-scatter buckets hold at least one byte (the program of zero1.mlir).
// BYTES: error: bucket-bytes must be >= 1, got 0

// Tests that ZeRO-1 reads dp from the module's mesh, and refuses a module without one.
// expected-error @+1 {{heiretsu-zero1 reads the mesh from the module's dist.mesh @world, and there is none}}
plan.program "z" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that ZeRO-1 rebuilds the optimizer's update: it must have run first.
dist.mesh @world dp = 2 pp = 1 tp = 1 ep = 1
// expected-error @+1 {{the update unit is empty: run heiretsu-optimizer first}}
plan.program "z" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<8xf32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
