// RUN: heiretsu-opt %s | heiretsu-opt | FileCheck %s

// Tests that a planned program round-trips: its stage, buffers with io and
// offsets, a parameter with its four offsets, a tp-split parameter (split_axes and
// global_shape), kernels with absent optional buffers, units of every kind, and the
// schedule (runs with and without a microbatch, with a chunk).
// CHECK-LABEL: plan.program "rt" attributes {arena_bytes = 1024 : i64
// CHECK-SAME: stage = 0 : i64
// CHECK: plan.buffer "tokens" {io = "tokens", offset = 512 : i64} : memref<1x2xi32>
// CHECK: plan.param "wte" normal std = 2.000000e-02 decay {offsets = array<i64: 0, 128, 256, 384>} : memref<4x8xf32>
// CHECK: plan.param "w" normal std = 2.000000e-02 {global_shape = array<i64: 4, 8>, offsets = array<i64: 768, 832, 896, 960>, split_axes = array<i64: 2, -1>} : memref<2x8xf32>
// CHECK: plan.unit "forward" forward {
// CHECK-NEXT: plan.kernel "embedding"(%{{.*}}, %{{.*}}, %{{.*}}) ints = [2, 2, 4, 8, 2, 0] floats = [] absent = [2, 4] : memref<1x2xi32>, memref<4x8xf32>, memref<2x8xf32>
// CHECK: plan.unit "backward_input" backward_input {
// CHECK: plan.unit "backward_weight" backward_weight {
// CHECK: plan.unit "comm" comm {
// CHECK: plan.unit "update" update {
// CHECK-NEXT: plan.kernel "grad_norm_sq"(%{{.*}}) ints = [0, 0, 0, 0] floats = [] absent = [] : memref<4x8xf32>
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "backward_input" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "backward_weight" microbatch 0
// CHECK-NEXT: plan.run "comm"
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
module {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  plan.program "rt" attributes {arena_bytes = 1024 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 2 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens", offset = 512 : i64} : memref<1x2xi32>
    %tgt = plan.buffer "targets" {io = "targets", offset = 576 : i64} : memref<1x2xi32>
    %loss = plan.buffer "loss" {io = "loss", offset = 640 : i64} : memref<f32>
    %w, %dw, %m, %v = plan.param "wte" normal std = 0.02 decay {offsets = array<i64: 0, 128, 256, 384>} : memref<4x8xf32>
    %x = plan.buffer "x" {offset = 704 : i64} : memref<2x8xf32>
    %s, %ds, %ms, %vs = plan.param "w" normal std = 0.02 {global_shape = array<i64: 4, 8>, offsets = array<i64: 768, 832, 896, 960>, split_axes = array<i64: 2, -1>} : memref<2x8xf32>
    plan.unit "forward" forward {
      plan.kernel "embedding"(%tok, %w, %x) ints = [2, 2, 4, 8, 2, 0] floats = [] absent = [2, 4] : memref<1x2xi32>, memref<4x8xf32>, memref<2x8xf32>
    }
    plan.unit "backward_input" backward_input {
    }
    plan.unit "backward_weight" backward_weight {
    }
    plan.unit "comm" comm {
    }
    plan.unit "update" update {
      plan.kernel "grad_norm_sq"(%dw) ints = [0, 0, 0, 0] floats = [] absent = [] : memref<4x8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward_input" microbatch 0 chunk 0
      plan.run "backward_weight" microbatch 0
      plan.run "comm"
      plan.run "update"
    }
  }
}

// A later pipeline stage has no tokens (no embedding), and an earlier one neither
// targets nor loss: io buffers are declared only where the program has them.
// CHECK-LABEL: plan.program "last"
// CHECK-SAME: stage = 1 : i64
// CHECK: plan.param "w" normal std = 2.000000e-02 {global_shape = array<i64: 4, 8>, split_axes = array<i64: 2, -1>} : memref<2x8xf32>
// CHECK-LABEL: plan.program "first"
// CHECK-NOT: io = "loss"
// CHECK: plan.unit
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 2 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x2xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %w, %dw, %m, %v = plan.param "w" normal std = 0.02 {global_shape = array<i64: 4, 8>, split_axes = array<i64: 2, -1>} : memref<2x8xf32>
    plan.unit "forward" forward {
    }
  }
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 2 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x2xi32>
    plan.unit "forward" forward {
    }
  }
}
