// RUN: heiretsu-opt %s --split-input-file --pass-pipeline='builtin.module(plan.program(heiretsu-autodiff))' | FileCheck %s

// Tests the backward pass (into the unit "backward") of x = emb(tokens); y = x + gelu(x); loss = CE(y W^T)
// with W tied to the embedding, over 2 microbatches:
//  - the loss seed is 1/2;
//  - the tied table's grad receives both linear_grad (dw) and embedding_grad;
//  - the residual add copies dy into d(rhs) and hands dy itself to x (no copy),
//    so gelu_grad then accumulates into it (flag 1) before embedding_grad reads it.
// CHECK-LABEL: plan.program "tied"
// CHECK: %[[W:.*]], %[[DW:.*]], %{{.*}}, %{{.*}} = plan.param "wte"
// CHECK-DAG: %[[DLOGITS:.*]] = plan.buffer "dlogits" : memref<8x16xf32>
// CHECK-DAG: %[[DY:.*]] = plan.buffer "dy" : memref<8x8xf32>
// CHECK-DAG: %[[DG:.*]] = plan.buffer "dg" : memref<8x8xf32>
// CHECK: plan.kernel "cross_entropy"(
// CHECK-NEXT: }
// CHECK-NEXT: plan.unit "backward" backward {
// CHECK-NEXT: plan.kernel "cross_entropy_grad"(%[[LOGITS:.*]], %[[TGT:.*]], %[[LSE:.*]], %[[DLOGITS]]) ints = [8, 16, 0, 0, 16] floats = [5.000000e-01]
// CHECK-NEXT: plan.kernel "linear_grad"(%[[DLOGITS]], %[[Y:.*]], %[[W]], %[[DY]], %[[DW]]) ints = [8, 8, 16, 0] floats = [] absent = [5]
// CHECK-NEXT: plan.kernel "accumulate"(%[[DY]], %[[DG]]) ints = [64, 0]
// CHECK-NEXT: plan.kernel "gelu_grad"(%[[DG]], %[[X:.*]], %[[DY]]) ints = [64, 1]
// CHECK-NEXT: plan.kernel "embedding_grad"(%{{.*}}, %[[DY]], %[[DW]]) ints = [8, 4, 16, 8, 4, 0] floats = [] absent = [3]
// CHECK-NEXT: }
plan.program "tied" attributes {stage = 0 : i64, micro_batch_size = 2 : i64, microbatches = 2 : i64, seq = 4 : i64, vocab = 16 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<2x4xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<2x4xi32>
  %w, %dw, %m, %v = plan.param "wte" normal std = 0.02 decay : memref<16x8xf32>
  %x = plan.buffer "x" : memref<8x8xf32>
  %g = plan.buffer "g" : memref<8x8xf32>
  %y = plan.buffer "y" : memref<8x8xf32>
  %logits = plan.buffer "logits" : memref<8x16xf32>
  %lse = plan.buffer "lse" : memref<8xf32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
    plan.kernel "embedding"(%tok, %w, %x) ints = [8, 4, 16, 8, 4, 0] floats = [] absent = [2, 4] : memref<2x4xi32>, memref<16x8xf32>, memref<8x8xf32>
    plan.kernel "gelu"(%x, %g) ints = [64] floats = [] absent = [] : memref<8x8xf32>, memref<8x8xf32>
    plan.kernel "add"(%x, %g, %y) ints = [64] floats = [] absent = [] : memref<8x8xf32>, memref<8x8xf32>, memref<8x8xf32>
    plan.kernel "linear"(%y, %w, %logits) ints = [8, 8, 16, 0] floats = [] absent = [2] : memref<8x8xf32>, memref<16x8xf32>, memref<8x16xf32>
    plan.kernel "cross_entropy"(%logits, %tgt, %loss, %lse) ints = [8, 16, 16] floats = [] absent = [] : memref<8x16xf32>, memref<2x4xi32>, memref<f32>, memref<8xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests that a value used twice gets its gradient written by the first
// contribution in reverse order and accumulated by the second (x feeds both
// linears).
// CHECK-LABEL: plan.program "fanout"
// CHECK: plan.kernel "linear_grad"(%{{.*}}, %[[X:.*]], %{{.*}}, %[[DX:.*]], %{{.*}}) ints = [4, 8, 8, 0]
// CHECK: plan.kernel "linear_grad"(%{{.*}}, %[[X]], %{{.*}}, %[[DX]], %{{.*}}) ints = [4, 8, 8, 1]
plan.program "fanout" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 8 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
  %e, %de, %m0, %v0 = plan.param "wte" normal std = 0.02 decay : memref<8x8xf32>
  %a, %da, %m1, %v1 = plan.param "a" normal std = 0.02 decay : memref<8x8xf32>
  %b, %db, %m2, %v2 = plan.param "b" normal std = 0.02 decay : memref<8x8xf32>
  %x = plan.buffer "x" : memref<4x8xf32>
  %p = plan.buffer "p" : memref<4x8xf32>
  %q = plan.buffer "q" : memref<4x8xf32>
  %s = plan.buffer "s" : memref<4x8xf32>
  %lse = plan.buffer "lse" : memref<4xf32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
    plan.kernel "embedding"(%tok, %e, %x) ints = [4, 4, 8, 8, 4, 0] floats = [] absent = [2, 4] : memref<1x4xi32>, memref<8x8xf32>, memref<4x8xf32>
    plan.kernel "linear"(%x, %a, %p) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x8xf32>
    plan.kernel "linear"(%x, %b, %q) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x8xf32>
    plan.kernel "add"(%p, %q, %s) ints = [32] floats = [] absent = [] : memref<4x8xf32>, memref<4x8xf32>, memref<4x8xf32>
    plan.kernel "cross_entropy"(%s, %tgt, %loss, %lse) ints = [4, 8, 8] floats = [] absent = [] : memref<4x8xf32>, memref<1x4xi32>, memref<f32>, memref<4xf32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}

// -----

// Tests the MoE rules and scalar losses: the loss is ce + aux (an add of two
// scalars), so both terms get the constant gradient 1 with no kernel for the add.
// The steps differentiate in reverse: moe_combine_grad writes the experts' output
// gradient and the combine weights' (flag 0), moe_experts_grad the weights' (scale
// 1: not split over ep) and the dispatched rows', moe_dispatch_grad writes the
// embedding's gradient (flag 0), moe_route_grad takes daux = 1 (its third float)
// and accumulates into it (flag 1), which embedding_grad then reads.
// CHECK-LABEL: plan.program "moe"
// CHECK: plan.kernel "cross_entropy_grad"({{.*}}) ints = [4, 16, 0, 0, 16] floats = [1.000000e+00]
// CHECK-NEXT: plan.kernel "linear_grad"
// CHECK-NEXT: plan.kernel "moe_combine_grad"({{.*}}, %[[DBUF:[^,]*]], %[[DW:[^,]*]]) ints = [4, 8, 4, 2, 3, 0]
// CHECK-NEXT: plan.kernel "moe_experts_grad"(%{{[^,]*}}, %[[DBUF]], {{.*}}, %[[DIN:[^,]*]], %grad_5, %grad_13, %grad_9) ints = [4, 3, 8, 6, 1, 0, 1] floats = [1.000000e+00]
// CHECK-NEXT: plan.kernel "moe_dispatch_grad"(%[[DIN]], %{{.*}}, %{{.*}}, %[[DX:[^)]*]]) ints = [4, 8, 4, 2, 3, 0]
// CHECK-NEXT: plan.kernel "moe_route_grad"(%[[DW]], {{.*}}, %[[DX]], %grad_1) ints = [4, 8, 4, 2, 4, 1] floats = [1.000000e-02, 1.000000e-03, 1.000000e+00]
// CHECK-NEXT: plan.kernel "embedding_grad"(%{{.*}}, %[[DX]], %grad)
// CHECK-NOT: plan.kernel "add"(
plan.program "moe" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 16 : i64} {
  %0 = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
  %1 = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
  %value, %grad, %exp_avg, %exp_avg_sq = plan.param "wte" normal std = 2.000000e-02 decay : memref<16x8xf32>
  %2 = plan.buffer "embed.0" : memref<1x4x8xf32>
  %value_0, %grad_1, %exp_avg_2, %exp_avg_sq_3 = plan.param "r" normal std = 2.000000e-02 decay : memref<4x8xf32>
  %value_4, %grad_5, %exp_avg_6, %exp_avg_sq_7 = plan.param "w1" normal std = 2.000000e-02 decay : memref<4x6x8xf32>
  %value_8, %grad_9, %exp_avg_10, %exp_avg_sq_11 = plan.param "w2" normal std = 2.000000e-02 decay : memref<4x8x6xf32>
  %value_12, %grad_13, %exp_avg_14, %exp_avg_sq_15 = plan.param "w3" normal std = 2.000000e-02 decay : memref<4x6x8xf32>
  %3 = plan.buffer "moe.choice.1" : memref<1x4x2xi32>
  %4 = plan.buffer "moe.pos.2" : memref<1x4x2xi32>
  %5 = plan.buffer "moe.weight.3" : memref<1x4x2xf32>
  %6 = plan.buffer "moe.aux.4" : memref<f32>
  %7 = plan.buffer "moe.counts.5" : memref<4xi32>
  %8 = plan.buffer "moe.probs.6" : memref<4x4xf32>
  %9 = plan.buffer "moe.lse.7" : memref<4xf32>
  %10 = plan.buffer "moe.load.8" : memref<2x4xf32>
  %11 = plan.buffer "moe.dispatch.9" : memref<4x3x8xf32>
  %12 = plan.buffer "moe.experts.10" : memref<4x3x8xf32>
  %13 = plan.buffer "moe.pre.11" : memref<4x3x6xf32>
  %14 = plan.buffer "moe.gate_pre.12" : memref<4x3x6xf32>
  %15 = plan.buffer "moe.act.13" : memref<4x3x6xf32>
  %16 = plan.buffer "moe.combine.14" : memref<1x4x8xf32>
  %17 = plan.buffer "linear.15" : memref<1x4x16xf32>
  %18 = plan.buffer "cross_entropy.loss.16" : memref<f32>
  %19 = plan.buffer "cross_entropy.lse.17" : memref<4xf32>
  %20 = plan.buffer "add.18" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
    plan.kernel "embedding"(%0, %value, %2) ints = [4, 4, 16, 8, 4, 0] floats = [] absent = [2, 4] : memref<1x4xi32>, memref<16x8xf32>, memref<1x4x8xf32>
    plan.kernel "moe_route"(%2, %value_0, %8, %9, %3, %4, %5, %7, %6, %10) ints = [4, 8, 4, 2, 4, 3, 1] floats = [1.000000e-02, 1.000000e-03] absent = [] : memref<1x4x8xf32>, memref<4x8xf32>, memref<4x4xf32>, memref<4xf32>, memref<1x4x2xi32>, memref<1x4x2xi32>, memref<1x4x2xf32>, memref<4xi32>, memref<f32>, memref<2x4xf32>
    plan.kernel "moe_dispatch"(%2, %3, %4, %11) ints = [4, 8, 4, 2, 3] floats = [] absent = [] : memref<1x4x8xf32>, memref<1x4x2xi32>, memref<1x4x2xi32>, memref<4x3x8xf32>
    plan.kernel "moe_experts"(%7, %11, %value_4, %value_12, %value_8, %13, %14, %15, %12) ints = [4, 3, 8, 6, 1, 1] floats = [] absent = [] : memref<4xi32>, memref<4x3x8xf32>, memref<4x6x8xf32>, memref<4x6x8xf32>, memref<4x8x6xf32>, memref<4x3x6xf32>, memref<4x3x6xf32>, memref<4x3x6xf32>, memref<4x3x8xf32>
    plan.kernel "moe_combine"(%12, %3, %4, %5, %16) ints = [4, 8, 4, 2, 3] floats = [] absent = [] : memref<4x3x8xf32>, memref<1x4x2xi32>, memref<1x4x2xi32>, memref<1x4x2xf32>, memref<1x4x8xf32>
    plan.kernel "linear"(%16, %value, %17) ints = [4, 8, 16, 0] floats = [] absent = [2] : memref<1x4x8xf32>, memref<16x8xf32>, memref<1x4x16xf32>
    plan.kernel "cross_entropy"(%17, %1, %18, %19) ints = [4, 16, 16] floats = [] absent = [] : memref<1x4x16xf32>, memref<1x4xi32>, memref<f32>, memref<4xf32>
    plan.kernel "add"(%18, %6, %20) ints = [1] floats = [] absent = [] : memref<f32>, memref<f32>, memref<f32>
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
