// RUN: heiretsu-opt %s --heiretsu-shard-propagation --split-input-file | FileCheck %s
// RUN: sed 's/tp = 2 ep/tp = 1 ep/' %s | heiretsu-opt --heiretsu-shard-propagation --split-input-file | FileCheck %s --check-prefix=TP1

// With tp = 1 in the mesh there is nothing to split: no op gets a sharding.
// TP1-NOT: dist.sharding

// Tests the Megatron defaults on a one-layer GPT (tp = 2 from the module's mesh,
// which the pass keeps); the tied
// embedding table is split over its vocabulary ([tp, _]) for both its uses; QKV
// and the MLP up projection are column-parallel ([tp, _] weights, split results),
// the attention output and MLP down projections row-parallel ([_, tp] weights,
// whole biases, partial-sum results); norms give whole values; the head's logits
// are split over the vocabulary.
// CHECK-LABEL: name = "small"
// CHECK: dist.mesh @world dp = 3 pp = 1 tp = 2 ep = 1
// CHECK: graph.param "wte" {{.*}}#dist.sharding<[tp, _]>
// CHECK: graph.param "wpe" {{.*}}#dist.sharding<[_, _]>
// CHECK: graph.embedding {{.*}}#dist.sharding<[_, _, _], partial = [tp]>
// CHECK: graph.layernorm {{.*}}#dist.sharding<[_, _, _]>
// CHECK: graph.param "layers.0.attn.wq.weight" {{.*}}#dist.sharding<[tp, _]>
// CHECK: graph.param "layers.0.attn.wq.bias" {{.*}}#dist.sharding<[tp]>
// CHECK: graph.linear {{.*}}#dist.sharding<[_, _, tp]>
// CHECK: graph.attention {{.*}}#dist.sharding<[_, _, tp]>
// CHECK: graph.param "layers.0.attn.wo.weight" {{.*}}#dist.sharding<[_, tp]>
// CHECK: graph.param "layers.0.attn.wo.bias" {{.*}}#dist.sharding<[_]>
// CHECK: graph.linear {{.*}}#dist.sharding<[_, _, _], partial = [tp]>
// CHECK: graph.add {{.*}}#dist.sharding<[_, _, _]>
// CHECK: graph.param "layers.0.mlp.w_up.weight" {{.*}}#dist.sharding<[tp, _]>
// CHECK: graph.gelu {{.*}}#dist.sharding<[_, _, tp]>
// CHECK: graph.param "layers.0.mlp.w_down.weight" {{.*}}#dist.sharding<[_, tp]>
// CHECK: graph.param "final_norm.weight" {{.*}}#dist.sharding<[_]>
// CHECK: %[[LOGITS:.*]] = graph.linear %{{.*}}, %0 {dist.sharding = #dist.sharding<[_, _, tp]>}
// CHECK: graph.cross_entropy %[[LOGITS]], %arg1 {dist.sharding = #dist.sharding<[]>}
module attributes {graph.model = {name = "small", vocab = 16 : i64}} {
  dist.mesh @world dp = 3 pp = 1 tp = 2 ep = 1
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

// -----

// Tests grouped-query attention with RoPE, RMSNorm and SwiGLU: the gate and up
// projections are both column-parallel, swiglu keeps their split.
// CHECK-LABEL: name = "gqa"
// CHECK: graph.attention {{.*}} heads = 4 kv_heads = 2 rope = {{.*}}#dist.sharding<[_, _, tp]>
// CHECK: graph.param "g" {{.*}}#dist.sharding<[tp, _]>
// CHECK: graph.param "u" {{.*}}#dist.sharding<[tp, _]>
// CHECK: graph.swiglu {{.*}}#dist.sharding<[_, _, tp]>
// CHECK: graph.param "d" {{.*}}#dist.sharding<[_, tp]>
module attributes {graph.model = {name = "gqa", vocab = 16 : i64}} {
  dist.mesh @world dp = 3 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %nw = graph.param "nw" ones : tensor<8xf32>
    %n = graph.rmsnorm %x, %nw eps = 1.000000e-05 : tensor<1x4x8xf32>, tensor<8xf32>
    %wq = graph.param "wq" normal std = 2.000000e-02 : tensor<8x8xf32>
    %q = graph.linear %n, %wq : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %wk = graph.param "wk" normal std = 2.000000e-02 : tensor<4x8xf32>
    %k = graph.linear %n, %wk : tensor<1x4x8xf32>, tensor<4x8xf32> -> tensor<1x4x4xf32>
    %wv = graph.param "wv" normal std = 2.000000e-02 : tensor<4x8xf32>
    %v = graph.linear %n, %wv : tensor<1x4x8xf32>, tensor<4x8xf32> -> tensor<1x4x4xf32>
    %a = graph.attention %q, %k, %v heads = 4 kv_heads = 2 rope = 1.000000e+04 : tensor<1x4x8xf32>, tensor<1x4x4xf32>
    %wo = graph.param "wo" normal std = 2.000000e-02 : tensor<8x8xf32>
    %o = graph.linear %a, %wo : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %r = graph.add %x, %o : tensor<1x4x8xf32>
    %wg = graph.param "g" normal std = 2.000000e-02 : tensor<16x8xf32>
    %gt = graph.linear %r, %wg : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %wu = graph.param "u" normal std = 2.000000e-02 : tensor<16x8xf32>
    %up = graph.linear %r, %wu : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %s = graph.swiglu %gt, %up : tensor<1x4x16xf32>
    %wd = graph.param "d" normal std = 2.000000e-02 : tensor<8x16xf32>
    %dn = graph.linear %s, %wd : tensor<1x4x16xf32>, tensor<8x16xf32> -> tensor<1x4x8xf32>
    %wh = graph.param "h" normal std = 2.000000e-02 : tensor<16x8xf32>
    %lg = graph.linear %dn, %wh : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %l = graph.cross_entropy %lg, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}
