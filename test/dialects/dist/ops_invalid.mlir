// RUN: heiretsu-opt %s --split-input-file --verify-diagnostics

// Tests mesh_c1: an axis of size zero.
// expected-error @+1 {{(C1) axis tp must have size >= 1, got 0}}
dist.mesh @world dp = 2 pp = 1 tp = 0 ep = 1

// -----

// Tests collective C1: the mesh symbol must resolve to a dist.mesh.
func.func @no_mesh(%x: tensor<8xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{(C1) 'nowhere' does not name a dist.mesh}}
  %0 = dist.all_reduce %x on @nowhere over tp reduce sum : tensor<8xf32>
  return %0 : tensor<8xf32>
}

// -----

// Tests all_gather_c2: the dim must exist.
dist.mesh @world dp = 1 pp = 1 tp = 4 ep = 1
func.func @all_gather_c2(%x: tensor<8xf32>) -> tensor<32xf32> {
  // expected-error @+1 {{(C2) dim 1 is out of range for rank 1}}
  %0 = dist.all_gather %x on @world over tp dim 1 : tensor<8xf32> -> tensor<32xf32>
  return %0 : tensor<32xf32>
}

// -----

// Tests all_gather_c3: the result must grow by the axis size.
dist.mesh @world dp = 1 pp = 1 tp = 4 ep = 1
func.func @all_gather_c3(%x: tensor<8x2xf32>) -> tensor<16x2xf32> {
  // expected-error @+1 {{(C3) result must be tensor<32x2xf32>, got tensor<16x2xf32>}}
  %0 = dist.all_gather %x on @world over tp dim 0 : tensor<8x2xf32> -> tensor<16x2xf32>
  return %0 : tensor<16x2xf32>
}

// -----

// Tests reduce_scatter_c3: the scattered dim must divide by the axis size.
dist.mesh @world dp = 4 pp = 1 tp = 1 ep = 1
func.func @reduce_scatter_c3(%x: tensor<6xf32>) -> tensor<1xf32> {
  // expected-error @+1 {{(C3) dimension 0 of tensor<6xf32> is not divisible by the axis size 4}}
  %0 = dist.reduce_scatter %x on @world over dp dim 0 reduce sum : tensor<6xf32> -> tensor<1xf32>
  return %0 : tensor<1xf32>
}

// -----

// Tests reduce_scatter_c3: the element type must not change.
dist.mesh @world dp = 2 pp = 1 tp = 1 ep = 1
func.func @reduce_scatter_c3_type(%x: tensor<8xf32>) -> tensor<4xf16> {
  // expected-error @+1 {{(C3) result must be tensor<4xf32>, got tensor<4xf16>}}
  %0 = dist.reduce_scatter %x on @world over dp dim 0 reduce sum : tensor<8xf32> -> tensor<4xf16>
  return %0 : tensor<4xf16>
}

// -----

// Tests all_to_all_c3: the split dim must divide by the axis size.
dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 4
func.func @all_to_all_c3(%x: tensor<6x4xf32>) -> tensor<6x4xf32> {
  // expected-error @+1 {{(C3) split dimension 0 of tensor<6x4xf32> is not divisible by the axis size 4}}
  %0 = dist.all_to_all %x on @world over ep split 0 concat 1 : tensor<6x4xf32> -> tensor<6x4xf32>
  return %0 : tensor<6x4xf32>
}

// -----

// Tests all_to_all_c3: the concat dim must grow by the axis size.
dist.mesh @world dp = 1 pp = 1 tp = 1 ep = 2
func.func @all_to_all_c3_shape(%x: tensor<8x4xf32>) -> tensor<4x4xf32> {
  // expected-error @+1 {{(C3) result must be tensor<4x8xf32>, got tensor<4x4xf32>}}
  %0 = dist.all_to_all %x on @world over ep split 0 concat 1 : tensor<8x4xf32> -> tensor<4x4xf32>
  return %0 : tensor<4x4xf32>
}

// -----

// Tests send_c2: the peer offset must stay inside the axis.
dist.mesh @world dp = 1 pp = 2 tp = 1 ep = 1
func.func @send_c2(%x: tensor<8xf32>) {
  // expected-error @+1 {{(C2) offset 2 must be non-zero with |offset| < size(pp) = 2}}
  dist.send %x on @world over pp offset 2 : tensor<8xf32>
  return
}

// -----

// Tests recv_c2: a zero offset names the rank itself.
dist.mesh @world dp = 1 pp = 4 tp = 1 ep = 1
func.func @recv_c2() -> tensor<8xf32> {
  // expected-error @+1 {{(C2) offset 0 must be non-zero with |offset| < size(pp) = 4}}
  %0 = dist.recv on @world over pp offset 0 : tensor<8xf32>
  return %0 : tensor<8xf32>
}

// -----

// Tests an unknown axis name.
dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
func.func @bad_axis(%x: tensor<8xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{expected string or keyword containing one of the following enum values for attribute 'axis' [dp, pp, tp, ep]}}
  %0 = dist.all_reduce %x on @world over xp reduce sum : tensor<8xf32>
  return %0 : tensor<8xf32>
}

// -----

// Tests sharding_c1: an axis used twice.
func.func @sharding_c1() -> tensor<4x4xf32> {
  // expected-error @+1 {{(C1) mesh axis 'tp' is used more than once}}
  %0 = graph.param "w" zeros {dist.sharding = #dist.sharding<[tp, tp]>} : tensor<4x4xf32>
  return %0 : tensor<4x4xf32>
}

// -----

// Tests that a sharding's rank must match the tensor's.
func.func @sharding_rank() -> tensor<4x4xf32> {
  // expected-error @+1 {{'dist.sharding' has 1 dims but the result type is 'tensor<4x4xf32>'}}
  %0 = graph.param "w" zeros {dist.sharding = #dist.sharding<[tp]>} : tensor<4x4xf32>
  return %0 : tensor<4x4xf32>
}

// -----

// Tests an unknown axis inside a sharding.
func.func @sharding_axis() -> tensor<4xf32> {
  // expected-error @+1 {{expected a mesh axis (dp, pp, tp, ep) or '_', got 'zz'}}
  %0 = graph.param "w" zeros {dist.sharding = #dist.sharding<[zz]>} : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests that all_reduce keeps its operand's type.
dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
func.func @all_reduce_type(%x: tensor<8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'dist.all_reduce' op failed to verify that all of {input, result} have same type}}
  %0 = "dist.all_reduce"(%x) {mesh = @world, axis = 2 : i32, reduce = 0 : i32} : (tensor<8xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// Tests that dist.copy names a mesh.
func.func @copy_no_mesh(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
  // expected-error @+1 {{'nowhere'}}
  %0 = dist.copy %x on @nowhere over tp : tensor<8x16xf32>
  return %0 : tensor<8x16xf32>
}
