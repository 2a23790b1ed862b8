// RUN: heiretsu-opt %s --split-input-file --heiretsu-lower-to-plan --verify-diagnostics

// Tests that MoE is refused with the reason (its dispatch is not built yet).
module attributes {graph.model = {name = "m", vocab = 16 : i64}} {
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %r = graph.param "r" normal std = 0.02 : tensor<2x8xf32>
    %w1 = graph.param "w1" normal std = 0.02 : tensor<2x16x8xf32>
    %w2 = graph.param "w2" normal std = 0.02 : tensor<2x8x16xf32>
    // expected-error @+1 {{graph.moe cannot be lowered to the plan yet}}
    %y, %aux = graph.moe %x, %r, %w1, %w2 experts = 2 top_k = 1 capacity = 1.0 aux_coef = 0.0 z_coef = 0.0 act = gelu : tensor<1x4x8xf32>, tensor<2x8xf32>, tensor<2x16x8xf32>, tensor<2x8x16xf32>
    %logits = graph.linear %y, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %loss = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that a module without the frontend's structure is refused.
// expected-error @+1 {{expected a graph.model module with func.func @forward(tokens, targets)}}
module {
  func.func @other() {
    return
  }
}
