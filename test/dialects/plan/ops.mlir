// RUN: heiretsu-opt %s | heiretsu-opt | FileCheck %s

// Tests that a planned program round-trips: buffers with io and offsets, a
// parameter with its four offsets, kernels with absent optional buffers.
// CHECK-LABEL: plan.program "rt" attributes {arena_bytes = 1024 : i64
// CHECK: plan.buffer "tokens" {io = "tokens", offset = 512 : i64} : memref<1x2xi32>
// CHECK: plan.param "wte" normal std = 2.000000e-02 decay {offsets = array<i64: 0, 128, 256, 384>} : memref<4x8xf32>
// CHECK: plan.kernel "embedding"(%{{.*}}, %{{.*}}, %{{.*}}) ints = [2, 2, 4, 8, 2, 0] floats = [] absent = [2] : memref<1x2xi32>, memref<4x8xf32>, memref<2x8xf32>
// CHECK: plan.kernel "grad_norm_sq"(%{{.*}}) ints = [0, 0] floats = [] absent = [] : memref<4x8xf32>
plan.program "rt" attributes {arena_bytes = 1024 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 2 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens", offset = 512 : i64} : memref<1x2xi32>
  %tgt = plan.buffer "targets" {io = "targets", offset = 576 : i64} : memref<1x2xi32>
  %loss = plan.buffer "loss" {io = "loss", offset = 640 : i64} : memref<f32>
  %w, %dw, %m, %v = plan.param "wte" normal std = 0.02 decay {offsets = array<i64: 0, 128, 256, 384>} : memref<4x8xf32>
  %x = plan.buffer "x" {offset = 704 : i64} : memref<2x8xf32>
  plan.microbatch {
    plan.kernel "embedding"(%tok, %w, %x) ints = [2, 2, 4, 8, 2, 0] floats = [] absent = [2] : memref<1x2xi32>, memref<4x8xf32>, memref<2x8xf32>
  }
  plan.update {
    plan.kernel "grad_norm_sq"(%dw) ints = [0, 0] floats = [] absent = [] : memref<4x8xf32>
  }
}
