// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-dp-grad-reduce{bucket-bytes=160}))' | FileCheck %s
// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-dp-grad-reduce))' | FileCheck %s --check-prefix=ONE
// RUN: sed 's/dp = 2 pp/dp = 1 pp/' %s | heiretsu-opt --pass-pipeline='builtin.module(plan.program(heiretsu-dp-grad-reduce))' | FileCheck %s --check-prefix=DP1

// Tests gradient buckets (axis dp = 0, average = 2; dp from the module's mesh)
// that overlap the backward pass, inside the backward unit: gradients in the
// order the backward unit finishes them (dc, db, da; du,
// never touched, last), buckets of at most 160 bytes (dc 128 + db 32, then da 128
// with du 32), each right after the kernel that finishes its last gradient; the
// update unit is left alone.
// CHECK-LABEL: plan.program "dp"
// CHECK: %{{.*}}, %[[DA:.*]], %{{.*}}, %{{.*}} = plan.param "a"
// CHECK: %{{.*}}, %[[DB:.*]], %{{.*}}, %{{.*}} = plan.param "b"
// CHECK: %{{.*}}, %[[DC:.*]], %{{.*}}, %{{.*}} = plan.param "c"
// CHECK: %{{.*}}, %[[DU:.*]], %{{.*}}, %{{.*}} = plan.param "u"
// CHECK: plan.unit "forward" forward {
// CHECK-NEXT: plan.kernel "gelu"
// CHECK-NEXT: }
// CHECK-NEXT: plan.unit "backward" backward {
// CHECK-NEXT: plan.kernel "accumulate"(%{{.*}}, %[[DC]])
// CHECK-NEXT: plan.kernel "accumulate"(%{{.*}}, %[[DB]])
// CHECK-NEXT: plan.kernel "bucket_all_reduce"(%[[DC]], %[[DB]]) ints = [0, 2]
// CHECK-NEXT: plan.kernel "accumulate"(%{{.*}}, %[[DA]])
// CHECK-NEXT: plan.kernel "bucket_all_reduce"(%[[DA]], %[[DU]]) ints = [0, 2]
// CHECK-NEXT: }
// CHECK-NEXT: plan.unit "update" update {
// CHECK-NEXT: plan.kernel "grad_norm_sq"

// With the default 25 MiB, one bucket after the backward pass's last kernel.
// ONE: plan.unit "backward" backward {
// ONE-NEXT: plan.kernel "accumulate"
// ONE-NEXT: plan.kernel "accumulate"
// ONE-NEXT: plan.kernel "accumulate"
// ONE-NEXT: plan.kernel "bucket_all_reduce"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) ints = [0, 2]
// ONE-NEXT: }
// With dp = 1 the gradients are already the step's: nothing is inserted.
// DP1: dist.mesh @world dp = 1
// DP1-NOT: bucket_all_reduce
dist.mesh @world dp = 2 pp = 1 tp = 1 ep = 1
plan.program "dp" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4x8xf32>
  %y = plan.buffer "y" : memref<8xf32>
  %a, %da, %ma, %va = plan.param "a" normal std = 0.02 decay : memref<4x8xf32>
  %b, %db, %mb, %vb = plan.param "b" ones : memref<8xf32>
  %c, %dc, %mc, %vc = plan.param "c" normal std = 0.02 decay : memref<4x8xf32>
  %u, %du, %mu, %vu = plan.param "u" ones : memref<8xf32>
  plan.unit "forward" forward {
    plan.kernel "gelu"(%y, %y) ints = [8] floats = [] absent = [] : memref<8xf32>, memref<8xf32>
  }
  plan.unit "backward" backward {
    plan.kernel "accumulate"(%x, %dc) ints = [32, 1] floats = [] absent = [] : memref<4x8xf32>, memref<4x8xf32>
    plan.kernel "accumulate"(%y, %db) ints = [8, 1] floats = [] absent = [] : memref<8xf32>, memref<8xf32>
    plan.kernel "accumulate"(%x, %da) ints = [32, 1] floats = [] absent = [] : memref<4x8xf32>, memref<4x8xf32>
  }
  plan.unit "update" update {
    plan.kernel "grad_norm_sq"(%da, %db, %dc, %du) ints = [0, 0, 0, 0] floats = [] absent = [] : memref<4x8xf32>, memref<8xf32>, memref<4x8xf32>, memref<8xf32>
  }
}
