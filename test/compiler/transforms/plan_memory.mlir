// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-plan-memory))' | FileCheck %s

// Tests memory planning on a chain a -> b -> c -> d of 4 KiB buffers, each read
// only by the next kernel:
//  - the parameter's buffers come first; the program has no backward or update
//    instruction (like a decode program), so its gradient and moments share one
//    block after the values (2 x 64 B);
//  - a and b are live at the same time (kernel 1 reads a, writes b), and so are
//    b and c, and c and d: those pairs never overlap;
//  - a is dead after kernel 1, so c (first written by kernel 2) reuses a's bytes,
//    and d reuses b's: two 4 KiB slots serve four buffers;
//  - the io buffers are live throughout and never share;
//  - the peak is recorded on the program.
// CHECK-LABEL: plan.program "chain"
// CHECK-SAME: activation_bytes = 8384 : i64, arena_bytes = 8512 : i64
// CHECK-SAME: param_bytes = 128 : i64
// CHECK: plan.buffer "tokens" {io = "tokens", offset = 8320 : i64}
// CHECK: plan.buffer "targets" {io = "targets", offset = 8384 : i64}
// CHECK: plan.buffer "loss" {io = "loss", offset = 8448 : i64}
// CHECK: plan.param "w" ones {offsets = array<i64: 0, 64, 64, 64>}
// CHECK: plan.buffer "a" {offset = 128 : i64}
// CHECK: plan.buffer "b" {offset = 4224 : i64}
// CHECK: plan.buffer "c" {offset = 128 : i64}
// CHECK: plan.buffer "d" {offset = 4224 : i64}
plan.program "chain" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %w, %dw, %mw, %vw = plan.param "w" ones : memref<16xf32>
  %a = plan.buffer "a" : memref<1024xf32>
  %b = plan.buffer "b" : memref<1024xf32>
  %c = plan.buffer "c" : memref<1024xf32>
  %d = plan.buffer "d" : memref<1024xf32>
  plan.unit "forward" forward {
    plan.kernel "zero"(%a) ints = [] floats = [] absent = [] : memref<1024xf32>
    plan.kernel "gelu"(%a, %b) ints = [1024] floats = [] absent = [] : memref<1024xf32>, memref<1024xf32>
    plan.kernel "gelu"(%b, %c) ints = [1024] floats = [] absent = [] : memref<1024xf32>, memref<1024xf32>
    plan.kernel "gelu"(%c, %d) ints = [1024] floats = [] absent = [] : memref<1024xf32>, memref<1024xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that a program with a backward instruction keeps a gradient and two
// moments per parameter, contiguous after its value (4 x 64 B).
// CHECK-LABEL: plan.program "trained"
// CHECK-SAME: param_bytes = 256 : i64
// CHECK: plan.param "w" ones {offsets = array<i64: 0, 64, 128, 192>}
plan.program "trained" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %w, %dw, %mw, %vw = plan.param "w" ones : memref<16xf32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
    plan.kernel "zero"(%dw) ints = [] floats = [] absent = [] : memref<16xf32>
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that buffers take their element type's bytes: a bf16 buffer of 96 elements
// 192 bytes, an f16 one 64 (two bytes each), planned like f32 ones at 64-byte
// alignment; both are live together, so they do not overlap. The same plan at float32
// sizes (384 + 128 + 64 bytes) is recorded for explain's saving; a plan of float32
// buffers only has none ("chain" above).
// CHECK-LABEL: plan.program "sixteen"
// CHECK-SAME: activation_bytes = 320 : i64, activation_bytes_f32 = 576 : i64
// CHECK: plan.buffer "h" {offset = 0 : i64} : memref<96xbf16>
// CHECK: plan.buffer "g" {offset = 192 : i64} : memref<32xf16>
// CHECK: plan.buffer "f" {offset = 256 : i64} : memref<16xf32>
plan.program "sixteen" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %h = plan.buffer "h" : memref<96xbf16>
  %g = plan.buffer "g" : memref<32xf16>
  %f = plan.buffer "f" : memref<16xf32>
  plan.unit "forward" forward {
    plan.kernel "zero"(%f) ints = [] floats = [] absent = [] : memref<16xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
