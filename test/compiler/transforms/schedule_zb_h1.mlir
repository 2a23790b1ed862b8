// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=zb-h1}))' | FileCheck %s

// ZB-H1 of Qi et al., "Zero Bubble Pipeline Parallelism" (ICLR 2024), Figure 3
// (pp = 4, M = 8): the backward split into B (input gradients, which the stage
// before waits for) and W (weight gradients). Stage s runs 1F1B's forwards and B
// passes and lets its W passes lag s microbatches behind, so the last stage runs
// F B F B ... and the first F B W F B W ...; a microbatch holds its activation slot
// from its F to its W: every stage keeps at most pp = 4.

// CHECK-LABEL: plan.program "s0"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 0
// CHECK-NEXT: plan.run "backward_weight" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 4
// CHECK-NEXT: plan.run "backward_weight" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 7 slot 3
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s1"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 4
// CHECK-NEXT: plan.run "backward_weight" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 7 slot 3
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s2"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 4
// CHECK-NEXT: plan.run "backward_weight" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 7 slot 3
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s3"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward" microbatch 0
// CHECK-NEXT: plan.run "backward_input" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 1 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 2 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 3 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 0
// CHECK-NEXT: plan.run "forward" microbatch 4
// CHECK-NEXT: plan.run "backward_input" microbatch 4
// CHECK-NEXT: plan.run "backward_weight" microbatch 1 slot 1
// CHECK-NEXT: plan.run "forward" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_input" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 2 slot 2
// CHECK-NEXT: plan.run "forward" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_input" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 3 slot 3
// CHECK-NEXT: plan.run "forward" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_input" microbatch 7 slot 3
// CHECK-NEXT: plan.run "backward_weight" microbatch 4
// CHECK-NEXT: plan.run "backward_weight" microbatch 5 slot 1
// CHECK-NEXT: plan.run "backward_weight" microbatch 6 slot 2
// CHECK-NEXT: plan.run "backward_weight" microbatch 7 slot 3
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
module {
  dist.mesh @world dp = 1 pp = 4 tp = 1 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward_input" backward_input {
    }
    plan.unit "backward_weight" backward_weight {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 1 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward_input" backward_input {
    }
    plan.unit "backward_weight" backward_weight {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s2" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 2 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward_input" backward_input {
    }
    plan.unit "backward_weight" backward_weight {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s3" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 3 : i64, vocab = 4 : i64} {
    plan.unit "forward" forward {
    }
    plan.unit "backward_input" backward_input {
    }
    plan.unit "backward_weight" backward_weight {
    }
    plan.unit "update" update {
    }
  }
}
