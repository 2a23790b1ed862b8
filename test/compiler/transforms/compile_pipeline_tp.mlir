// RUN: heiretsu-opt %s --heiretsu-compile-pipeline | FileCheck %s --check-prefix=GRAD

// Tests the compile pipeline on the graph of lower_to_plan_tp.mlir before
// sharding (the mesh has tp = 2): the backward pass of the program it becomes: the vocabulary-parallel loss gives
// cross_entropy_grad with vocab_parallel = 1; the forward all_reduces have no
// backward kernel (the gradient passes through), while each grad_reduce value's
// gradient is all-reduced over tp before its producer's rule reads it; the norm
// of the tp-split gradients is a separate grad_norm_sq with tp_sharded = 1.
// GRAD: plan.kernel "vocab_loss"
// GRAD-NEXT: }
// GRAD-NEXT: plan.unit "backward" backward {
// GRAD-NEXT: plan.kernel "cross_entropy_grad"({{.*}}) ints = [4, 8, 0, 1, 16] floats = [1.000000e+00]
// GRAD-NEXT: plan.kernel "linear_grad"({{.*}}) ints = [4, 8, 8, 0]
// GRAD-NEXT: plan.kernel "all_reduce"(%[[DD:.*]]) ints = [2, 0]
// GRAD-NEXT: plan.kernel "linear_grad"(%[[DD]], {{.*}}) ints = [4, 6, 8, 0]
// GRAD-NEXT: plan.kernel "linear_grad"({{.*}}) ints = [4, 8, 6, 0]
// GRAD-NEXT: plan.kernel "all_reduce"(%[[DX:.*]]) ints = [2, 0]
// GRAD-NEXT: plan.kernel "embedding_grad"(%{{.*}}, %[[DX]], {{.*}}) ints = [4, 4, 8, 8, 4, 1]
// GRAD-NEXT: }
// GRAD: plan.unit "update" update {
// GRAD-NEXT: plan.kernel "grad_norm_sq"(%{{.*}}) ints = [0, 0, 0, 0] {{.*}} : memref<8xf32>
// GRAD-NEXT: plan.kernel "grad_norm_sq"(%{{.*}}, %{{.*}}, %{{.*}}) ints = [0, 1, 0, 0] {{.*}} : memref<8x8xf32>, memref<6x8xf32>, memref<8x6xf32>
module attributes {graph.model = {name = "tp", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %wu = graph.param "up" normal std = 0.02 : tensor<12x8xf32>
    %u = graph.linear %x, %wu : tensor<1x4x8xf32>, tensor<12x8xf32> -> tensor<1x4x12xf32>
    %wd = graph.param "down" normal std = 0.02 : tensor<8x12xf32>
    %bd = graph.param "down.bias" zeros : tensor<8xf32>
    %d = graph.linear %u, %wd bias %bd : tensor<1x4x12xf32>, tensor<8x12xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %logits = graph.linear %d, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %l = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}
