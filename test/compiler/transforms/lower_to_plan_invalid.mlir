// RUN: heiretsu-opt %s --split-input-file --heiretsu-lower-to-plan --verify-diagnostics

// Tests that a module without the frontend's structure is refused.
// expected-error @+1 {{expected a graph.model module (with 'vocab')}}
module {
  func.func @other() {
    return
  }
}

// -----

// Tests that the lowering reads tp from the module's mesh, and refuses a module
// without one.
// expected-error @+1 {{heiretsu-lower-to-plan reads the mesh from the module's dist.mesh @world, and there is none}}
module attributes {graph.model = {name = "nomesh", vocab = 16 : i64}} {
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that graph.moe is lowered in steps first (heiretsu-moe-dispatch).
module attributes {graph.model = {name = "moe", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %r = graph.param "r" normal std = 0.02 : tensor<4x8xf32>
    %w1 = graph.param "w1" normal std = 0.02 : tensor<4x6x8xf32>
    %w2 = graph.param "w2" normal std = 0.02 : tensor<4x8x6xf32>
    // expected-error @+1 {{graph.moe is lowered in steps: run heiretsu-moe-dispatch first}}
    %y, %aux = graph.moe %x, %r, %w1, %w2 experts = 4 top_k = 2 capacity = 1.5 aux_coef = 0.01 z_coef = 0.001 act = gelu : tensor<1x4x8xf32>, tensor<4x8xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>
    %logits = graph.linear %y, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}
