// RUN: heiretsu-opt %s --split-input-file --verify-diagnostics

// Every numbered constraint of the plan dialect (PlanOps.td), failing once each.

// Tests kernel_c1: an opcode the runtime does not have.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C1) unknown opcode 'relu'}}
    plan.kernel "relu"(%loss) ints = [1] floats = [] absent = [] : memref<f32>
  }
}

// -----

// Tests kernel_c2: the wrong number of attributes.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C2) 'gelu' takes 1 ints and 0 floats, got 2 and 0}}
    plan.kernel "gelu"(%loss, %loss) ints = [1, 1] floats = [] absent = [] : memref<f32>, memref<f32>
  }
}

// -----

// Tests kernel_c2: an accumulate flag that is not 0 or 1.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C2) accumulate_dx = 3 is out of range [0, 1]}}
    plan.kernel "gelu_grad"(%loss, %loss, %loss) ints = [1, 3] floats = [] absent = [] : memref<f32>, memref<f32>, memref<f32>
  }
}

// -----

// Tests kernel_c2: a collective's mesh axis is 0-3.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C2) axis = 5 is out of range [0, 4]}}
    plan.kernel "all_reduce"(%x) ints = [5, 0] floats = [] absent = [] : memref<4xf32>
  }
}

// -----

// Tests kernel_c2: a collective's reduction is 0-2.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C2) reduce = 3 is out of range [0, 2]}}
    plan.kernel "all_reduce"(%x) ints = [2, 3] floats = [] absent = [] : memref<4xf32>
  }
}

// -----

// Tests kernel_c2: embedding's seq <= context rule (learned positions are read by position).
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %ids = plan.buffer "ids" : memref<8xi32>
  %t = plan.buffer "t" : memref<4x2xf32>
  %q = plan.buffer "q" : memref<4x2xf32>
  %o = plan.buffer "o" : memref<8x2xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C2) seq = 8 exceeds context = 4}}
    plan.kernel "embedding"(%ids, %t, %q, %o) ints = [8, 8, 4, 2, 4, 0] floats = [] absent = [4] : memref<8xi32>, memref<4x2xf32>, memref<4x2xf32>, memref<8x2xf32>
  }
}

// -----

// Tests kernel_c3: a buffer with the wrong element count for the sizes given.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4x8xf32>
  %w = plan.buffer "w" : memref<8x8xf32>
  %y = plan.buffer "y" : memref<4x4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) buffer 'y' has 16 elements, expected 32}}
    plan.kernel "linear"(%x, %w, %y) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x4xf32>
  }
}

// -----

// Tests kernel_c3: a required buffer marked absent.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) buffer 'x' of 'gelu' is required}}
    plan.kernel "gelu"(%x) ints = [4] floats = [] absent = [0] : memref<4xf32>
  }
}

// -----

// Tests kernel_c3: a wrong element type.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) buffer 'ids' must be i32, got 'memref<4xf32>'}}
    plan.kernel "embedding"(%x, %x, %x) ints = [4, 4, 1, 1, 4, 0] floats = [] absent = [2, 4] : memref<4xf32>, memref<4xf32>, memref<4xf32>
  }
}

// -----

// Tests kernel_c3: absent names a slot the opcode does not have.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) absent = [5] must list distinct slots of 'gelu' (0..1) in increasing order}}
    plan.kernel "gelu"(%x, %x) ints = [4] floats = [] absent = [5] : memref<4xf32>, memref<4xf32>
  }
}

// -----

// Tests kernel_c3: a buffer present exactly when its flag is 1 (moe_experts' w_gate, absent with swiglu = 1).
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %n = plan.buffer "n" : memref<2xi32>
  %x = plan.buffer "x" : memref<2x2x2xf32>
  %wi = plan.buffer "wi" : memref<2x3x2xf32>
  %wo = plan.buffer "wo" : memref<2x2x3xf32>
  %pre = plan.buffer "pre" : memref<2x2x3xf32>
  %y = plan.buffer "y" : memref<2x2x2xf32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) buffer 'w_gate' must be present exactly when swiglu = 1}}
    plan.kernel "moe_experts"(%n, %x, %wi, %wo, %pre, %pre, %pre, %y) ints = [2, 2, 2, 3, 1, 1] floats = [] absent = [3] : memref<2xi32>, memref<2x2x2xf32>, memref<2x3x2xf32>, memref<2x2x3xf32>, memref<2x2x3xf32>, memref<2x2x3xf32>, memref<2x2x3xf32>, memref<2x2x2xf32>
  }
}

// -----

// Tests kernel_c3: a variadic opcode takes one or more buffers.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "f" forward {
    // expected-error @+1 {{(C3) 'all_reduce' takes one or more buffers and none absent}}
    plan.kernel "all_reduce"(%loss) ints = [2, 0] floats = [] absent = [0] : memref<f32>
  }
}

// -----

// Tests program_c1: a buffer after the units.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  // expected-error @+1 {{(C1) buffers must precede the units}}
  %x = plan.buffer "x" : memref<4xf32>
}

// -----

// Tests program_c1: a plan.schedule before the units.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C1) plan.schedule must follow the units}}
  plan.schedule {
  }
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c1: two schedules.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.schedule {
    plan.run "forward" microbatch 0
  }
  // expected-error @+1 {{(C1) a program has at most one plan.schedule}}
  plan.schedule {
    plan.run "forward" microbatch 0
  }
}

// -----

// Tests program_c1: a program without units.
// expected-error @+1 {{(C1) needs at least one plan.unit}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
}

// -----

// Tests program_c2: two buffers with the same io.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C2) more than one buffer has io = "tokens"}}
  %tok2 = plan.buffer "tokens2" {io = "tokens"} : memref<1x1xi32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c3: targets without a loss.
// expected-error @+1 {{(C3) a program with targets needs its loss; this one has only io = "targets"}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c4: the batch geometry is positive.
// expected-error @+1 {{(C4) micro_batch_size, microbatches, seq and vocab must be positive}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 0 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c5: after memory planning every buffer fits in the arena.
plan.program "p" attributes {arena_bytes = 64 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens", offset = 0 : i64} : memref<1x1xi32>
  // expected-error @+1 {{(C5) buffer must have an offset inside the arena of 64 bytes}}
  %tgt = plan.buffer "targets" {io = "targets", offset = 64 : i64} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss", offset = 0 : i64} : memref<f32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c5: after memory planning every parameter has its offsets.
plan.program "p" attributes {arena_bytes = 1024 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens", offset = 0 : i64} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets", offset = 64 : i64} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss", offset = 128 : i64} : memref<f32>
  // expected-error @+1 {{(C5) parameter has no offsets after memory planning}}
  %w, %dw, %mw, %vw = plan.param "w" ones : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c6: a negative stage.
// expected-error @+1 {{(C6) stage must be >= 0, got -1}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = -1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c6: a stage beyond the mesh's pp.
module {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
// expected-error @+1 {{(C6) stage 2 is outside the mesh's pp = 2 stages (0..1)}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 2 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
}
}

// -----

// Tests program_c7: two units with one name.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  // expected-error @+1 {{(C7) a second unit named "forward"}}
  plan.unit "forward" backward {
  }
}

// -----

// Tests buffer_c1: the loss is a single f32.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  // expected-error @+1 {{(C1) io = "loss" needs tokens/targets of i32, a one-element i32 position, a one-element f32 loss, or f32 logits or cache, got 'memref<2xf32>'}}
  %loss = plan.buffer "loss" {io = "loss"} : memref<2xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests buffer_c2: grad_reduce names the tp axis.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C2) grad_reduce must be "tp", got "dp"}}
  %x = plan.buffer "x" {grad_reduce = "dp"} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c1: the moments are the value's type or a 1-D shard of it.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C1) moments must have the value's type or be a 1-D shard of it, got 'memref<8xf32>'}}
  %w, %dw, %mw, %vw = plan.param "w" ones : memref<4xf32>, moments memref<8xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c2: std goes with init normal.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C2) init 'normal' needs std > 0, and only it takes std}}
  %w, %dw, %mw, %vw = plan.param "w" ones std = 0.02 : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c3: four offsets.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C3) offsets must have 4 entries}}
  %w, %dw, %mw, %vw = plan.param "w" ones {offsets = array<i64: 0, 64>} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c4: split_axes and global_shape go together.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) split_axes and global_shape go together}}
  %w, %dw, %mw, %vw = plan.param "w" ones {split_axes = array<i64: 2>} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c4: one split_axes entry per dimension.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) split_axes [2, -1] and global_shape [8] need one entry per dimension of 'memref<4xf32>'}}
  %w, %dw, %mw, %vw = plan.param "w" ones {global_shape = array<i64: 8>, split_axes = array<i64: 2, -1>} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c4: an entry that is not a mesh axis.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) split_axes entry 7 of dimension 0 is neither -1 (whole) nor a mesh axis 0..3}}
  %w, %dw, %mw, %vw = plan.param "w" ones {global_shape = array<i64: 8>, split_axes = array<i64: 7>} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c4: one axis splitting two dimensions.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) two dimensions are split over mesh axis tp}}
  %w, %dw, %mw, %vw = plan.param "w" ones {global_shape = array<i64: 8, 8>, split_axes = array<i64: 2, 2>} : memref<4x4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c4: a global shape that is not a split of the value.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) global_shape [16, 9] is not a split of 'memref<8x8xf32>' by split_axes [2, -1] (dimension 1)}}
  %w, %dw, %mw, %vw = plan.param "w" ones {global_shape = array<i64: 16, 9>, split_axes = array<i64: 2, -1>} : memref<8x8xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c5: grad_reduce names the tp axis.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C5) grad_reduce must be "tp", got "ep"}}
  %w, %dw, %mw, %vw = plan.param "w" ones {grad_reduce = "ep"} : memref<4xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests unit_c1: a unit holds only kernels.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
    // expected-error @+1 {{(C1) is not allowed in a plan.unit (only plan.kernel)}}
    %x = plan.buffer "x" : memref<4xf32>
  }
}

// -----

// Tests schedule_c1: a schedule holds only runs.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.schedule {
    // expected-error @+1 {{(C1) is not allowed in a plan.schedule (only plan.run)}}
    plan.kernel "zero"(%loss) ints = [] floats = [] absent = [] : memref<f32>
  }
}

// -----

// Tests schedule_c2: a unit that runs twice for one microbatch.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
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
    // expected-error @+1 {{(C2) unit "forward" runs twice for microbatch 0 of chunk 0}}
    plan.run "forward" microbatch 0
    plan.run "update"
  }
}

// -----

// Tests schedule_c2: a step unit that runs twice.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
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
    // expected-error @+1 {{(C2) unit "update" runs twice in a step}}
    plan.run "update"
  }
}

// -----

// Tests schedule_c2: a unit that never runs.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
  // expected-error @+1 {{(C2) unit "update" never runs}}
  plan.schedule {
    plan.run "forward" microbatch 0
    plan.run "backward" microbatch 0
  }
}

// -----

// Tests schedule_c2: a microbatch unit that misses a microbatch.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  // expected-error @+1 {{(C2) unit "forward" does not run for microbatch 1 of chunk 0 (the program has 2 microbatches)}}
  plan.schedule {
    plan.run "forward" microbatch 0
  }
}

// -----

// Tests schedule_c3: a microbatch's backward before its forward.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
  plan.schedule {
    // expected-error @+1 {{(C3) unit "backward" of microbatch 0 runs before that microbatch's forward units}}
    plan.run "backward" microbatch 0
    plan.run "forward" microbatch 0
    plan.run "update"
  }
}

// -----

// Tests run_c1: a run of a unit the program does not have.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
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
    // expected-error @+1 {{(C1) the program has no unit named "optimizer"}}
    plan.run "optimizer"
  }
}

// -----

// Tests run_c2: a step unit run for a microbatch.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
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
    // expected-error @+1 {{(C2) unit "update" of kind update runs once per step and takes no microbatch}}
    plan.run "update" microbatch 0
  }
}

// -----

// Tests run_c2: a microbatch unit run without a microbatch.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
  plan.schedule {
    // expected-error @+1 {{(C2) unit "forward" of kind forward runs per microbatch and needs one}}
    plan.run "forward"
  }
}

// -----

// Tests run_c2: a microbatch beyond the program's.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
  plan.schedule {
    // expected-error @+1 {{(C2) microbatch 1 is outside [0, 1)}}
    plan.run "forward" microbatch 1
  }
}

// -----

// Tests run_c3: a negative chunk.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.unit "update" update {
  }
  plan.schedule {
    // expected-error @+1 {{(C3) chunk must be >= 0, got -1}}
    plan.run "forward" microbatch 0 chunk -1
  }
}

// -----

// Tests program_c8: slots without slot_bytes.
// expected-error @+1 {{(C8) slots must be >= 1 and come with slot_bytes >= 0}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64, slots = 2 : i64} {
  plan.unit "forward" forward {
  }
}

// -----

// Tests program_c5: a slotted buffer's last copy must fit in the arena.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64, arena_bytes = 128 : i64, slots = 2 : i64, slot_bytes = 64 : i64} {
  // expected-error @+1 {{(C5) buffer must have an offset inside the arena of 128 bytes (every slot's copy)}}
  %x = plan.buffer "x" {offset = 64 : i64, slotted} : memref<16xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests param_c6: tied_stage names the program's own stage.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  // expected-error @+1 {{(C6) tied_stage must be another pipeline stage, got 0}}
  %v, %g, %m, %s = plan.param "wte" zeros {tied_stage = 0 : i64} : memref<4x2xf32>
  plan.unit "forward" forward {
  }
}

// -----

// Tests run_c3: a unit of the step takes no slot.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64} {
  plan.unit "forward" forward {
  }
  plan.unit "update" update {
  }
  plan.schedule {
    plan.run "forward" microbatch 0
    // expected-error @+1 {{(C3) a unit of the step takes no slot}}
    plan.run "update" slot 1
  }
}

// -----

// Tests schedule_c4: a microbatch takes a slot another still holds.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 2 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64, arena_bytes = 0 : i64, slots = 2 : i64, slot_bytes = 0 : i64} {
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.schedule {
    plan.run "forward" microbatch 0 slot 1
    // expected-error @+1 {{(C4) microbatch 1 takes slot 1 while microbatch 0 (chunk 0) still holds it}}
    plan.run "forward" microbatch 1 slot 1
    plan.run "backward" microbatch 0 slot 1
    plan.run "backward" microbatch 1 slot 1
  }
}

// -----

// Tests schedule_c4: a microbatch's runs stay on one slot, below the program's slots.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64, arena_bytes = 0 : i64, slots = 2 : i64, slot_bytes = 0 : i64} {
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.schedule {
    plan.run "forward" microbatch 0 slot 1
    // expected-error @+1 {{(C4) microbatch 0 runs on slot 0, its forward on slot 1}}
    plan.run "backward" microbatch 0
  }
}

// -----

// Tests schedule_c4: a slot outside the program's slots.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, stage = 0 : i64, vocab = 4 : i64, arena_bytes = 0 : i64, slots = 2 : i64, slot_bytes = 0 : i64} {
  plan.unit "forward" forward {
  }
  plan.unit "backward" backward {
  }
  plan.schedule {
    // expected-error @+1 {{(C4) slot 2 of microbatch 0 is outside the program's 2 slots}}
    plan.run "forward" microbatch 0 slot 2
    plan.run "backward" microbatch 0 slot 2
  }
}
