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
