// RUN: heiretsu-opt %s --heiretsu-check-collectives --split-input-file --verify-diagnostics

// Tests that two stages' collectives over pp must agree in size: the mismatch is
// reported at rank 0's op, naming both ranks (stage 1 starts at rank 2 with tp = 2).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 0 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "tied.grad" : memref<4x8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      // expected-error @+1 {{collective #1 over pp does not match: rank 0 does all_reduce(sum) of 32 x f32, rank 2 does all_reduce(sum) of 16 x f32}}
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<4x8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 1 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "tied.grad" : memref<16xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      // expected-note @+1 {{rank 2's collective is here}}
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<16xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}

// -----

// Tests that the reduction must agree too (sum on one side, max on the other).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 0 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      // expected-error @+1 {{rank 0 does all_reduce(sum) of 8 x f32, rank 2 does all_reduce(max) of 8 x f32}}
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 1 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      // expected-note @+1 {{rank 2's collective is here}}
      plan.kernel "all_reduce"(%g) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}

// -----

// Tests that a stage issuing fewer collectives per step is caught (the other
// stage would wait forever in its second all_reduce).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  // expected-error @+1 {{ranks of one group over pp issue different numbers of collectives per step: rank 0 issues 2, rank 2 issues 1}}
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 0 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
  plan.program "s1" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 1 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %g = plan.buffer "g" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "all_reduce"(%g) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}

// -----

// Tests that every stage needs a program.
// expected-error @+1 {{no plan.program for stage 1 of pp = 2}}
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  plan.program "s0" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}

// -----

// Tests that a block collective's group size is the mesh's (tp = 2, not 4).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 2 ep = 1
  plan.program "blocks" attributes {stage = 0 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %a = plan.buffer "a" : memref<1x1x8xf32>
    %b = plan.buffer "b" : memref<1x4x8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{all_gather_into expects a group of 4 ranks but its group over tp has 2}}
      plan.kernel "all_gather_into"(%a, %b) ints = [2, 1, 4, 8, 0] floats = [] absent = [] : memref<1x1x8xf32>, memref<1x4x8xf32>
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}
