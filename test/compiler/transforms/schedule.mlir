// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule))' | FileCheck %s
// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=1f1b}))' | FileCheck %s

// Tests the schedule of one stage over microbatches = 3: each microbatch's forward
// then its backward, then the step's units (comm, update) once each, in program
// order; the units are left as they are.
// CHECK-LABEL: plan.program "three"
// CHECK: plan.unit "comm" comm {
// CHECK: plan.unit "update" update {
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1
// CHECK-NEXT: plan.run "backward" microbatch 1
// CHECK-NEXT: plan.run "forward" microbatch 2
// CHECK-NEXT: plan.run "backward" microbatch 2
// CHECK-NEXT: plan.run "comm"
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
dist.mesh @world dp = 2 pp = 1 tp = 1 ep = 1
plan.program "three" attributes {micro_batch_size = 1 : i64, microbatches = 3 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "comm" comm {
  }
  plan.unit "update" update {
  }
}
