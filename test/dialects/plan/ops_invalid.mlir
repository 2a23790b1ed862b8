// RUN: heiretsu-opt %s --split-input-file --verify-diagnostics

// Tests kernel_c1: an opcode the runtime does not have.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.microbatch {
    // expected-error @+1 {{(C1) unknown opcode 'relu'}}
    plan.kernel "relu"(%loss) ints = [1] floats = [] absent = [] : memref<f32>
  }
  plan.update {
  }
}

// -----

// Tests kernel_c2: the wrong number of attributes.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.microbatch {
    // expected-error @+1 {{(C2) 'gelu' takes 1 ints and 0 floats, got 2 and 0}}
    plan.kernel "gelu"(%loss, %loss) ints = [1, 1] floats = [] absent = [] : memref<f32>, memref<f32>
  }
  plan.update {
  }
}

// -----

// Tests kernel_c2: an accumulate flag that is not 0 or 1.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.microbatch {
    // expected-error @+1 {{(C2) accumulate_dx = 3 is out of range}}
    plan.kernel "gelu_grad"(%loss, %loss, %loss) ints = [1, 3] floats = [] absent = [] : memref<f32>, memref<f32>, memref<f32>
  }
  plan.update {
  }
}

// -----

// Tests kernel_c3: a buffer with the wrong element count for the sizes given.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4x8xf32>
  %w = plan.buffer "w" : memref<8x8xf32>
  %y = plan.buffer "y" : memref<4x4xf32>
  plan.microbatch {
    // expected-error @+1 {{(C3) buffer 'y' has 16 elements, expected 32}}
    plan.kernel "linear"(%x, %w, %y) ints = [4, 8, 8, 0] floats = [] absent = [2] : memref<4x8xf32>, memref<8x8xf32>, memref<4x4xf32>
  }
  plan.update {
  }
}

// -----

// Tests kernel_c3: a required buffer marked absent, and a wrong element type.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.microbatch {
    // expected-error @+1 {{(C3) buffer 'x' of 'gelu' is required}}
    plan.kernel "gelu"(%x) ints = [4] floats = [] absent = [0] : memref<4xf32>
  }
  plan.update {
  }
}

// -----

plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %x = plan.buffer "x" : memref<4xf32>
  plan.microbatch {
    // expected-error @+1 {{(C3) buffer 'ids' must be i32, got 'memref<4xf32>'}}
    plan.kernel "embedding"(%x, %x, %x) ints = [4, 4, 1, 1, 4, 0] floats = [] absent = [2] : memref<4xf32>, memref<4xf32>, memref<4xf32>
  }
  plan.update {
  }
}

// -----

// Tests embedding's seq <= context rule (learned positions are read by position).
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  %ids = plan.buffer "ids" : memref<8xi32>
  %t = plan.buffer "t" : memref<4x2xf32>
  %p = plan.buffer "p" : memref<4x2xf32>
  %o = plan.buffer "o" : memref<8x2xf32>
  plan.microbatch {
    // expected-error @+1 {{(C2) seq = 8 exceeds context = 4}}
    plan.kernel "embedding"(%ids, %t, %p, %o) ints = [8, 8, 4, 2, 4, 0] floats = [] absent = [] : memref<8xi32>, memref<4x2xf32>, memref<4x2xf32>, memref<8x2xf32>
  }
  plan.update {
  }
}

// -----

// Tests program_c2: a program needs its loss buffer.
// expected-error @+1 {{(C2) no buffer has io = "loss"}}
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  plan.microbatch {
  }
  plan.update {
  }
}

// -----

// Tests program_c4: after memory planning every buffer fits in the arena.
plan.program "p" attributes {arena_bytes = 64 : i64, micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens", offset = 0 : i64} : memref<1x1xi32>
  // expected-error @+1 {{(C4) buffer must have an offset inside the arena of 64 bytes}}
  %tgt = plan.buffer "targets" {io = "targets", offset = 64 : i64} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss", offset = 0 : i64} : memref<f32>
  plan.microbatch {
  }
  plan.update {
  }
}

// -----

// Tests buffer_c1: the loss is a single f32.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  // expected-error @+1 {{(C1) io = "loss" needs tokens/targets of i32 or a one-element f32 loss, got 'memref<2xf32>'}}
  %loss = plan.buffer "loss" {io = "loss"} : memref<2xf32>
  plan.microbatch {
  }
  plan.update {
  }
}

// -----

// Tests a collective's enumerated attributes: mesh axis 0-3, reduction 0-2.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  plan.microbatch {
  }
  plan.update {
    // expected-error @+1 {{(C2) axis = 4 is out of range [0, 3]}}
    plan.kernel "all_reduce"(%loss) ints = [4, 0] floats = [] absent = [] : memref<f32>
  }
}

// -----

// Tests that grad_reduce names the tp axis.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C2) grad_reduce must be "tp", got "dp"}}
  %x = plan.buffer "x" {grad_reduce = "dp"} : memref<4xf32>
  plan.microbatch {
  }
  plan.update {
  }
}

// -----

// Tests that a tp block's global shape splits its value along tp_dim.
plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) global_shape [16, 9] is not a split of 'memref<8x8xf32>' along tp_dim 0}}
  %v, %g, %m, %s = plan.param "w" zeros {global_shape = array<i64: 16, 9>, tp_dim = 0 : i64} : memref<8x8xf32>
  plan.microbatch {
  }
  plan.update {
  }
}

// -----

plan.program "p" attributes {micro_batch_size = 1 : i64, microbatches = 1 : i64, seq = 1 : i64, vocab = 4 : i64} {
  %tok = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
  %tgt = plan.buffer "targets" {io = "targets"} : memref<1x1xi32>
  %loss = plan.buffer "loss" {io = "loss"} : memref<f32>
  // expected-error @+1 {{(C4) tp_dim and global_shape go together}}
  %v, %g, %m, %s = plan.param "w" zeros {tp_dim = 0 : i64} : memref<8x8xf32>
  plan.microbatch {
  }
  plan.update {
  }
}
