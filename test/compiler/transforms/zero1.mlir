// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-zero1))' | FileCheck %s
// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-zero1{bucket-bytes=80}))' | FileCheck %s --check-prefix=BUCKETS
// RUN: sed 's/dp = 4 pp/dp = 1 pp/' %s | heiretsu-opt --pass-pipeline='builtin.module(plan.program(heiretsu-zero1))' | FileCheck %s --check-prefix=DP1

// Tests ZeRO-1 at dp = 4 (the module's mesh): the moments of a 4x5 matrix (20 elements) become 1-D
// shards of ceil(20 / 4) = 5, those of a 6-vector shards of 2. The gradients are
// reduce-scattered (dp = 0, average = 2) in the backward unit, in buckets cut as
// heiretsu-dp-grad-reduce cuts them: with the default 25 MiB one bucket after the
// kernel that finishes the last gradient (dw, finished after dg). The update unit
// is the gradient norm over the shards (sharded = 1), one clip_adamw per
// parameter on its shard (shard = 5, 2), and an all_gather (dp) of the values.
// CHECK-LABEL: plan.program "z"
// CHECK: %[[W:.*]], %[[DW:.*]], %[[MW:.*]], %[[VW:.*]] = plan.param "w" normal std = 2.000000e-02 decay : memref<4x5xf32>, moments memref<5xf32>
// CHECK: %[[G:.*]], %[[DG:.*]], %[[MG:.*]], %[[VG:.*]] = plan.param "g" ones : memref<6xf32>, moments memref<2xf32>
// CHECK: plan.unit "backward" backward {
// CHECK-NEXT: plan.kernel "accumulate"(%{{.*}}, %[[DG]])
// CHECK-NEXT: plan.kernel "accumulate"(%{{.*}}, %[[DW]])
// CHECK-NEXT: plan.kernel "bucket_reduce_scatter"(%[[DG]], %[[DW]]) ints = [0, 2]
// CHECK-NEXT: }
// CHECK: plan.unit "update" update {
// CHECK-NEXT: plan.kernel "grad_norm_sq"(%[[DW]], %[[DG]]) ints = [1, 0, 0, 0]
// CHECK-NEXT: plan.kernel "clip_adamw"(%[[W]], %[[DW]], %[[MW]], %[[VW]]) ints = [20, 1, 5, 0]
// CHECK-NEXT: plan.kernel "clip_adamw"(%[[G]], %[[DG]], %[[MG]], %[[VG]]) ints = [6, 0, 2, 0]
// CHECK-NEXT: plan.kernel "all_gather"(%[[W]], %[[G]]) ints = [0]
// CHECK-NEXT: }
// With buckets of at most 80 bytes: dg (24 bytes) right after the kernel that
// finishes it, overlapping the rest of the backward pass; dw (80) after its own.
// BUCKETS: plan.unit "backward" backward {
// BUCKETS-NEXT: plan.kernel "accumulate"
// BUCKETS-NEXT: plan.kernel "bucket_reduce_scatter"(%{{.*}}) ints = [0, 2] {{.*}} : memref<6xf32>
// BUCKETS-NEXT: plan.kernel "accumulate"
// BUCKETS-NEXT: plan.kernel "bucket_reduce_scatter"(%{{.*}}) ints = [0, 2] {{.*}} : memref<4x5xf32>
// BUCKETS-NEXT: }
// With dp = 1 there is nothing to shard: the optimizer's update stays.
// DP1: plan.param "w" normal std = 2.000000e-02 decay : memref<4x5xf32>
// DP1-NOT: moments
// DP1-NOT: reduce_scatter
dist.mesh @world dp = 4 pp = 1 tp = 1 ep = 1
plan.program "z" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4x5xf32>
  %y = plan.buffer "y" : memref<6xf32>
  %w, %dw, %mw, %vw = plan.param "w" normal std = 0.02 decay : memref<4x5xf32>
  %g, %dg, %mg, %vg = plan.param "g" ones : memref<6xf32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
    plan.kernel "accumulate"(%y, %dg) ints = [6, 1] floats = [] absent = [] : memref<6xf32>, memref<6xf32>
    plan.kernel "accumulate"(%x, %dw) ints = [20, 1] floats = [] absent = [] : memref<4x5xf32>, memref<4x5xf32>
  }
  plan.unit "update" update {
    plan.kernel "grad_norm_sq"(%dw, %dg) ints = [0, 0, 0, 0] floats = [] absent = [] : memref<4x5xf32>, memref<6xf32>
    plan.kernel "clip_adamw"(%w, %dw, %mw, %vw) ints = [20, 1, 0, 0] floats = [] absent = [] : memref<4x5xf32>, memref<4x5xf32>, memref<4x5xf32>, memref<4x5xf32>
    plan.kernel "clip_adamw"(%g, %dg, %mg, %vg) ints = [6, 0, 0, 0] floats = [] absent = [] : memref<6xf32>, memref<6xf32>, memref<6xf32>, memref<6xf32>
  }
}
