// RUN: heiretsu-opt %s --split-input-file | heiretsu-opt --split-input-file | FileCheck %s

// Tests the mesh and every collective over it.
// CHECK: dist.mesh @world dp = 2 pp = 2 tp = 4 ep = 2
dist.mesh @world dp = 2 pp = 2 tp = 4 ep = 2

// CHECK-LABEL: func.func @collectives
func.func @collectives(%x: tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<32x16xf32>,
    tensor<4x16xf32>, tensor<4x32xf32>, tensor<8x16xf32>) {
  // CHECK: dist.all_reduce %{{.*}} on @world over tp reduce sum : tensor<8x16xf32>
  %0 = dist.all_reduce %x on @world over tp reduce sum : tensor<8x16xf32>
  // CHECK: dist.all_gather %{{.*}} on @world over tp dim 0 : tensor<8x16xf32> -> tensor<32x16xf32>
  %1 = dist.all_gather %x on @world over tp dim 0 : tensor<8x16xf32> -> tensor<32x16xf32>
  // CHECK: dist.reduce_scatter %{{.*}} on @world over dp dim 0 reduce avg : tensor<8x16xf32> -> tensor<4x16xf32>
  %2 = dist.reduce_scatter %x on @world over dp dim 0 reduce avg : tensor<8x16xf32> -> tensor<4x16xf32>
  // CHECK: dist.all_to_all %{{.*}} on @world over ep split 0 concat 1 : tensor<8x16xf32> -> tensor<4x32xf32>
  %3 = dist.all_to_all %x on @world over ep split 0 concat 1 : tensor<8x16xf32> -> tensor<4x32xf32>
  // CHECK: dist.all_to_all %{{.*}} on @world over ep split 0 concat 0 : tensor<8x16xf32> -> tensor<8x16xf32>
  %4 = dist.all_to_all %x on @world over ep split 0 concat 0 : tensor<8x16xf32> -> tensor<8x16xf32>
  return %0, %1, %2, %3, %4 : tensor<8x16xf32>, tensor<32x16xf32>, tensor<4x16xf32>, tensor<4x32xf32>, tensor<8x16xf32>
}

// CHECK-LABEL: func.func @point_to_point
func.func @point_to_point(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  // CHECK: dist.send %{{.*}} on @world over pp offset 1 : tensor<2x4x8xf32>
  dist.send %x on @world over pp offset 1 : tensor<2x4x8xf32>
  // CHECK: dist.recv on @world over pp offset -1 : tensor<2x4x8xf32>
  %0 = dist.recv on @world over pp offset -1 : tensor<2x4x8xf32>
  return %0 : tensor<2x4x8xf32>
}

// -----

// Tests the sharding attribute on ops: split dims, replicated dims, partial sums.
dist.mesh @m dp = 2 pp = 1 tp = 2 ep = 1
// CHECK-LABEL: func.func @sharding
func.func @sharding(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4x16xf32> {
  // CHECK: graph.param "w" zeros {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
  %0 = graph.param "w" zeros {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
  // CHECK: graph.linear {{.*}} {dist.sharding = #dist.sharding<[dp, _], partial = [tp]>}
  %1 = graph.linear %x, %w {dist.sharding = #dist.sharding<[dp, _], partial = [tp]>} : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  return %1 : tensor<4x16xf32>
}

// -----

// Tests dist.copy, the identity whose gradient is all-reduced (Megatron's f).
dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
// CHECK-LABEL: func.func @copy
func.func @copy(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
  // CHECK: dist.copy %{{.*}} on @world over tp : tensor<8x16xf32>
  %0 = dist.copy %x on @world over tp : tensor<8x16xf32>
  return %0 : tensor<8x16xf32>
}
