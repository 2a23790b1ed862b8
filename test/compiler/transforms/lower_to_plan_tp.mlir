// RUN: heiretsu-opt %s --heiretsu-lower-to-plan | FileCheck %s

// Tests the lowering of a graph sharded over tp = 2 (as heiretsu-shard-propagation
// and heiretsu-insert-collectives leave it): buffers and parameters take this
// rank's shapes, split parameters record split_axes (tp = 2 on the split
// dimension, -1 elsewhere) and their global shape; the
// vocabulary-parallel embedding and the row-parallel linear set their flags;
// dist.all_reduce becomes an in-place all_reduce kernel (axis tp = 2, sum = 0);
// dist.copy marks its value's buffer grad_reduce = "tp"; the cross-entropy of
// split logits becomes vocab_max, all_reduce(max = 1), vocab_sum_exp,
// all_reduce(sum) of the sums and target logits, and vocab_loss.
// CHECK: %[[WTE:.*]], %{{.*}}, %{{.*}}, %{{.*}} = plan.param "wte" normal std = 2.000000e-02 decay {global_shape = array<i64: 16, 8>, split_axes = array<i64: 2, -1>} : memref<8x8xf32>
// CHECK: %[[X:.*]] = plan.buffer "embed.0" {grad_reduce = "tp"} : memref<1x4x8xf32>
// CHECK: plan.param "up" {{.*}}{global_shape = array<i64: 12, 8>, split_axes = array<i64: 2, -1>} : memref<6x8xf32>
// CHECK: plan.param "down" {{.*}}{global_shape = array<i64: 8, 12>, split_axes = array<i64: -1, 2>} : memref<8x6xf32>
// CHECK: plan.param "down.bias" zeros : memref<8xf32>
// CHECK: plan.unit "forward" forward {
// CHECK-NEXT: plan.kernel "embedding"(%{{.*}}, %[[WTE]], %[[X]]) ints = [4, 4, 8, 8, 4, 1]
// CHECK-NEXT: plan.kernel "all_reduce"(%[[X]]) ints = [2, 0]
// CHECK-NEXT: plan.kernel "linear"(%[[X]], %{{.*}}, %[[U:.*]]) ints = [4, 8, 6, 0] {{.*}} : memref<1x4x8xf32>, memref<6x8xf32>, memref<1x4x6xf32>
// CHECK-NEXT: plan.kernel "linear"(%[[U]], %{{.*}}, %{{.*}}, %[[D:.*]]) ints = [4, 6, 8, 1]
// CHECK-NEXT: plan.kernel "all_reduce"(%[[D]]) ints = [2, 0]
// CHECK-NEXT: plan.kernel "linear"(%[[D]], %[[WTE]], %[[L:.*]]) ints = [4, 8, 8, 0] {{.*}} memref<1x4x8xf32>
// CHECK-NEXT: plan.kernel "vocab_max"(%[[L]], %[[MAX:.*]]) ints = [4, 8, 16]
// CHECK-NEXT: plan.kernel "all_reduce"(%[[MAX]]) ints = [2, 1]
// CHECK-NEXT: plan.kernel "vocab_sum_exp"(%[[L]], %{{.*}}, %[[MAX]], %[[SUM:.*]], %[[T:.*]]) ints = [4, 8, 16]
// CHECK-NEXT: plan.kernel "all_reduce"(%[[SUM]], %[[T]]) ints = [2, 0]
// CHECK-NEXT: plan.kernel "vocab_loss"(%[[MAX]], %[[SUM]], %[[T]], %{{.*}}, %{{.*}}) ints = [4]
// CHECK-NEXT: }

module attributes {graph.model = {name = "tp", vocab = 16 : i64}} {
  dist.mesh @world dp = 1 pp = 1 tp = 2 ep = 1
  func.func @forward(%tok: tensor<1x4xi32>, %tgt: tensor<1x4xi32>) -> tensor<f32> {
    %wte = graph.param "wte" normal std = 0.02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<16x8xf32>
    %x = graph.embedding %wte[%tok] {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>} : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    %xr = dist.all_reduce %x on @world over tp reduce sum {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %c = dist.copy %xr on @world over tp {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %wu = graph.param "up" normal std = 0.02 {dist.sharding = #dist.sharding<[tp, _]>} : tensor<12x8xf32>
    %u = graph.linear %c, %wu {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<12x8xf32> -> tensor<1x4x12xf32>
    %wd = graph.param "down" normal std = 0.02 {dist.sharding = #dist.sharding<[_, tp]>} : tensor<8x12xf32>
    %bd = graph.param "down.bias" zeros {dist.sharding = #dist.sharding<[_]>} : tensor<8xf32>
    %d = graph.linear %u, %wd bias %bd {dist.sharding = #dist.sharding<[_, _, _], partial = [tp]>} : tensor<1x4x12xf32>, tensor<8x12xf32>, tensor<8xf32> -> tensor<1x4x8xf32>
    %dr = dist.all_reduce %d on @world over tp reduce sum {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %c2 = dist.copy %dr on @world over tp {dist.sharding = #dist.sharding<[_, _, _]>} : tensor<1x4x8xf32>
    %logits = graph.linear %c2, %wte {dist.sharding = #dist.sharding<[_, _, tp]>} : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    %l = graph.cross_entropy %logits, %tgt {dist.sharding = #dist.sharding<[]>} : tensor<1x4x16xf32>, tensor<1x4xi32>
    return %l : tensor<f32>
  }
}
