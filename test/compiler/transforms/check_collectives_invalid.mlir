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

// -----

// Tests that a stage sending more per step than its peer receives is caught.
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  // expected-error @+1 {{stage 0 sends 2 buffers per step to stage 1, which receives 1 from it}}
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      plan.kernel "send"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
      plan.kernel "recv"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
}

// -----

// Tests that a send and its recv must have the same element count.
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{send #1 from stage 0 to stage 1 (unit "forward" of microbatch 0) has 8 elements but its recv on stage 1 (unit "forward" of microbatch 0) has 4}}
      plan.kernel "send"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
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
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %y = plan.buffer "y" : memref<4xf32>
    plan.unit "forward" forward {
      // expected-note @+1 {{the recv is here}}
      plan.kernel "recv"(%y) ints = [1, 0] floats = [] absent = [] : memref<4xf32>
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

// Tests that a peer is another stage of the mesh.
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{send to stage 0 of stage 0: the peer must be another of the 2 stages (pp)}}
      plan.kernel "send"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
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
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %x = plan.buffer "x" : memref<8xf32>
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

// Tests that point-to-point transfers go between pipeline stages only.
module {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{send over tp: only sends between pipeline stages (axis pp) are built}}
      plan.kernel "send"(%x) ints = [2, 1] floats = [] absent = [] : memref<8xf32>
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

// Tests that the collectives are those of the schedule: a program needs one.
module {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  // expected-error @+1 {{the program has no plan.schedule (run heiretsu-schedule first)}}
  plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
  }
}

// -----

// Tests that the check reads the mesh from the module, and refuses a module
// without one.
// expected-error @+1 {{heiretsu-check-collectives reads the mesh from the module's dist.mesh @world, and there is none}}
module {
  plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
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

// Tests that a schedule that would deadlock is a compile error naming each
// blocked stage, what it waits for and the run: both stages receive before they
// send (sends are posted without blocking; a recv blocks until its send is).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    %y = plan.buffer "y" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{the pipeline schedule deadlocks (sends posted, recvs blocking): stage 0 waits in a recv from stage 1 before unit "forward" of microbatch 0; stage 1 waits in a recv from stage 0 before unit "backward" of microbatch 0}}
      plan.kernel "recv"(%y) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
      plan.kernel "send"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
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
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %x = plan.buffer "x" : memref<8xf32>
    %y = plan.buffer "y" : memref<8xf32>
    plan.unit "forward" forward {
    }
    plan.unit "backward" backward {
      plan.kernel "recv"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
      plan.kernel "send"(%y) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
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

// Tests that a send and its recv belong to the same microbatch: stage 1 runs its
// forwards in another order than stage 0 sends them (counts and sizes match, and
// nothing deadlocks, but microbatch 1's activation would feed microbatch 0).
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  plan.program "first" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 4 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{send #1 from stage 0 to stage 1 (unit "forward" of microbatch 0) is received by stage 1's unit "forward" of microbatch 1: the stages' schedules disagree on the order of the microbatches}}
      plan.kernel "send"(%x) ints = [1, 1] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "update"
    }
  }
  plan.program "last" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 4 : i64, stage = 1 : i64, vocab = 4 : i64} {
    %x = plan.buffer "x" : memref<8xf32>
    plan.unit "forward" forward {
      // expected-note @+1 {{the recv is here}}
      plan.kernel "recv"(%x) ints = [1, 0] floats = [] absent = [] : memref<8xf32>
    }
    plan.unit "backward" backward {
    }
    plan.unit "update" update {
    }
    plan.schedule {
      plan.run "forward" microbatch 1
      plan.run "backward" microbatch 1
      plan.run "forward" microbatch 0
      plan.run "backward" microbatch 0
      plan.run "update"
    }
  }
}

// -----

// Tests that an all_to_all's parts must be its group's size (MoE's exchange over ep).
module {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 4
  plan.program "s0" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 4 : i64, vocab = 4 : i64, stage = 0 : i64} {
    %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x4xi32>
    %tgt = plan.buffer "targets" {io = "targets"} : memref<1x4xi32>
    %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
    %src = plan.buffer "src" : memref<2x4xf32>
    %dst = plan.buffer "dst" : memref<2x4xf32>
    plan.unit "forward" forward {
      // expected-error @+1 {{all_to_all expects a group of 2 ranks but its group over ep has 4}}
      plan.kernel "all_to_all"(%src, %dst) ints = [3, 1, 2, 4, 0, 0, 0, 4] floats = [] absent = [2, 3] : memref<2x4xf32>, memref<2x4xf32>
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
