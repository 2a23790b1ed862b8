// RUN: heiretsu-opt %s --split-input-file --heiretsu-moe-dispatch --verify-diagnostics

// Tests that the experts must divide over ep.
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 3
  func.func @forward(%tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x8xi32> -> tensor<2x8x8xf32>
    %wr = graph.param "moe.router" normal std = 0.02 : tensor<4x8xf32>
    %w1 = graph.param "moe.w_in" normal std = 0.02 : tensor<4x16x8xf32>
    %w2 = graph.param "moe.w_out" normal std = 0.02 : tensor<4x8x16xf32>
    // expected-error @+1 {{experts = 4 is not divisible by ep = 3 (each ep rank holds experts / ep of them): choose ep among the divisors of 4}}
    %y, %aux = graph.moe %x, %wr, %w1, %w2 experts = 4 top_k = 2 capacity = 1.0
        aux_coef = 1.0e-02 z_coef = 0.0 act = gelu : tensor<2x8x8xf32>,
        tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
    %logits = graph.linear %y, %wte : tensor<2x8x8xf32>, tensor<16x8xf32> -> tensor<2x8x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<2x8x16xf32>, tensor<2x8xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that ep > 1 needs a moe layer.
// expected-error @+1 {{the mesh has ep = 2, but the model has no moe layer: expert parallelism splits experts (use --dp for data parallelism)}}
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 2
  func.func @forward(%tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x8xi32> -> tensor<2x8x8xf32>
    %logits = graph.linear %x, %wte : tensor<2x8x8xf32>, tensor<16x8xf32> -> tensor<2x8x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<2x8x16xf32>, tensor<2x8xi32>
    return %ce : tensor<f32>
  }
}

// -----

// Tests that the expert weights must be parameters.
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 2
  func.func @forward(%tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x8xi32> -> tensor<2x8x8xf32>
    %wr = graph.param "moe.router" normal std = 0.02 : tensor<4x8xf32>
    %w0 = graph.param "moe.w_in" normal std = 0.02 : tensor<4x16x8xf32>
    %w1 = graph.add %w0, %w0 : tensor<4x16x8xf32>
    %w2 = graph.param "moe.w_out" normal std = 0.02 : tensor<4x8x16xf32>
    // expected-error @+1 {{the expert weights must be graph.param values to be split over ep}}
    %y, %aux = graph.moe %x, %wr, %w1, %w2 experts = 4 top_k = 2 capacity = 1.0
        aux_coef = 1.0e-02 z_coef = 0.0 act = gelu : tensor<2x8x8xf32>,
        tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
    %logits = graph.linear %y, %wte : tensor<2x8x8xf32>, tensor<16x8xf32> -> tensor<2x8x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<2x8x16xf32>, tensor<2x8xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}
