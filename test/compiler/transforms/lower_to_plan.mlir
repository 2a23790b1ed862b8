// RUN: heiretsu-opt %s --split-input-file --heiretsu-lower-to-plan | FileCheck %s

// Tests lowering a tied-embedding bigram model: parameters become plan.param (with
// weight decay on the matrix only), tensors become buffers, each graph op one
// forward kernel with its sizes in the unit "forward", followed by the empty
// units "backward" and "update" and no schedule; the program is stage 0; the
// tokens, targets and loss buffers are marked.
// CHECK-LABEL: plan.program "bigram"
// CHECK-SAME: microbatches = 1 : i64, seq = 4 : i64, stage = 0 : i64, vocab = 16 : i64
// CHECK-DAG: %[[TOK:.*]] = plan.buffer "tokens" {io = "tokens"} : memref<2x4xi32>
// CHECK-DAG: %[[TGT:.*]] = plan.buffer "targets" {io = "targets"} : memref<2x4xi32>
// CHECK-DAG: %[[WTE:.*]], %{{.*}}, %{{.*}}, %{{.*}} = plan.param "wte" normal std = 2.000000e-02 decay : memref<16x8xf32>
// CHECK-DAG: %[[G:.*]], %{{.*}}, %{{.*}}, %{{.*}} = plan.param "ln.weight" ones : memref<8xf32>
// CHECK-DAG: %[[X:.*]] = plan.buffer "embed.0" : memref<2x4x8xf32>
// CHECK-DAG: %[[LOSS:.*]] = plan.buffer "cross_entropy.loss.{{[0-9]+}}" {io = "loss"} : memref<f32>
// CHECK: plan.unit "forward" forward {
// CHECK-NEXT: plan.kernel "embedding"(%[[TOK]], %[[WTE]], %[[X]]) ints = [8, 4, 16, 8, 4, 0] floats = [] absent = [2, 4]
// CHECK-NEXT: plan.kernel "rmsnorm"(%[[X]], %[[G]], %[[H:.*]], %{{.*}}) ints = [8, 8] floats = [1.000000e-05] absent = []
// CHECK-NEXT: plan.kernel "linear"(%[[H]], %[[WTE]], %[[LOGITS:.*]]) ints = [8, 8, 16, 0] floats = [] absent = [2]
// CHECK-NEXT: plan.kernel "cross_entropy"(%[[LOGITS]], %[[TGT]], %[[LOSS]], %{{.*}}) ints = [8, 16, 16]
// CHECK-NEXT: }
// CHECK-NEXT: plan.unit "backward" backward {
// CHECK-NEXT: }
// CHECK-NEXT: plan.unit "update" update {
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NOT: func.func
module attributes {graph.model = {name = "bigram", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%tok: tensor<2x4xi32>, %tgt: tensor<2x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %g = graph.param "ln.weight" ones : tensor<8xf32>
    %h = graph.rmsnorm %x, %g eps = 1.0e-5 : tensor<2x4x8xf32>, tensor<8xf32>
    %logits = graph.linear %h, %wte : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %loss = graph.cross_entropy %logits, %tgt : tensor<2x4x16xf32>, tensor<2x4xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that attention with RoPE becomes two rope kernels (queries over 4 heads,
// keys over 2 KV heads) feeding the attention kernel, which saves its lse.
// CHECK-LABEL: plan.program "rope"
// CHECK: plan.kernel "rope"(%[[Q:.*]], %[[QR:.*]]) ints = [1, 4, 4, 2] floats = [1.000000e+04] absent = [2]
// CHECK-NEXT: plan.kernel "rope"(%[[K:.*]], %[[KR:.*]]) ints = [1, 4, 2, 2] floats = [1.000000e+04] absent = [2]
// CHECK-NEXT: plan.kernel "attention"(%[[QR]], %[[KR]], %{{.*}}, %{{.*}}, %{{.*}}) ints = [1, 4, 4, 2, 2]
module attributes {graph.model = {name = "rope", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %wk = graph.param "wk" normal std = 0.02 : tensor<4x8xf32>
    %k = graph.linear %x, %wk : tensor<1x4x8xf32>, tensor<4x8xf32> -> tensor<1x4x4xf32>
    %o = graph.attention %x, %k, %k heads = 4 kv_heads = 2 rope = 10000.0 : tensor<1x4x8xf32>, tensor<1x4x4xf32>
    %logits = graph.linear %o, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %loss = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests MoE lowering, after heiretsu-moe-dispatch: moe_route with its saved state
// (probabilities, log-sum-exp, the load for the metrics) and its i32 choices,
// places and per-expert counts, capacity 3 slots per sequence (ceil(1.5 * T 4 * k 2 / E 4)); moe_dispatch
// into [E, B x 3, d]; the grouped SwiGLU experts over the counted rows (one count
// per expert: no exchange) with their pre-activations; the
// combine; and the returned sum of the cross-entropy and the aux loss marked as the
// program's loss.
// CHECK-LABEL: plan.program "moe"
// CHECK: %[[CHOICE:.*]] = plan.buffer "moe.choice.{{[0-9]+}}" : memref<1x4x2xi32>
// CHECK: %[[POS:.*]] = plan.buffer "moe.pos.{{[0-9]+}}" : memref<1x4x2xi32>
// CHECK: %[[COUNTS:.*]] = plan.buffer "moe.counts.{{[0-9]+}}" : memref<4xi32>
// CHECK: %[[LOAD:.*]] = plan.buffer "moe.load.{{[0-9]+}}" : memref<2x4xf32>
// CHECK: %[[BUF:.*]] = plan.buffer "moe.dispatch.{{[0-9]+}}" : memref<4x3x8xf32>
// CHECK: %[[TOTAL:.*]] = plan.buffer "add.{{[0-9]+}}" {io = "loss"} : memref<f32>
// CHECK: plan.kernel "moe_route"(%{{.*}}, %[[CHOICE]], %[[POS]], %{{.*}}, %[[COUNTS]], %{{.*}}, %[[LOAD]]) ints = [4, 8, 4, 2, 4, 3, 1] floats = [1.000000e-02, 1.000000e-03] absent = []
// CHECK: plan.kernel "moe_dispatch"(%{{.*}}, %[[CHOICE]], %[[POS]], %[[BUF]]) ints = [4, 8, 4, 2, 3]
// CHECK: plan.kernel "moe_experts"(%[[COUNTS]], %[[BUF]], {{.*}}) ints = [4, 3, 8, 6, 1, 1] floats = [] absent = []
// CHECK: plan.kernel "moe_combine"({{.*}}) ints = [4, 8, 4, 2, 3]
// CHECK: plan.kernel "add"(%{{.*}}, %{{.*}}, %[[TOTAL]]) ints = [1]
module attributes {graph.model = {name = "moe", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%arg0: tensor<1x4xi32>, %arg1: tensor<1x4xi32>) -> tensor<f32> {
    %0 = graph.param "wte" normal std = 2.000000e-02 : tensor<16x8xf32>
    %1 = graph.embedding %0[%arg0] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %2 = graph.param "r" normal std = 2.000000e-02 : tensor<4x8xf32>
    %3 = graph.param "w1" normal std = 2.000000e-02 : tensor<4x6x8xf32>
    %4 = graph.param "w2" normal std = 2.000000e-02 : tensor<4x8x6xf32>
    %5 = graph.param "w3" normal std = 2.000000e-02 : tensor<4x6x8xf32>
    %choice, %pos, %weight, %aux_loss = graph.moe_route %1, %2 experts = 4 top_k = 2 capacity = 3 aux_coef = 1.000000e-02 z_coef = 1.000000e-03 : tensor<1x4x8xf32>, tensor<4x8xf32> -> tensor<1x4x2xi32>, tensor<1x4x2xi32>, tensor<1x4x2xf32>
    %6 = graph.moe_dispatch %1, %choice, %pos : tensor<1x4x8xf32>, tensor<1x4x2xi32>, tensor<1x4x2xi32> -> tensor<4x3x8xf32>
    %7 = graph.moe_experts %6, %3, %4 gate %5 : tensor<4x6x8xf32> act = swiglu : tensor<4x3x8xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>
    %8 = graph.moe_combine %7, %choice, %pos, %weight : tensor<4x3x8xf32>, tensor<1x4x2xi32>, tensor<1x4x2xi32>, tensor<1x4x2xf32> -> tensor<1x4x8xf32>
    %9 = graph.linear %8, %0 : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %10 = graph.cross_entropy %9, %arg1 : tensor<1x4x16xf32>, tensor<1x4xi32>
    %11 = graph.add %10, %aux_loss : tensor<f32>
    return %11 : tensor<f32>
  }
}

// -----

// Tests a decode program (@forward(tokens, position) returning logits): the
// embedding reads its learned positions from `position` on, RoPE rotates by it,
// attention with a cache becomes cached_attention over two cache buffers of the
// context's 8 positions (io "cache": live over the whole program), and the
// position and logits buffers are the program's io.
// CHECK-LABEL: plan.program "decode"
// CHECK-DAG: %[[TOK:.*]] = plan.buffer "tokens" {io = "tokens"} : memref<1x1xi32>
// CHECK-DAG: %[[POS:.*]] = plan.buffer "position" {io = "position"} : memref<1xi32>
// CHECK-DAG: %[[KC:.*]] = plan.buffer "kv_cache.k.{{[0-9]+}}" {io = "cache"} : memref<1x8x2x2xf32>
// CHECK-DAG: %[[VC:.*]] = plan.buffer "kv_cache.v.{{[0-9]+}}" {io = "cache"} : memref<1x8x2x2xf32>
// CHECK-DAG: %[[WPE:.*]], %{{.*}}, %{{.*}}, %{{.*}} = plan.param "wpe"
// CHECK-DAG: %[[LOGITS:.*]] = plan.buffer "linear.{{[0-9]+}}" {io = "logits"} : memref<1x1x16xf32>
// CHECK: plan.kernel "embedding"(%[[TOK]], %{{.*}}, %[[WPE]], %[[X:.*]], %[[POS]]) ints = [1, 1, 16, 8, 8, 0] floats = [] absent = []
// CHECK: plan.kernel "rope"(%[[Q:.*]], %[[QR:.*]], %[[POS]]) ints = [1, 1, 4, 2] floats = [1.000000e+04] absent = []
// CHECK-NEXT: plan.kernel "rope"(%[[K:.*]], %[[KR:.*]], %[[POS]]) ints = [1, 1, 2, 2] floats = [1.000000e+04] absent = []
// CHECK-NEXT: plan.kernel "cached_attention"(%[[QR]], %[[KR]], %[[K]], %[[KC]], %[[VC]], %[[POS]], %{{.*}}) ints = [1, 1, 4, 2, 2, 8]
// CHECK-NOT: cross_entropy
module attributes {graph.model = {name = "decode", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x1xi32> {graph.input = "tokens"},
                     %pos: tensor<1xi32> {graph.input = "position"}) -> tensor<1x1x16xf32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %wpe = graph.param "wpe" normal std = 0.02 : tensor<8x8xf32>
    %x = graph.embedding %wte[%tok] positions %wpe offset %pos : tensor<16x8xf32>, tensor<1x1xi32>, tensor<8x8xf32> offset tensor<1xi32> -> tensor<1x1x8xf32>
    %wk = graph.param "wk" normal std = 0.02 : tensor<4x8xf32>
    %k = graph.linear %x, %wk : tensor<1x1x8xf32>, tensor<4x8xf32> -> tensor<1x1x4xf32>
    %o = graph.attention %x, %k, %k heads = 4 kv_heads = 2 rope = 10000.0 position %pos {cache = 8 : i64} : tensor<1x1x8xf32>, tensor<1x1x4xf32>, tensor<1xi32>
    %logits = graph.linear %o, %wte : tensor<1x1x8xf32>, tensor<16x8xf32> -> tensor<1x1x16xf32>
    return %logits : tensor<1x1x16xf32>
  }
}
