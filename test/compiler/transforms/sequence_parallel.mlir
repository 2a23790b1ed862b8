// RUN: heiretsu-opt %s --heiretsu-shard-propagation='sequence-parallel=true' | FileCheck %s --check-prefix=SHARD
// RUN: heiretsu-opt %s --heiretsu-shard-propagation='sequence-parallel=true' --heiretsu-insert-collectives='sequence-parallel=true' | FileCheck %s --check-prefix=INSERT
// RUN: heiretsu-opt %s --heiretsu-compile-pipeline='sequence-parallel=true' | FileCheck %s --check-prefix=PLAN

// Tests sequence parallelism on a one-layer GPT over tp = 2. Propagation: the
// embedding stays a partial sum; norms and residual adds hold the sequence split
// ([_, tp, _]); the tp-parallel regions are as without it.
// SHARD: graph.embedding {{.*}}#dist.sharding<[_, _, _], partial = [tp]>
// SHARD: graph.layernorm {{.*}}#dist.sharding<[_, tp, _]>
// SHARD: graph.attention {{.*}}#dist.sharding<[_, _, tp]>
// SHARD: graph.add {{.*}}#dist.sharding<[_, tp, _]>
// SHARD: graph.gelu {{.*}}#dist.sharding<[_, _, tp]>
// SHARD: graph.add {{.*}}#dist.sharding<[_, tp, _]>
// SHARD: graph.layernorm {{.*}}#dist.sharding<[_, tp, _]>

// Insertion: each partial sum is reduce-scattered along the sequence; each norm
// output is all-gathered before its column-parallel linears (no dist.copy).
// INSERT: %[[E:.*]] = graph.embedding
// INSERT-NEXT: %[[ES:.*]] = dist.reduce_scatter %[[E]] on @world over tp dim 1 reduce sum {dist.sharding = #dist.sharding<[_, tp, _]>}
// INSERT: %[[N:.*]] = graph.layernorm %[[ES]]
// INSERT-NEXT: %[[NG:.*]] = dist.all_gather %[[N]] on @world over tp dim 1 {dist.sharding = #dist.sharding<[_, _, _]>}
// INSERT: graph.linear %[[NG]]
// INSERT: %[[O:.*]] = graph.linear %{{.*}} {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>}
// INSERT-NEXT: %[[OS:.*]] = dist.reduce_scatter %[[O]]
// INSERT-NEXT: graph.add %[[ES]], %[[OS]]
// INSERT-NOT: dist.copy

// Lowering and backward: this rank's half of the tokens in the norms (rows 2 of
// 4); all_gather_into / reduce_scatter_into with outer = batch (1), parts = 2,
// inner = 2 tokens x 8; each the other's transpose in the backward pass; the
// norm weights' gradients (partial sums: each rank saw its tokens) are all-reduced
// over tp first thing in the update unit.
// PLAN: plan.param "layers.0.norm1.weight" ones {grad_reduce = "tp",
// PLAN: plan.param "layers.0.norm1.bias" zeros {grad_reduce = "tp",
// PLAN: plan.kernel "reduce_scatter_into"({{.*}}) ints = [2, 1, 2, 16, 0] {{.*}} : memref<1x4x8xf32>, memref<1x2x8xf32>
// PLAN-NEXT: plan.kernel "layernorm"({{.*}}) ints = [2, 8]
// PLAN-NEXT: plan.kernel "all_gather_into"({{.*}}) ints = [2, 1, 2, 16, 0] {{.*}} : memref<1x2x8xf32>, memref<1x4x8xf32>
// PLAN: plan.kernel "cross_entropy_grad"
// PLAN-NEXT: plan.kernel "linear_grad"
// PLAN-NEXT: plan.kernel "reduce_scatter_into"({{.*}}) ints = [2, 1, 2, 16, 0]
// PLAN-NEXT: plan.kernel "layernorm_grad"({{.*}}) ints = [2, 8, 0]
// PLAN: plan.kernel "attention_grad"
// PLAN: plan.kernel "reduce_scatter_into"({{.*}}) ints = [2, 1, 2, 16, 0]
// PLAN-NEXT: plan.kernel "layernorm_grad"({{.*}}) ints = [2, 8, 1]
// PLAN-NEXT: plan.kernel "all_gather_into"({{.*}}) ints = [2, 1, 2, 16, 0]
// PLAN-NEXT: plan.kernel "embedding_grad"({{.*}}) ints = [4, 4, 8, 8, 4, 1]
// PLAN: plan.unit "update" update {
// PLAN-NEXT: plan.kernel "all_reduce"({{.*}}) ints = [2, 0] {{.*}} : memref<8xf32>, memref<8xf32>, memref<8xf32>, memref<8xf32>, memref<8xf32>, memref<8xf32>
module attributes {graph.model = {name = "small", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%arg0: tensor<1x4xi32>, %arg1: tensor<1x4xi32>) -> tensor<f32> {
    %0 = graph.param "wte" normal std = 2.000000e-02 : tensor<16x8xf32>
    %1 = graph.param "wpe" normal std = 2.000000e-02 : tensor<4x8xf32>
    %2 = graph.embedding %0[%arg0] positions %1 : tensor<16x8xf32>, tensor<1x4xi32>, tensor<4x8xf32> -> tensor<1x4x8xf32>
    %3 = graph.param "layers.0.norm1.weight" ones : tensor<8xf32>
    %4 = graph.param "layers.0.norm1.bias" zeros : tensor<8xf32>
    %5 = graph.layernorm %2, %3, %4 eps = 1.000000e-05 : tensor<1x4x8xf32>, tensor<8xf32>
    %6 = graph.param "layers.0.attn.wq.weight" normal std = 2.000000e-02 : tensor<8x8xf32>
    %7 = graph.param "layers.0.attn.wq.bias" zeros : tensor<8xf32>
    %8 = graph.linear %5, %6 bias %7 : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %9 = graph.param "layers.0.attn.wk.weight" normal std = 2.000000e-02 : tensor<8x8xf32>
    %10 = graph.param "layers.0.attn.wk.bias" zeros : tensor<8xf32>
    %11 = graph.linear %5, %9 bias %10 : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %12 = graph.param "layers.0.attn.wv.weight" normal std = 2.000000e-02 : tensor<8x8xf32>
    %13 = graph.param "layers.0.attn.wv.bias" zeros : tensor<8xf32>
    %14 = graph.linear %5, %12 bias %13 : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %15 = graph.attention %8, %11, %14 heads = 2 kv_heads = 2 : tensor<1x4x8xf32>, tensor<1x4x8xf32>
    %16 = graph.param "layers.0.attn.wo.weight" normal std = 0.014142135623730949 : tensor<8x8xf32>
    %17 = graph.param "layers.0.attn.wo.bias" zeros : tensor<8xf32>
    %18 = graph.linear %15, %16 bias %17 : tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %19 = graph.add %2, %18 : tensor<1x4x8xf32>
    %20 = graph.param "layers.0.norm2.weight" ones : tensor<8xf32>
    %21 = graph.param "layers.0.norm2.bias" zeros : tensor<8xf32>
    %22 = graph.layernorm %19, %20, %21 eps = 1.000000e-05 : tensor<1x4x8xf32>, tensor<8xf32>
    %23 = graph.param "layers.0.mlp.w_up.weight" normal std = 2.000000e-02 : tensor<16x8xf32>
    %24 = graph.param "layers.0.mlp.w_up.bias" zeros : tensor<16xf32>
    %25 = graph.linear %22, %23 bias %24 : tensor<1x4x8xf32>, tensor<16x8xf32>, tensor<16xf32> -> tensor<1x4x16xf32>
    %26 = graph.gelu %25 : tensor<1x4x16xf32>
    %27 = graph.param "layers.0.mlp.w_down.weight" normal std = 0.014142135623730949 : tensor<8x16xf32>
    %28 = graph.param "layers.0.mlp.w_down.bias" zeros : tensor<8xf32>
    %29 = graph.linear %26, %27 bias %28 : tensor<1x4x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %30 = graph.add %19, %29 : tensor<1x4x8xf32>
    %31 = graph.param "final_norm.weight" ones : tensor<8xf32>
    %32 = graph.param "final_norm.bias" zeros : tensor<8xf32>
    %33 = graph.layernorm %30, %31, %32 eps = 1.000000e-05 : tensor<1x4x8xf32>, tensor<8xf32>
    %34 = graph.linear %33, %0 : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %35 = graph.cross_entropy %34, %arg1 : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %35 : tensor<f32>
  }
}
