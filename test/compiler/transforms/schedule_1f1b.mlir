// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=1f1b}))' | FileCheck %s

// The 1F1B order of Narayanan et al., "Efficient Large-Scale Language Model
// Training on GPU Clusters Using Megatron-LM" (2021), Figure 4 (top), for pp = 4
// and M = 8: stage s runs pp - s - 1 warm-up forwards, then one forward and one
// backward, then the remaining backwards. A microbatch holds the lowest free
// activation slot from its forward to its backward: stage s needs pp - s slots.

// CHECK-LABEL: plan.program "s0"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward" microbatch 4
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s1"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 3
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 4 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 3
// CHECK-NEXT: plan.run "forward" microbatch 6
// CHECK-NEXT: plan.run "backward" microbatch 4 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 2
// CHECK-NEXT: plan.run "backward" microbatch 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 1
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s2"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 2
// CHECK-NEXT: plan.run "backward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 2
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward" microbatch 3 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 4
// CHECK-NEXT: plan.run "forward" microbatch 6
// CHECK-NEXT: plan.run "backward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 1
// CHECK-NEXT: plan.run "backward" microbatch 6
// CHECK-NEXT: plan.run "backward" microbatch 7 slot 1
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s3"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "backward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1
// CHECK-NEXT: plan.run "backward" microbatch 1
// CHECK-NEXT: plan.run "forward" microbatch 2
// CHECK-NEXT: plan.run "backward" microbatch 2
// CHECK-NEXT: plan.run "forward" microbatch 3
// CHECK-NEXT: plan.run "backward" microbatch 3
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward" microbatch 4
// CHECK-NEXT: plan.run "forward" microbatch 5
// CHECK-NEXT: plan.run "backward" microbatch 5
// CHECK-NEXT: plan.run "forward" microbatch 6
// CHECK-NEXT: plan.run "backward" microbatch 6
// CHECK-NEXT: plan.run "forward" microbatch 7
// CHECK-NEXT: plan.run "backward" microbatch 7
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
