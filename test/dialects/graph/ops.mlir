// RUN: heiretsu-opt %s --split-input-file | heiretsu-opt --split-input-file | FileCheck %s

// Tests that parameters print with their name, initializer and std.
// CHECK-LABEL: func.func @params
func.func @params() -> (tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>) {
  // CHECK: graph.param "layers.0.attn.wq.weight" normal std = 2.000000e-02 : tensor<4x8xf32>
  %0 = graph.param "layers.0.attn.wq.weight" normal std = 0.02 : tensor<4x8xf32>
  // CHECK: graph.param "final_norm.weight" ones : tensor<8xf32>
  %1 = graph.param "final_norm.weight" ones : tensor<8xf32>
  // CHECK: graph.param "final_norm.bias" zeros : tensor<8xf32>
  %2 = graph.param "final_norm.bias" zeros : tensor<8xf32>
  return %0, %1, %2 : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// Tests embedding with and without learned positions.
// CHECK-LABEL: func.func @embedding
func.func @embedding(%table: tensor<16x8xf32>, %ids: tensor<2x4xi32>,
                     %pos: tensor<6x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
  // CHECK: graph.embedding %{{.*}}[%{{.*}}] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
  %0 = graph.embedding %table[%ids] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
  // CHECK: graph.embedding %{{.*}}[%{{.*}}] positions %{{.*}} : tensor<16x8xf32>, tensor<2x4xi32>, tensor<6x8xf32> -> tensor<2x4x8xf32>
  %1 = graph.embedding %table[%ids] positions %pos : tensor<16x8xf32>, tensor<2x4xi32>, tensor<6x8xf32> -> tensor<2x4x8xf32>
  return %0, %1 : tensor<2x4x8xf32>, tensor<2x4x8xf32>
}

// -----

// Tests linear with and without bias, on rank 2 and rank 3 inputs.
// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<2x4x8xf32>, %x2: tensor<3x8xf32>, %w: tensor<16x8xf32>,
                  %b: tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<3x16xf32>) {
  // CHECK: graph.linear %{{.*}}, %{{.*}} bias %{{.*}} : tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32> -> tensor<2x4x16xf32>
  %0 = graph.linear %x, %w bias %b : tensor<2x4x8xf32>, tensor<16x8xf32>, tensor<16xf32> -> tensor<2x4x16xf32>
  // CHECK: graph.linear %{{.*}}, %{{.*}} : tensor<3x8xf32>, tensor<16x8xf32> -> tensor<3x16xf32>
  %1 = graph.linear %x2, %w : tensor<3x8xf32>, tensor<16x8xf32> -> tensor<3x16xf32>
  return %0, %1 : tensor<2x4x16xf32>, tensor<3x16xf32>
}

// -----

// Tests the norms.
// CHECK-LABEL: func.func @norms
func.func @norms(%x: tensor<2x4x8xf32>, %g: tensor<8xf32>, %b: tensor<8xf32>)
    -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
  // CHECK: graph.layernorm %{{.*}}, %{{.*}}, %{{.*}} eps = 1.000000e-05 : tensor<2x4x8xf32>, tensor<8xf32>
  %0 = graph.layernorm %x, %g, %b eps = 1.0e-5 : tensor<2x4x8xf32>, tensor<8xf32>
  // CHECK: graph.rmsnorm %{{.*}}, %{{.*}} eps = 9.9999999999999995E-7 : tensor<2x4x8xf32>, tensor<8xf32>
  %1 = graph.rmsnorm %x, %g eps = 1.0e-6 : tensor<2x4x8xf32>, tensor<8xf32>
  return %0, %1 : tensor<2x4x8xf32>, tensor<2x4x8xf32>
}

// -----

// Tests attention: multi-head, and grouped-query with RoPE.
// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x4x32xf32>, %kv: tensor<2x4x8xf32>, %k: tensor<2x4x32xf32>)
    -> (tensor<2x4x32xf32>, tensor<2x4x32xf32>) {
  // CHECK: graph.attention %{{.*}}, %{{.*}}, %{{.*}} heads = 4 kv_heads = 4 : tensor<2x4x32xf32>, tensor<2x4x32xf32>
  %0 = graph.attention %q, %k, %k heads = 4 kv_heads = 4 : tensor<2x4x32xf32>, tensor<2x4x32xf32>
  // CHECK: graph.attention %{{.*}}, %{{.*}}, %{{.*}} heads = 4 kv_heads = 1 rope = 1.000000e+04 : tensor<2x4x32xf32>, tensor<2x4x8xf32>
  %1 = graph.attention %q, %kv, %kv heads = 4 kv_heads = 1 rope = 10000.0 : tensor<2x4x32xf32>, tensor<2x4x8xf32>
  return %0, %1 : tensor<2x4x32xf32>, tensor<2x4x32xf32>
}

// -----

// Tests the elementwise ops.
// CHECK-LABEL: func.func @elementwise
func.func @elementwise(%a: tensor<2x4x8xf32>, %b: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  // CHECK: %[[G:.*]] = graph.gelu %{{.*}} : tensor<2x4x8xf32>
  %0 = graph.gelu %a : tensor<2x4x8xf32>
  // CHECK: %[[S:.*]] = graph.swiglu %[[G]], %{{.*}} : tensor<2x4x8xf32>
  %1 = graph.swiglu %0, %b : tensor<2x4x8xf32>
  // CHECK: graph.add %[[S]], %[[G]] : tensor<2x4x8xf32>
  %2 = graph.add %1, %0 : tensor<2x4x8xf32>
  return %2 : tensor<2x4x8xf32>
}

// -----

// Tests moe with GELU experts and with SwiGLU experts (which need w_gate).
// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>,
               %wout: tensor<4x8x16xf32>) -> (tensor<2x4x8xf32>, tensor<f32>) {
  // CHECK: graph.moe %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} experts = 4 top_k = 2 capacity = 1.250000e+00 aux_coef = 1.000000e-02 z_coef = 0.000000e+00 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  // CHECK: graph.moe %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} gate %{{.*}} : tensor<4x16x8xf32> experts = 4 top_k = 1 {{.*}} act = swiglu
  %y2, %aux2 = graph.moe %x, %r, %win, %wout gate %win : tensor<4x16x8xf32> experts = 4 top_k = 1 capacity = 2.0 aux_coef = 0.01 z_coef = 0.001 act = swiglu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y, %aux : tensor<2x4x8xf32>, tensor<f32>
}

// -----

// Tests moe without capacity (dropless) and the steps heiretsu-moe-dispatch
// lowers it into: route, dispatch (C = 3 slots per sequence of T = 4, B = 2),
// grouped experts (2 of the 4, as on one of two ep ranks), combine.
// CHECK-LABEL: func.func @moe_steps
func.func @moe_steps(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>,
                     %wout: tensor<4x8x16xf32>, %half: tensor<2x12x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x12x8xf32>, tensor<f32>) {
  // CHECK: graph.moe %{{.*}} experts = 4 top_k = 2 aux_coef
  %y0, %aux0 = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  // CHECK: graph.moe_route %{{.*}}, %{{.*}} experts = 4 top_k = 2 capacity = 3 aux_coef = 1.000000e-02 z_coef = 0.000000e+00 : tensor<2x4x8xf32>, tensor<4x8xf32> -> tensor<2x4x2xi32>, tensor<2x4x2xi32>, tensor<2x4x2xf32>
  %c, %p, %w, %aux = graph.moe_route %x, %r experts = 4 top_k = 2 capacity = 3 aux_coef = 0.01 z_coef = 0.0 : tensor<2x4x8xf32>, tensor<4x8xf32> -> tensor<2x4x2xi32>, tensor<2x4x2xi32>, tensor<2x4x2xf32>
  // CHECK: graph.moe_dispatch {{.*}} -> tensor<4x6x8xf32>
  %buf = graph.moe_dispatch %x, %c, %p : tensor<2x4x8xf32>, tensor<2x4x2xi32>, tensor<2x4x2xi32> -> tensor<4x6x8xf32>
  // CHECK: graph.moe_experts {{.*}} act = gelu : tensor<2x12x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  %out = graph.moe_experts %half, %win, %wout act = gelu : tensor<2x12x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  // CHECK: graph.moe_combine {{.*}} -> tensor<2x4x8xf32>
  %y = graph.moe_combine %buf, %c, %p, %w : tensor<4x6x8xf32>, tensor<2x4x2xi32>, tensor<2x4x2xi32>, tensor<2x4x2xf32> -> tensor<2x4x8xf32>
  return %y, %out, %aux : tensor<2x4x8xf32>, tensor<2x12x8xf32>, tensor<f32>
}

// -----

// Tests cross-entropy and the graph.model module attribute.
// CHECK: module attributes {graph.model = {name = "t"}}
// CHECK-LABEL: func.func @loss
module attributes {graph.model = {name = "t"}} {
  func.func @loss(%logits: tensor<2x4x16xf32>, %t: tensor<2x4xi32>) -> tensor<f32> {
    // CHECK: graph.cross_entropy %{{.*}}, %{{.*}} : tensor<2x4x16xf32>, tensor<2x4xi32>
    %0 = graph.cross_entropy %logits, %t : tensor<2x4x16xf32>, tensor<2x4xi32>
    return %0 : tensor<f32>
  }
}
