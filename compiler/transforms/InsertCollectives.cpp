//===- InsertCollectives.cpp - all_reduce and copy from tp shardings ------===//
//
// See Passes.td. Partial sums are reduced once, right after their producer; a
// whole value read by column-parallel linears is read through one dist.copy.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_INSERTCOLLECTIVESPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

dist::ShardingAttr shardingOf(Operation *op) {
  return op->getAttrOfType<dist::ShardingAttr>(dist::kShardingAttrName);
}

bool isPartial(dist::ShardingAttr s) { return s && !s.getPartial().empty(); }

/// A column-parallel linear: its weight is split along its output dimension.
bool isColumnParallel(Operation *op) {
  auto l = dyn_cast<graph::LinearOp>(op);
  if (!l)
    return false;
  auto w = l.getWeight().getDefiningOp();
  dist::ShardingAttr s = w ? shardingOf(w) : nullptr;
  return s && !s.getDims().empty() && s.getDims()[0] >= 0;
}

struct InsertCollectivesPass : impl::InsertCollectivesPassBase<InsertCollectivesPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    auto mesh = module.lookupSymbol<dist::MeshOp>("world");
    if (!forward || !mesh) {
      module.emitError("expected func.func @forward and dist.mesh @world "
                       "(run heiretsu-shard-propagation first)");
      return signalPassFailure();
    }
    MLIRContext *ctx = module.getContext();
    auto meshRef = FlatSymbolRefAttr::get(ctx, "world");
    auto whole = [&](Value v) {
      SmallVector<int32_t> dims(cast<RankedTensorType>(v.getType()).getRank(), -1);
      return dist::ShardingAttr::get(ctx, dims, {});
    };
    SmallVector<Operation *> ops;
    for (Operation &op : forward.getBody().front())
      ops.push_back(&op);
    for (Operation *op : ops) {
      if (isa<func::ReturnOp>(op))
        continue;
      dist::ShardingAttr s = shardingOf(op);
      if (!s) {
        op->emitError("no dist.sharding (run heiretsu-shard-propagation first)");
        return signalPassFailure();
      }
      Value v = op->getResult(0);
      OpBuilder b(ctx);
      b.setInsertionPointAfter(op);
      if (isPartial(s)) {
        auto reduce = dist::AllReduceOp::create(
            b, op->getLoc(), v.getType(), v, meshRef, dist::AxisAttr::get(ctx, dist::Axis::tp),
            dist::ReduceKindAttr::get(ctx, dist::ReduceKind::sum));
        reduce->setAttr(dist::kShardingAttrName, whole(v));
        v.replaceAllUsesExcept(reduce.getResult(), reduce);
        v = reduce.getResult();
        b.setInsertionPointAfter(reduce);
      }
      if (isa<graph::ParamOp>(op) || !llvm::any_of(v.getUsers(), isColumnParallel))
        continue;
      auto copy = dist::CopyOp::create(b, op->getLoc(), v.getType(), v, meshRef,
                                       dist::AxisAttr::get(ctx, dist::Axis::tp));
      copy->setAttr(dist::kShardingAttrName, whole(v));
      v.replaceUsesWithIf(copy.getResult(), [&](OpOperand &use) {
        return use.getOwner() != copy && isColumnParallel(use.getOwner()) &&
               use.getOperandNumber() == 0;
      });
    }
  }
};

} // namespace
} // namespace heiretsu
