// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-zero1{dp=1}))' --verify-diagnostics

// Tests that ZeRO-1 needs at least two data-parallel ranks to shard over.
// expected-error @+1 {{heiretsu-zero1 needs dp >= 2, got 1}}
plan.program "z" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.microbatch {
  }
  plan.update {
  }
}
