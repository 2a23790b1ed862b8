// RUN: heiretsu-opt %s --split-input-file --heiretsu-moe-dispatch | FileCheck %s

// ep = 2: route, dispatch into [E, B * C, D], the exchange over ep, the grouped
// experts on E / ep experts, the exchange back, combine. C = ceil(1.25 * T * k /
// E) = ceil(1.25 * 8 * 2 / 4) = 5 slots per sequence, B = 2 sequences. The expert
// weights are split over ep on dimension 0; the router is not.
// CHECK-LABEL: func.func @forward
// CHECK: graph.param "moe.router" normal std = 2.000000e-02 {graph.layer = 0 : i64} : tensor<4x8xf32>
// CHECK: graph.param "moe.w_in" {{.*}}dist.sharding = #dist.sharding<[ep, _, _]>{{.*}} : tensor<4x16x8xf32>
// CHECK: graph.param "moe.w_out" {{.*}}dist.sharding = #dist.sharding<[ep, _, _]>{{.*}} : tensor<4x8x16xf32>
// CHECK: %[[C:.*]], %[[P:.*]], %[[W:.*]], %[[AUX:.*]] = graph.moe_route %{{.*}}, %{{.*}} experts = 4 top_k = 2 capacity = 5 aux_coef = 1.000000e-02 z_coef = 1.000000e-03 {graph.layer = 0 : i64} : tensor<2x8x8xf32>, tensor<4x8xf32> -> tensor<2x8x2xi32>, tensor<2x8x2xi32>, tensor<2x8x2xf32>
// CHECK: %[[BUF:.*]] = graph.moe_dispatch %{{.*}}, %[[C]], %[[P]] {graph.layer = 0 : i64} : {{.*}} -> tensor<4x10x8xf32>
// CHECK: %[[RECV:.*]] = dist.all_to_all %[[BUF]] on @world over ep split 0 concat 1 {graph.layer = 0 : i64} : tensor<4x10x8xf32> -> tensor<2x20x8xf32>
// CHECK: %[[OUT:.*]] = graph.moe_experts %[[RECV]], %{{.*}}, %{{.*}} act = gelu {graph.layer = 0 : i64} : tensor<2x20x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
// CHECK: %[[BACK:.*]] = dist.all_to_all %[[OUT]] on @world over ep split 1 concat 0 {graph.layer = 0 : i64} : tensor<2x20x8xf32> -> tensor<4x10x8xf32>
// CHECK: %[[Y:.*]] = graph.moe_combine %[[BACK]], %[[C]], %[[P]], %[[W]] {graph.layer = 0 : i64} : {{.*}} -> tensor<2x8x8xf32>
// CHECK: graph.add %[[Y]]
// CHECK: graph.add %{{.*}}, %[[AUX]] : tensor<f32>
// CHECK-NOT: graph.moe {{.*}}experts
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 2
  func.func @forward(%tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x8xi32> -> tensor<2x8x8xf32>
    %wr = graph.param "moe.router" normal std = 0.02 {graph.layer = 0 : i64} : tensor<4x8xf32>
    %w1 = graph.param "moe.w_in" normal std = 0.02 {graph.layer = 0 : i64} : tensor<4x16x8xf32>
    %w2 = graph.param "moe.w_out" normal std = 0.02 {graph.layer = 0 : i64} : tensor<4x8x16xf32>
    %y, %aux = graph.moe %x, %wr, %w1, %w2 experts = 4 top_k = 2 capacity = 1.25
        aux_coef = 1.0e-02 z_coef = 1.0e-03 act = gelu {graph.layer = 0 : i64} : tensor<2x8x8xf32>,
        tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
    %h = graph.add %y, %x {graph.layer = 0 : i64} : tensor<2x8x8xf32>
    %logits = graph.linear %h, %wte : tensor<2x8x8xf32>, tensor<16x8xf32> -> tensor<2x8x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<2x8x16xf32>, tensor<2x8xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// ep = 1, dropless (no capacity), SwiGLU: no exchange; C = T = 8 slots per
// sequence; the weights keep no sharding.
// CHECK-LABEL: func.func @forward
// CHECK-NOT: dist.sharding
// CHECK: graph.moe_route {{.*}} experts = 4 top_k = 1 capacity = 8
// CHECK: graph.moe_dispatch {{.*}} -> tensor<4x16x8xf32>
// CHECK-NOT: dist.all_to_all
// CHECK: graph.moe_experts %{{.*}}, %{{.*}}, %{{.*}} gate %{{.*}} : tensor<4x16x8xf32> act = swiglu
// CHECK-NOT: dist.all_to_all
// CHECK: graph.moe_combine
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%tok: tensor<2x8xi32>, %tgt: tensor<2x8xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x8xi32> -> tensor<2x8x8xf32>
    %wr = graph.param "moe.router" normal std = 0.02 : tensor<4x8xf32>
    %w1 = graph.param "moe.w_in" normal std = 0.02 : tensor<4x16x8xf32>
    %wg = graph.param "moe.w_gate" normal std = 0.02 : tensor<4x16x8xf32>
    %w2 = graph.param "moe.w_out" normal std = 0.02 : tensor<4x8x16xf32>
    %y, %aux = graph.moe %x, %wr, %w1, %w2 gate %wg : tensor<4x16x8xf32> experts = 4 top_k = 1
        aux_coef = 1.0e-02 z_coef = 0.0 act = swiglu : tensor<2x8x8xf32>,
        tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
    %logits = graph.linear %y, %wte : tensor<2x8x8xf32>, tensor<16x8xf32> -> tensor<2x8x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<2x8x16xf32>, tensor<2x8xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}
