// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-dp-grad-reduce))' --verify-diagnostics

// Tests that gradient averaging needs the optimizer's update stream first.
// expected-error @+1 {{plan.update is empty: run heiretsu-optimizer first}}
plan.program "dp" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<8xf32>
  plan.microbatch {
  }
  plan.update {
  }
}
