// RUN: heiretsu-opt %s --split-input-file --heiretsu-stage-cuts | FileCheck %s
// RUN: heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='stage-layers=1,2' | FileCheck %s --check-prefix=GIVEN
// RUN: heiretsu-opt %s --split-input-file --heiretsu-stage-cuts --heiretsu-lower-to-plan | FileCheck %s --check-prefix=PLAN

// Tests cutting three layers and a tied embedding and head into pp = 2 stages.
// Balanced by the cost model (6 per GEMM weight element per token): each layer
// costs 6 * 64, the head 6 * 128 and the embedding 6 * 8, so the first stage takes
// two layers and the last one layer and the head. The residual stream is sent at
// the end of stage 0 and received at the start of stage 1; the tied table is in
// both; the loss's terms stay where they are computed (the MoE-like auxiliary
// scalar %aux of layer 0 on stage 0, the cross-entropy on stage 1): each stage
// returns the sum of its own. Only stage 0 takes the tokens, only stage 1 the
// targets.
// CHECK-NOT: func.func @forward
// CHECK-LABEL: func.func @stage_0(%{{.*}}: tensor<1x4xi32> {graph.input = "tokens"}) -> tensor<f32>
// CHECK: graph.param "wte"
// CHECK: graph.embedding
// CHECK: graph.param "layers.0.w"
// CHECK: graph.param "layers.1.w"
// CHECK: %[[X2:.*]] = graph.add {{.*}} {graph.layer = 1 : i64}
// CHECK-NOT: layers.2
// CHECK: dist.send %[[X2]] on @world over pp offset 1 : tensor<1x4x8xf32>
// CHECK-NEXT: return %{{.*}} : tensor<f32>
// CHECK-LABEL: func.func @stage_1(%{{.*}}: tensor<1x4xi32> {graph.input = "targets"}) -> tensor<f32>
// CHECK-NEXT: %[[R:.*]] = dist.recv on @world over pp offset -1 : tensor<1x4x8xf32>
// CHECK: graph.param "layers.2.w"
// CHECK: graph.linear %[[R]]
// CHECK: graph.param "wte"
// CHECK: %[[CE:.*]] = graph.cross_entropy
// CHECK-NEXT: return %[[CE]] : tensor<f32>

// With stage-layers the cut is where it says: one layer, then two.
// GIVEN-LABEL: func.func @stage_0
// GIVEN: graph.param "layers.0.w"
// GIVEN-NOT: graph.param "layers.1.w"
// GIVEN: dist.send
// GIVEN-LABEL: func.func @stage_1
// GIVEN: graph.param "layers.1.w"
// GIVEN: graph.param "layers.2.w"

// Lowered: one program per stage, the send and recv over pp (axis 1) to the
// other stage, the tied table marked on both, and the auxiliary term stage 0's loss.
// PLAN-LABEL: plan.program "cut"
// PLAN-SAME: stage = 0
// PLAN: plan.param "wte"{{.*}}tied_stage = 1
// PLAN: plan.buffer "cross_entropy.loss.{{[0-9]+}}" {io = "loss"}
// PLAN: plan.kernel "send"(%{{.*}}) ints = [1, 1]
// PLAN-LABEL: plan.program "cut"
// PLAN-SAME: stage = 1
// PLAN: plan.param "wte"{{.*}}tied_stage = 0
// PLAN: plan.kernel "recv"(%{{.*}}) ints = [1, 0]
module attributes {graph.model = {name = "cut", vocab = 16 : i64, layers = 3 : i64, batch = 1 : i64, seq = 4 : i64}} {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w0 = graph.param "layers.0.w" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    %y0 = graph.linear %x, %w0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %x1 = graph.add %x, %y0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>
    %aux = graph.cross_entropy %y0, %tok {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<1x4xi32>
    %w1 = graph.param "layers.1.w" normal std = 0.02 {graph.layer = 1 : i64} : tensor<8x8xf32>
    %y1 = graph.linear %x1, %w1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %x2 = graph.add %x1, %y1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>
    %w2 = graph.param "layers.2.w" normal std = 0.02 {graph.layer = 2 : i64} : tensor<8x8xf32>
    %y2 = graph.linear %x2, %w2 {graph.layer = 2 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %x3 = graph.add %x2, %y2 {graph.layer = 2 : i64} : tensor<1x4x8xf32>
    %logits = graph.linear %x3, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    %loss = graph.add %ce, %aux : tensor<f32>
    return %loss : tensor<f32>
  }
}

