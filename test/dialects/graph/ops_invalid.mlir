// RUN: heiretsu-opt %s --split-input-file --verify-diagnostics

// Tests param_c1: a name with characters outside [A-Za-z0-9_.].
func.func @param_c1() -> tensor<4xf32> {
  // expected-error @+1 {{(C1) name 'a b' may contain only letters, digits, '_' and '.'}}
  %0 = graph.param "a b" zeros : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests param_c1: an empty name.
func.func @param_c1_empty() -> tensor<4xf32> {
  // expected-error @+1 {{(C1) name must not be empty}}
  %0 = graph.param "" zeros : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests param_c2: a zero dimension.
func.func @param_c2() -> tensor<0x4xf32> {
  // expected-error @+1 {{(C2) every dimension must be positive, got [0, 4]}}
  %0 = graph.param "w" zeros : tensor<0x4xf32>
  return %0 : tensor<0x4xf32>
}

// -----

// Tests param_c3: normal init without std.
func.func @param_c3_missing() -> tensor<4xf32> {
  // expected-error @+1 {{(C3) 'std' is required for init 'normal' and only for it}}
  %0 = graph.param "w" normal : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests param_c3: a std on a constant init.
func.func @param_c3_extra() -> tensor<4xf32> {
  // expected-error @+1 {{(C3) 'std' is required for init 'normal' and only for it}}
  %0 = graph.param "w" ones std = 1.0 : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests param_c3: a negative std.
func.func @param_c3_negative() -> tensor<4xf32> {
  // expected-error @+1 {{(C3) std must be finite and > 0, got -1}}
  %0 = graph.param "w" normal std = -1.0 : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests that parameter names are unique in a graph.model module.
// expected-note @+3 {{first defined here}}
module attributes {graph.model = {name = "m"}} {
  func.func @dup() -> (tensor<4xf32>, tensor<4xf32>) {
    %0 = graph.param "w" zeros : tensor<4xf32>
    // expected-error @+1 {{duplicate parameter name 'w'}}
    %1 = graph.param "w" ones : tensor<4xf32>
    return %0, %1 : tensor<4xf32>, tensor<4xf32>
  }
}

// -----

// Tests that graph.model needs a name.
// expected-error @+1 {{'graph.model' must be a dictionary with a string 'name'}}
module attributes {graph.model = {vocab = 3}} {
}

// -----

// Tests embedding_c1: ids must be [B, T].
func.func @embedding_c1(%t: tensor<16x8xf32>, %ids: tensor<8xi32>) -> tensor<8x8xf32> {
  // expected-error @+1 {{(C1) expects table [V, D] and ids [B, T], got [16, 8] and [8]}}
  %0 = graph.embedding %t[%ids] : tensor<16x8xf32>, tensor<8xi32> -> tensor<8x8xf32>
  return %0 : tensor<8x8xf32>
}

// -----

// Tests embedding_c2: the result shape.
func.func @embedding_c2(%t: tensor<16x8xf32>, %ids: tensor<2x4xi32>) -> tensor<2x4x9xf32> {
  // expected-error @+1 {{(C2) result must be [2, 4, 8], got [2, 4, 9]}}
  %0 = graph.embedding %t[%ids] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x9xf32>
  return %0 : tensor<2x4x9xf32>
}

// -----

// Tests embedding_c3: fewer positions than the sequence.
func.func @embedding_c3(%t: tensor<16x8xf32>, %ids: tensor<2x4xi32>, %p: tensor<3x8xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C3) positions must be [C, 8] with C >= 4, got [3, 8]}}
  %0 = graph.embedding %t[%ids] positions %p : tensor<16x8xf32>, tensor<2x4xi32>, tensor<3x8xf32> -> tensor<2x4x8xf32>
  return %0 : tensor<2x4x8xf32>
}

// -----

// Tests that embedding ids must be i32.
func.func @embedding_ids_type(%t: tensor<16x8xf32>, %ids: tensor<2x4xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{operand #1 must be statically shaped tensor of 32-bit signless integer values}}
  %0 = graph.embedding %t[%ids] : tensor<16x8xf32>, tensor<2x4xf32> -> tensor<2x4x8xf32>
  return %0 : tensor<2x4x8xf32>
}

// -----

// Tests linear_c1: a rank-1 input.
func.func @linear_c1(%x: tensor<8xf32>, %w: tensor<4x8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{(C1) input must have rank >= 2, got [8]}}
  %0 = graph.linear %x, %w : tensor<8xf32>, tensor<4x8xf32> -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests linear_c2: the weight's inner dimension.
func.func @linear_c2(%x: tensor<2x8xf32>, %w: tensor<4x7xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{(C2) weight must be [N, 8], got [4, 7]}}
  %0 = graph.linear %x, %w : tensor<2x8xf32>, tensor<4x7xf32> -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

// Tests linear_c3: the bias length.
func.func @linear_c3(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %b: tensor<5xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{(C3) bias must be [4], got [5]}}
  %0 = graph.linear %x, %w bias %b : tensor<2x8xf32>, tensor<4x8xf32>, tensor<5xf32> -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

// Tests linear_c4: the result shape.
func.func @linear_c4(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>) -> tensor<2x5xf32> {
  // expected-error @+1 {{(C4) result must be [2, 4], got [2, 5]}}
  %0 = graph.linear %x, %w : tensor<2x8xf32>, tensor<4x8xf32> -> tensor<2x5xf32>
  return %0 : tensor<2x5xf32>
}

// -----

// Tests layernorm_c1: the weight length.
func.func @layernorm_c1(%x: tensor<2x8xf32>, %g: tensor<4xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{(C1) weight must be [8], got [4]}}
  %0 = graph.layernorm %x, %g, %g eps = 1.0e-5 : tensor<2x8xf32>, tensor<4xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// Tests layernorm_c2: eps must be positive.
func.func @layernorm_c2(%x: tensor<2x8xf32>, %g: tensor<8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{(C2) eps must be finite and > 0, got 0}}
  %0 = graph.layernorm %x, %g, %g eps = 0.0 : tensor<2x8xf32>, tensor<8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// Tests rmsnorm_c1: the weight length.
func.func @rmsnorm_c1(%x: tensor<2x8xf32>, %g: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{(C1) weight must be [8], got [2, 8]}}
  %0 = graph.rmsnorm %x, %g eps = 1.0e-5 : tensor<2x8xf32>, tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// Tests rmsnorm_c2: eps must be positive.
func.func @rmsnorm_c2(%x: tensor<2x8xf32>, %g: tensor<8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{(C2) eps must be finite and > 0, got -1}}
  %0 = graph.rmsnorm %x, %g eps = -1.0 : tensor<2x8xf32>, tensor<8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// Tests attention_c4: a cache needs a position.
func.func @attention_c4_cache(%q: tensor<1x1x32xf32>) -> tensor<1x1x32xf32> {
  // expected-error @+1 {{(C4) cache and position come together, got a cache without a position}}
  %0 = graph.attention %q, %q, %q heads = 4 kv_heads = 4 {cache = 8 : i64} : tensor<1x1x32xf32>, tensor<1x1x32xf32>
  return %0 : tensor<1x1x32xf32>
}

// -----

// Tests attention_c4: the cache must hold the tokens of one run.
func.func @attention_c4_small(%q: tensor<1x4x32xf32>, %pos: tensor<1xi32>) -> tensor<1x4x32xf32> {
  // expected-error @+1 {{(C4) cache (2 positions) must hold the 4 tokens of a run}}
  %0 = graph.attention %q, %q, %q heads = 4 kv_heads = 4 position %pos {cache = 2 : i64} : tensor<1x4x32xf32>, tensor<1x4x32xf32>, tensor<1xi32>
  return %0 : tensor<1x4x32xf32>
}

// -----

// Tests embedding_c4: an offset needs positions to offset.
func.func @embedding_c4(%t: tensor<16x8xf32>, %ids: tensor<1x1xi32>, %pos: tensor<1xi32>) -> tensor<1x1x8xf32> {
  // expected-error @+1 {{(C4) offset must be [1] and needs positions, got [1] without positions}}
  %0 = graph.embedding %t[%ids] offset %pos : tensor<16x8xf32>, tensor<1x1xi32> offset tensor<1xi32> -> tensor<1x1x8xf32>
  return %0 : tensor<1x1x8xf32>
}

// -----

// Tests attention_c1: the query width must split into heads.
func.func @attention_c1_heads(%q: tensor<2x4x30xf32>) -> tensor<2x4x30xf32> {
  // expected-error @+1 {{(C1) query width 30 is not divisible by heads (4)}}
  %0 = graph.attention %q, %q, %q heads = 4 kv_heads = 4 : tensor<2x4x30xf32>, tensor<2x4x30xf32>
  return %0 : tensor<2x4x30xf32>
}

// -----

// Tests attention_c1: the key width must be kv_heads * head_dim.
func.func @attention_c1_kv(%q: tensor<2x4x32xf32>, %k: tensor<2x4x16xf32>) -> tensor<2x4x32xf32> {
  // expected-error @+1 {{(C1) key width must be kv_heads * head_dim = 1 * 8 = 8, got 16}}
  %0 = graph.attention %q, %k, %k heads = 4 kv_heads = 1 : tensor<2x4x32xf32>, tensor<2x4x16xf32>
  return %0 : tensor<2x4x32xf32>
}

// -----

// Tests attention_c1: query and key disagree on the sequence length.
func.func @attention_c1_bt(%q: tensor<2x4x32xf32>, %k: tensor<2x5x32xf32>) -> tensor<2x4x32xf32> {
  // expected-error @+1 {{(C1) query and key must agree on [B, T], got [2, 4, 32] and [2, 5, 32]}}
  %0 = graph.attention %q, %k, %k heads = 4 kv_heads = 4 : tensor<2x4x32xf32>, tensor<2x5x32xf32>
  return %0 : tensor<2x4x32xf32>
}

// -----

// Tests attention_c2: kv_heads must divide heads.
func.func @attention_c2(%q: tensor<2x4x32xf32>) -> tensor<2x4x32xf32> {
  // expected-error @+1 {{(C2) kv_heads (3) must be >= 1 and divide heads (4)}}
  %0 = graph.attention %q, %q, %q heads = 4 kv_heads = 3 : tensor<2x4x32xf32>, tensor<2x4x32xf32>
  return %0 : tensor<2x4x32xf32>
}

// -----

// Tests attention_c3: RoPE needs an even head dimension.
func.func @attention_c3(%q: tensor<2x4x12xf32>) -> tensor<2x4x12xf32> {
  // expected-error @+1 {{(C3) rope needs an even head dimension, got 3}}
  %0 = graph.attention %q, %q, %q heads = 4 kv_heads = 4 rope = 10000.0 : tensor<2x4x12xf32>, tensor<2x4x12xf32>
  return %0 : tensor<2x4x12xf32>
}

// -----

// Tests that add's operands must have one type.
// expected-note @+1 {{prior use here}}
func.func @add_types(%a: tensor<2x4xf32>, %b: tensor<2x5xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{use of value '%b' expects different type than prior uses}}
  %0 = graph.add %a, %b : tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

// Tests moe_c1: the router shape.
func.func @moe_c1(%x: tensor<2x4x8xf32>, %r: tensor<3x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C1) router must be [experts, D] = [4, 8], got [3, 8]}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<3x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_c2: w_out must be [E, D, F].
func.func @moe_c2(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x16x8xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C2) w_out must be [4, 8, 16], got [4, 16, 8]}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_c3: swiglu experts without w_gate.
func.func @moe_c3(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C3) w_gate is required for act = swiglu and only for it}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = swiglu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_c4: top_k larger than the number of experts.
func.func @moe_c4(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C4) top_k must be in [1, 4], got 5}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 5 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_c5: a negative aux-loss coefficient.
func.func @moe_c5(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C5) aux_coef must be finite and >= 0, got -5.000000e-01}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = -0.5 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_c5: a zero capacity factor.
func.func @moe_c5_capacity(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C5) capacity must be finite and > 0, got 0}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 0.0 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<2x4x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests cross_entropy_c1: targets must match the logits without the vocabulary.
func.func @cross_entropy_c1(%l: tensor<2x4x16xf32>, %t: tensor<2x5xi32>) -> tensor<f32> {
  // expected-error @+1 {{(C1) targets must be [2, 4], got [2, 5]}}
  %0 = graph.cross_entropy %l, %t : tensor<2x4x16xf32>, tensor<2x5xi32>
  return %0 : tensor<f32>
}

// -----

// Tests that gelu keeps its operand's type.
func.func @gelu_type(%x: tensor<2x4xf32>) -> tensor<2x5xf32> {
  // expected-error @+1 {{'graph.gelu' op requires the same type for all operands and results}}
  %0 = "graph.gelu"(%x) : (tensor<2x4xf32>) -> tensor<2x5xf32>
  return %0 : tensor<2x5xf32>
}

// -----

// Tests that swiglu's gate and up have one type.
func.func @swiglu_type(%g: tensor<2x4xf32>, %u: tensor<2x8xf32>) -> tensor<2x4xf32> {
  // expected-error @+1 {{'graph.swiglu' op requires the same type for all operands and results}}
  %0 = "graph.swiglu"(%g, %u) : (tensor<2x4xf32>, tensor<2x8xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

// Tests moe_c1: the input must be [B, T, D] (the sequence decides capacity).
func.func @moe_c1_rank(%x: tensor<8x8xf32>, %r: tensor<4x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<8x8xf32> {
  // expected-error @+1 {{(C1) input must be [B, T, D], got [8, 8]}}
  %y, %aux = graph.moe %x, %r, %win, %wout experts = 4 top_k = 2 capacity = 1.25 aux_coef = 0.01 z_coef = 0.0 act = gelu : tensor<8x8xf32>, tensor<4x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<8x8xf32>
}

// -----

// Tests moe_route_c2: capacity is at most T slots per sequence.
func.func @moe_route_c2(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>) -> tensor<f32> {
  // expected-error @+1 {{(C2) capacity must be in [1, T = 4] slots per sequence, got 5}}
  %c, %p, %w, %aux = graph.moe_route %x, %r experts = 4 top_k = 2 capacity = 5 aux_coef = 0.01 z_coef = 0.0 : tensor<2x4x8xf32>, tensor<4x8xf32> -> tensor<2x4x2xi32>, tensor<2x4x2xi32>, tensor<2x4x2xf32>
  return %aux : tensor<f32>
}

// -----

// Tests moe_route_c3: the slots are [B, T, top_k].
func.func @moe_route_c3(%x: tensor<2x4x8xf32>, %r: tensor<4x8xf32>) -> tensor<f32> {
  // expected-error @+1 {{(C3) choice must be [2, 4, 2], got [2, 4, 1]}}
  %c, %p, %w, %aux = graph.moe_route %x, %r experts = 4 top_k = 2 capacity = 2 aux_coef = 0.01 z_coef = 0.0 : tensor<2x4x8xf32>, tensor<4x8xf32> -> tensor<2x4x1xi32>, tensor<2x4x2xi32>, tensor<2x4x2xf32>
  return %aux : tensor<f32>
}

// -----

// Tests moe_dispatch_c2: the expert-major buffer's rows are B x C.
func.func @moe_dispatch_c2(%x: tensor<2x4x8xf32>, %c: tensor<2x4x2xi32>, %p: tensor<2x4x2xi32>) -> tensor<4x5x8xf32> {
  // expected-error @+1 {{(C2) the expert-major buffer must be [E, B * C, D] with E >= 2, B = 2, C in [1, 4], D = 8; got [4, 5, 8]}}
  %buf = graph.moe_dispatch %x, %c, %p : tensor<2x4x8xf32>, tensor<2x4x2xi32>, tensor<2x4x2xi32> -> tensor<4x5x8xf32>
  return %buf : tensor<4x5x8xf32>
}

// -----

// Tests moe_combine_c1: the slot tensors match the tokens.
func.func @moe_combine_c1(%buf: tensor<4x6x8xf32>, %c: tensor<2x4x2xi32>, %p: tensor<2x4x2xi32>, %w: tensor<2x3x2xf32>) -> tensor<2x4x8xf32> {
  // expected-error @+1 {{(C1) the slot tensors must be [2, 4, 2], got [2, 3, 2]}}
  %y = graph.moe_combine %buf, %c, %p, %w : tensor<4x6x8xf32>, tensor<2x4x2xi32>, tensor<2x4x2xi32>, tensor<2x3x2xf32> -> tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// Tests moe_experts_c1: the weights' experts are a multiple of the input's.
func.func @moe_experts_c1(%x: tensor<3x12x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<3x12x8xf32> {
  // expected-error @+1 {{(C1) w_in must be [E, F, 8] with E a multiple of G = 3, got [4, 16, 8]}}
  %y = graph.moe_experts %x, %win, %wout act = gelu : tensor<3x12x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<3x12x8xf32>
}

// -----

// Tests moe_experts_c2: SwiGLU experts need w_gate.
func.func @moe_experts_c2(%x: tensor<2x12x8xf32>, %win: tensor<4x16x8xf32>, %wout: tensor<4x8x16xf32>) -> tensor<2x12x8xf32> {
  // expected-error @+1 {{(C2) w_gate is required for act = swiglu and only for it}}
  %y = graph.moe_experts %x, %win, %wout act = swiglu : tensor<2x12x8xf32>, tensor<4x16x8xf32>, tensor<4x8x16xf32>
  return %y : tensor<2x12x8xf32>
}
