// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=gpipe}))' | FileCheck %s

// GPipe's order (Huang et al., "GPipe", 2019, Figure 2c) for pp = 4 and M = 8:
// every stage runs all forwards, then all backwards, and keeps all M
// microbatches' activations (slots 0..7).

// CHECK-LABEL: plan.program "s0"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "backward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s1"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "backward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s2"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "backward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s3"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 4 slot 4
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 5
// CHECK-NEXT: plan.run "backward" microbatch 6 slot 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
module {
  dist.mesh @world dp = 1 pp = 4 tp = 1 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 1 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s2" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 2 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s3" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 3 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
  }
}
