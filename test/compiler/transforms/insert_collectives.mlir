// RUN: heiretsu-opt %s --heiretsu-insert-collectives | FileCheck %s
// RUN: sed 's/tp = 2 ep/tp = 1 ep/' %s | heiretsu-opt --heiretsu-insert-collectives | FileCheck %s --check-prefix=TP1

// With tp = 1 in the mesh nothing is split: no collective is inserted.
// TP1: dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
// TP1-NOT: dist.all_reduce
// TP1-NOT: dist.copy

// Tests Megatron's f and g on a one-layer GPT annotated by
// heiretsu-shard-propagation (tp = 2 in the mesh): each partial sum (the vocabulary-parallel
// embedding, the row-parallel attention output and MLP down projections) is
// all-reduced once, right after its producer, and every later use reads the
// reduced value; each whole value read by column-parallel linears (the norms'
// outputs: QKV, MLP up, the head) is read through one dist.copy.
// CHECK: %[[E:.*]] = graph.embedding
// CHECK-NEXT: %[[ER:.*]] = dist.all_reduce %[[E]] on @world over tp reduce sum {dist.sharding = #dist.sharding<[_, _, _]>}
// CHECK: %[[N1:.*]] = graph.layernorm %[[ER]]
// CHECK-NEXT: %[[C1:.*]] = dist.copy %[[N1]] on @world over tp
// CHECK: graph.linear %[[C1]]
// CHECK: graph.linear %[[C1]]
// CHECK: graph.linear %[[C1]]
// CHECK: %[[O:.*]] = graph.linear %{{.*}} {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>}
// CHECK-NEXT: %[[OR:.*]] = dist.all_reduce %[[O]] on @world over tp reduce sum
// CHECK-NEXT: %[[R1:.*]] = graph.add %[[ER]], %[[OR]]
// CHECK: %[[N2:.*]] = graph.layernorm %[[R1]]
// CHECK-NEXT: dist.copy %[[N2]]
// CHECK: %[[D:.*]] = graph.linear %{{.*}} {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>}
// CHECK-NEXT: %[[DR:.*]] = dist.all_reduce %[[D]]
// CHECK-NEXT: graph.add %[[R1]], %[[DR]]
// CHECK: %[[N3:.*]] = graph.layernorm
// CHECK-NEXT: %[[C3:.*]] = dist.copy %[[N3]]
// CHECK-NEXT: %[[LOGITS:.*]] = graph.linear %[[C3]], %0
// CHECK-NEXT: graph.cross_entropy %[[LOGITS]]
// CHECK-NOT: = dist.
module attributes {graph.model = {name = "small", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%arg0: tensor<1x4xi32>, %arg1: tensor<1x4xi32>) -> tensor<f32> {
    %0 = graph.param "wte" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
    %1 = graph.param "wpe" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[_, _]>} : tensor<4x8xf32>
    %2 = graph.embedding %0[%arg0] positions %1 {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>} : tensor<16x8xf32>, tensor<1x4xi32>, tensor<4x8xf32> -> tensor<1x4x8xf32>
    %3 = graph.param "layers.0.norm1.weight" ones {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %4 = graph.param "layers.0.norm1.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %5 = graph.layernorm %2, %3, %4 eps = 1.000000e-05 {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>, tensor<8xf32>
    %6 = graph.param "layers.0.attn.wq.weight" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<8x8xf32>
    %7 = graph.param "layers.0.attn.wq.bias" zeros {dist.sharding = #dist.sharding<[tp]>} : tensor<8xf32>
    %8 = graph.linear %5, %6 bias %7 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %9 = graph.param "layers.0.attn.wk.weight" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<8x8xf32>
    %10 = graph.param "layers.0.attn.wk.bias" zeros {dist.sharding = #dist.sharding<[tp]>} : tensor<8xf32>
    %11 = graph.linear %5, %9 bias %10 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %12 = graph.param "layers.0.attn.wv.weight" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<8x8xf32>
    %13 = graph.param "layers.0.attn.wv.bias" zeros {dist.sharding = #dist.sharding<[tp]>} : tensor<8xf32>
    %14 = graph.linear %5, %12 bias %13 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %15 = graph.attention %8, %11, %14 heads = 2 kv_heads = 2 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<1x4x8xf32>
    %16 = graph.param "layers.0.attn.wo.weight" normal std = 0.014142135623730949 {dist.sharding = #dist.sharding<[_, tp]>} : tensor<8x8xf32>
    %17 = graph.param "layers.0.attn.wo.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %18 = graph.linear %15, %16 bias %17 {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>} : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %19 = graph.add %2, %18 {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %20 = graph.param "layers.0.norm2.weight" ones {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %21 = graph.param "layers.0.norm2.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %22 = graph.layernorm %19, %20, %21 eps = 1.000000e-05 {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>, tensor<8xf32>
    %23 = graph.param "layers.0.mlp.w_up.weight" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
    %24 = graph.param "layers.0.mlp.w_up.bias" zeros {dist.sharding = #dist.sharding<[tp]>} : tensor<16xf32>
    %25 = graph.linear %22, %23 bias %24 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<16x8xf32>, tensor<16xf32> -> tensor<1x4x16xf32>
    %26 = graph.gelu %25 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x16xf32>
    %27 = graph.param "layers.0.mlp.w_down.weight" normal std = 0.014142135623730949 {dist.sharding = #dist.sharding<[_, tp]>} : tensor<8x16xf32>
    %28 = graph.param "layers.0.mlp.w_down.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %29 = graph.linear %26, %27 bias %28 {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>} : tensor<1x4x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %30 = graph.add %19, %29 {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %31 = graph.param "final_norm.weight" ones {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %32 = graph.param "final_norm.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %33 = graph.layernorm %30, %31, %32 eps = 1.000000e-05 {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>, tensor<8xf32>
    %34 = graph.linear %33, %0 {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %35 = graph.cross_entropy %34, %arg1 {dist.sharding = #dist.sharding<[]>} : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %35 : tensor<f32>
  }
}
