// RUN: heiretsu-opt %s --heiretsu-insert-collectives --split-input-file --verify-diagnostics

// Tests that collective insertion needs the mesh shardings refer to.
// expected-error @+1 {{heiretsu-insert-collectives reads the mesh from the module's dist.mesh @world, and there is none}}
module attributes {graph.model = {name = "nomesh", vocab = 16 : i64}} {
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that every op must carry its sharding.
module attributes {graph.model = {name = "unannotated", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    // expected-error @+1 {{no dist.sharding (run heiretsu-shard-propagation first)}}
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}
