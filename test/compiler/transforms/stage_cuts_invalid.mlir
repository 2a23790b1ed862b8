// RUN: heiretsu-opt %s --split-input-file --heiretsu-stage-cuts --verify-diagnostics
// RUN: not heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='stage-layers=1,0' 2>&1 | FileCheck %s --check-prefix=ZERO
// RUN: not heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='stage-layers=1,2' 2>&1 | FileCheck %s --check-prefix=SUM
// RUN: not heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='stage-layers=2' 2>&1 | FileCheck %s --check-prefix=COUNT
// RUN: not heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='virtual-stages=2' 2>&1 | FileCheck %s --check-prefix=VIRTUAL
// RUN: not heiretsu-opt %s --split-input-file --heiretsu-stage-cuts='virtual-stages=0' 2>&1 | FileCheck %s --check-prefix=VZERO

// stage-layers with a zero, a sum other than the layers, a count other than pp;
// more model chunks (pp x virtual-stages) than layers; virtual-stages 0:
// ZERO: error: stage-layers '1,0': '0' is not a layer count >= 1
// SUM: error: stage-layers '1,2' gives 2 stages of 3 layers; the mesh has pp = 2 and the model 2 layers
// COUNT: error: stage-layers '2' gives 1 stages of 2 layers; the mesh has pp = 2 and the model 2 layers
// VIRTUAL: error: pp x virtual-stages = 4 is more pipeline stages than the model's 2 layers
// VZERO: error: virtual-stages 0 needs pp > 1 and is >= 1 (the model chunks of each stage)

// Tests that a valid cut passes (the options above fail on it).
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 2 : i64}} {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w0 = graph.param "layers.0.w" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    %y0 = graph.linear %x, %w0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w1 = graph.param "layers.1.w" normal std = 0.02 {graph.layer = 1 : i64} : tensor<8x8xf32>
    %y1 = graph.linear %y0, %w1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %logits = graph.linear %y1, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %ce : tensor<f32>
  }
}

// -----

// Tests that pp may not exceed the layers.
// expected-error @+1 {{pp = 3 is more pipeline stages than the model's 2 layers}}
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 2 : i64}} {
  dist.mesh @world dp = 1 pp = 3 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w0 = graph.param "layers.0.w" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    %y0 = graph.linear %x, %w0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w1 = graph.param "layers.1.w" normal std = 0.02 {graph.layer = 1 : i64} : tensor<8x8xf32>
    %y1 = graph.linear %y0, %w1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %logits = graph.linear %y1, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %ce : tensor<f32>
  }
}

// -----

// Tests that a value may only flow to later stages: layer 0 (stage 0) reading
// layer 1's (stage 1) value is refused at the reader.
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 2 : i64}} {
  dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w0 = graph.param "layers.0.w" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    %y0 = graph.linear %x, %w0 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w1 = graph.param "layers.1.w" normal std = 0.02 {graph.layer = 1 : i64} : tensor<8x8xf32>
    %y1 = graph.linear %y0, %w1 {graph.layer = 1 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %w2 = graph.param "layers.0.w2" normal std = 0.02 {graph.layer = 0 : i64} : tensor<8x8xf32>
    // expected-error @+1 {{stage cut: this op of stage 0 reads a value of the later stage 1 (a value may only flow to later stages)}}
    %z = graph.linear %y1, %w2 {graph.layer = 0 : i64} : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %logits = graph.linear %y1, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %ce : tensor<f32>
  }
}

// -----

// Tests that the pass reads pp from the mesh, and refuses a module without one.
// expected-error @+1 {{heiretsu-stage-cuts reads the mesh from the module's dist.mesh @world, and there is none}}
module attributes {graph.model = {name = "m", vocab = 16 : i64, layers = 1 : i64}} {
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %logits = graph.linear %x, %wte : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %ce = graph.cross_entropy %logits, %tgt : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %ce : tensor<f32>
  }
}
