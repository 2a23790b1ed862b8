// RUN: heiretsu-opt %s --heiretsu-stage-cuts='virtual-stages=2' | FileCheck %s
// RUN: not heiretsu-opt %s --heiretsu-stage-cuts='virtual-stages=2 stage-layers=1,1,2' 2>&1 | FileCheck %s --check-prefix=COUNT
// COUNT: error: stage-layers '1,1,2' gives 3 stages of 4 layers; the mesh has pp x virtual-stages = 4 and the model 4 layers

// Tests interleaved placement: pp = 2 with 2 chunks per stage cuts four layers into
// four model chunks of one layer; chunk c runs on stage c mod 2 (stage 0 holds
// chunks 0 and 2, layers 0 and 2), each a function @stage_S_chunk_K. Chunk 1 (stage
// 1) sends to chunk 2 (stage 0): offset -1. The embedding is on chunk 0, the head
// and loss on chunk 3.
// CHECK-LABEL: func.func @stage_0_chunk_0(%{{.*}}: tensor<1x4xi32> {graph.input = "tokens"})
// CHECK: graph.embedding
// CHECK: graph.param "layers.0.w"
// CHECK: dist.send {{.*}} over pp offset 1
// CHECK-LABEL: func.func @stage_1_chunk_0()
// CHECK-NEXT: dist.recv on @world over pp offset -1
// CHECK: graph.param "layers.1.w"
// CHECK: dist.send {{.*}} over pp offset -1
// CHECK-LABEL: func.func @stage_0_chunk_1()
// CHECK-NEXT: dist.recv on @world over pp offset 1
// CHECK: graph.param "layers.2.w"
// CHECK: dist.send {{.*}} over pp offset 1
// CHECK-LABEL: func.func @stage_1_chunk_1(%{{.*}}: tensor<1x4xi32> {graph.input = "targets"}) -> tensor<f32>
// CHECK: graph.param "layers.3.w"
// CHECK: graph.cross_entropy
module attributes {graph.model = {name = "chunks", vocab = 16 : i64, layers = 4 : i64, batch = 1 : i64, seq = 4 : i64}} {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w0 = graph.param "layers.0.w" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    %x1 = graph.linear %x, %w0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w1 = graph.param "layers.1.w" normal std = 0.02 {graph.layer = 1 : i64} : tensor<8x8xf32>
    %x2 = graph.linear %x1, %w1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w2 = graph.param "layers.2.w" normal std = 0.02 {graph.layer = 2 : i64} : tensor<8x8xf32>
    %x3 = graph.linear %x2, %w2 {graph.layer = 2 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w3 = graph.param "layers.3.w" normal std = 0.02 {graph.layer = 3 : i64} : tensor<8x8xf32>
    %x4 = graph.linear %x3, %w3 {graph.layer = 3 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %logits = graph.linear %x4, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %ce : tensor<f32>
  }
}
