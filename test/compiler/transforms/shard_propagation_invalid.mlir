// RUN: heiretsu-opt %s --heiretsu-shard-propagation --split-input-file --verify-diagnostics

// Tests that heads must divide by tp (and so must the q projection's rows).
module attributes {graph.model = {name = "h", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x6xf32>
    %x = graph.embedding %e[%ids] : tensor<16x6xf32>, tensor<1x4xi32> -> tensor<1x4x6xf32>
    %wq = graph.param "wq" normal std = 2.000000e-02 : tensor<6x6xf32>
    %q = graph.linear %x, %wq : tensor<1x4x6xf32>, tensor<6x6xf32> -> tensor<1x4x6xf32>
    // expected-error @+1 {{heads = 3 is not divisible by tp = 2}}
    %a = graph.attention %q, %q, %q heads = 3 kv_heads = 3 : tensor<1x4x6xf32>, tensor<1x4x6xf32>
    %l = graph.cross_entropy %a, %tgt : tensor<1x4x6xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that kv_heads must divide by tp.
module attributes {graph.model = {name = "kv", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %wq = graph.param "wq" normal std = 2.000000e-02 : tensor<8x8xf32>
    %q = graph.linear %x, %wq : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %wk = graph.param "wk" normal std = 2.000000e-02 : tensor<2x8xf32>
    %k = graph.linear %x, %wk : tensor<1x4x8xf32>, tensor<2x8xf32> -> tensor<1x4x2xf32>
    // expected-error @+1 {{kv_heads = 1 is not divisible by tp = 2}}
    %a = graph.attention %q, %k, %k heads = 4 kv_heads = 1 : tensor<1x4x8xf32>, tensor<1x4x2xf32>
    %l = graph.cross_entropy %a, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that the vocabulary (the embedding table's rows) must divide by tp.
module attributes {graph.model = {name = "v", vocab = 15 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<15x8xf32>
    // expected-error @+1 {{the vocabulary (15 rows of the token table) is not divisible by tp = 2; pad it in the spec with padded_vocab = 256}}
    %x = graph.embedding %e[%ids] : tensor<15x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that a value split over tp cannot reach an op that needs it whole.
module attributes {graph.model = {name = "n", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w = graph.param "w" normal std = 2.000000e-02 : tensor<8x8xf32>
    %y = graph.linear %x, %w : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %nw = graph.param "nw" ones : tensor<8xf32>
    // expected-error @+1 {{the norm's input is split over tp here but 'graph.rmsnorm' needs it whole}}
    %n = graph.rmsnorm %y, %nw eps = 1.000000e-05 : tensor<1x4x8xf32>, tensor<8xf32>
    %l = graph.cross_entropy %n, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that one parameter cannot be split two ways: as a column-parallel weight
// ([tp, _]) and then as a row-parallel one ([_, tp]).
module attributes {graph.model = {name = "p", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %w = graph.param "w" normal std = 2.000000e-02 : tensor<8x8xf32>
    %y = graph.linear %x, %w : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    // expected-error @+1 {{parameter 'w' is asked to be split along dimension 1 here but along 0 by an earlier use}}
    %z = graph.linear %y, %w : tensor<1x4x8xf32>, tensor<8x8xf32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %z, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that the experts' hidden size must divide over tp (expert tensor
// parallelism splits it).
module attributes {graph.model = {name = "m", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %r = graph.param "r" normal std = 2.000000e-02 : tensor<2x8xf32>
    %wi = graph.param "wi" normal std = 2.000000e-02 : tensor<2x15x8xf32>
    %wo = graph.param "wo" normal std = 2.000000e-02 : tensor<2x8x15xf32>
    // expected-error @+1 {{the expert weight w_in 'wi' has 15 rows along its split dimension 1, not divisible by tp = 2}}
    %y, %aux = graph.moe %x, %r, %wi, %wo experts = 2 top_k = 1 capacity = 1.0 aux_coef = 0.01 z_coef = 0.001 act = gelu : tensor<1x4x8xf32>, tensor<2x8xf32>, tensor<2x15x8xf32>, tensor<2x8x15xf32>
    %l = graph.cross_entropy %y, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that shardings are propagated once.
module attributes {graph.model = {name = "twice", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    // expected-error @+1 {{already has a dist.sharding: shardings were already propagated}}
    %e = graph.param "e" normal std = 2.000000e-02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}

// -----

// Tests that the pass reads tp from the module's mesh, and refuses a module
// without one.
// expected-error @+1 {{heiretsu-shard-propagation reads the mesh from the module's dist.mesh @world, and there is none}}
module attributes {graph.model = {name = "nomesh", vocab = 16 : i64}} {
  func.func @forward(%ids: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %e = graph.param "e" normal std = 2.000000e-02 : tensor<16x8xf32>
    %x = graph.embedding %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %l = graph.cross_entropy %x, %tgt : tensor<1x4x8xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}
