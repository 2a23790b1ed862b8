// RUN: heiretsu-opt %s --pass-pipeline='builtin.module(plan.program(heiretsu-precision{precision=fp8}))' --verify-diagnostics

// Tests that the precision is one the runtime stores: fp32, bf16 or fp16.
// expected-error @+1 {{precision must be fp32, bf16 or fp16, got 'fp8'}}
plan.program "p" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
}
