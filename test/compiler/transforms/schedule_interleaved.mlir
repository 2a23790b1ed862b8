// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-schedule{schedule=interleaved}))' | FileCheck %s

// Interleaved 1F1B (Narayanan et al. 2021, Figure 4 bottom; Megatron-LM's virtual
// pipeline) for pp = 4, M = 8 and 2 chunks per stage: microbatches go through the
// chunks in groups of pp (stage 0: chunk 0's microbatches 0-3, chunk 1's 0-3, then
// chunk 0's 4-5: (pp - s - 1) 2 + (chunks - 1) pp = 10 warm-up forwards), then one
// forward and one backward (backwards over the chunks in reverse), then the rest.
// Each chunk has its own activation slots.

// CHECK-LABEL: plan.program "s0"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "forward.1" microbatch 3 chunk 1 slot 3
// CHECK-NEXT: plan.run "forward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "forward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "forward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.0" microbatch 7 chunk 0 slot 7
// CHECK-NEXT: plan.run "backward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "forward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.1" microbatch 3 chunk 1 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.1" microbatch 7 chunk 1 slot 3
// CHECK-NEXT: plan.run "backward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "backward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "backward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "backward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.1" microbatch 7 chunk 1 slot 3
// CHECK-NEXT: plan.run "backward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "backward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.0" microbatch 7 chunk 0 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s1"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "forward.1" microbatch 3 chunk 1 slot 3
// CHECK-NEXT: plan.run "forward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "backward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 7 chunk 0 slot 7
// CHECK-NEXT: plan.run "backward.1" microbatch 3 chunk 1 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.1" microbatch 7 chunk 1 slot 3
// CHECK-NEXT: plan.run "backward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "backward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.1" microbatch 7 chunk 1 slot 3
// CHECK-NEXT: plan.run "backward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "backward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.0" microbatch 7 chunk 0 slot 7
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s2"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 3 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 1 chunk 1 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.1" microbatch 2 chunk 1 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "backward.1" microbatch 3 chunk 1
// CHECK-NEXT: plan.run "forward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 7 chunk 0
// CHECK-NEXT: plan.run "backward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 7 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 5 chunk 1 slot 1
// CHECK-NEXT: plan.run "backward.1" microbatch 6 chunk 1 slot 2
// CHECK-NEXT: plan.run "backward.1" microbatch 7 chunk 1
// CHECK-NEXT: plan.run "backward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.0" microbatch 5 chunk 0 slot 5
// CHECK-NEXT: plan.run "backward.0" microbatch 6 chunk 0 slot 6
// CHECK-NEXT: plan.run "backward.0" microbatch 7 chunk 0
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
// CHECK-LABEL: plan.program "s3"
// CHECK: plan.schedule {
// CHECK-NEXT: plan.run "forward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 0 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 1 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 1 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 2 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 2 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 3 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 3 chunk 1
// CHECK-NEXT: plan.run "forward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.0" microbatch 0 chunk 0
// CHECK-NEXT: plan.run "forward.0" microbatch 5 chunk 0
// CHECK-NEXT: plan.run "backward.0" microbatch 1 chunk 0 slot 1
// CHECK-NEXT: plan.run "forward.0" microbatch 6 chunk 0 slot 1
// CHECK-NEXT: plan.run "backward.0" microbatch 2 chunk 0 slot 2
// CHECK-NEXT: plan.run "forward.0" microbatch 7 chunk 0 slot 2
// CHECK-NEXT: plan.run "backward.0" microbatch 3 chunk 0 slot 3
// CHECK-NEXT: plan.run "forward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 4 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 5 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 5 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 6 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 6 chunk 1
// CHECK-NEXT: plan.run "forward.1" microbatch 7 chunk 1
// CHECK-NEXT: plan.run "backward.1" microbatch 7 chunk 1
// CHECK-NEXT: plan.run "backward.0" microbatch 4 chunk 0 slot 4
// CHECK-NEXT: plan.run "backward.0" microbatch 5 chunk 0
// CHECK-NEXT: plan.run "backward.0" microbatch 6 chunk 0 slot 1
// CHECK-NEXT: plan.run "backward.0" microbatch 7 chunk 0 slot 2
// CHECK-NEXT: plan.run "update"
// CHECK-NEXT: }
module {
  dist.mesh @world dp = 1 pp = 4 tp = 1 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
    plan.unit "forward.0" forward chunk 0 {
    }
    plan.unit "backward.0" backward chunk 0 {
    }
    plan.unit "forward.1" forward chunk 1 {
    }
    plan.unit "backward.1" backward chunk 1 {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 1 : i64, vocab = 4 : i64} {
    plan.unit "forward.0" forward chunk 0 {
    }
    plan.unit "backward.0" backward chunk 0 {
    }
    plan.unit "forward.1" forward chunk 1 {
    }
    plan.unit "backward.1" backward chunk 1 {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s2" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 2 : i64, vocab = 4 : i64} {
    plan.unit "forward.0" forward chunk 0 {
    }
    plan.unit "backward.0" backward chunk 0 {
    }
    plan.unit "forward.1" forward chunk 1 {
    }
    plan.unit "backward.1" backward chunk 1 {
    }
    plan.unit "update" update {
    }
  }
  plan.program "s3" attributes {micro_batch_size = 1 : i64, microbatches = 8 : i64, seq = 1 : i64, stage = 3 : i64, vocab = 4 : i64} {
    plan.unit "forward.0" forward chunk 0 {
    }
    plan.unit "backward.0" backward chunk 0 {
    }
    plan.unit "forward.1" forward chunk 1 {
    }
    plan.unit "backward.1" backward chunk 1 {
    }
    plan.unit "update" update {
    }
  }
}
