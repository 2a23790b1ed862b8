//===- InsertCollectives.cpp - all_reduce and copy from tp shardings ------===//
//
// See Passes.td. Partial sums are reduced once, right after their producer; a
// whole value read by column-parallel linears is read through one dist.copy.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

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

/// An op whose input enters a tensor-parallel region: a column-parallel linear
/// (its weight split along its output dimension) or a moe (its experts' hidden
/// dimension split).
bool isColumnParallel(Operation *op) {
  if (isa<graph::MoEOp>(op))
    return true;
  auto l = dyn_cast<graph::LinearOp>(op);
  if (!l)
    return false;
  auto w = l.getWeight().getDefiningOp();
  dist::ShardingAttr s = w ? shardingOf(w) : nullptr;
  return s && !s.getDims().empty() && s.getDims()[0] >= 0;
}

bool isSeqSplit(dist::ShardingAttr s) {
  return s && s.getDims().size() >= 2 && s.getDims()[1] == static_cast<int32_t>(dist::Axis::tp);
}

struct InsertCollectivesPass : impl::InsertCollectivesPassBase<InsertCollectivesPass> {
  using InsertCollectivesPassBase::InsertCollectivesPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::optional<GraphInputs> in = requireGraphInputs(module, getArgument());
    if (!in)
      return signalPassFailure();
    auto [forward, mesh] = *in;
    if (mesh.getTp() == 1)
      return; // nothing is split over tp: no collectives to insert
    MLIRContext *ctx = module.getContext();
    auto meshRef = FlatSymbolRefAttr::get(ctx, "world");
    auto whole = [&](Value v, bool seqSplit = false) {
      SmallVector<int32_t> dims(cast<RankedTensorType>(v.getType()).getRank(), -1);
      if (seqSplit)
        dims[1] = static_cast<int32_t>(dist::Axis::tp);
      return dist::ShardingAttr::get(ctx, dims, {});
    };
    auto tpAttr = dist::AxisAttr::get(ctx, dist::Axis::tp);
    auto sum = dist::ReduceKindAttr::get(ctx, dist::ReduceKind::sum);
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
      bool seqSplit = isSeqSplit(s);
      if (isPartial(s)) {
        Operation *reduce;
        if (sequenceParallel) { // to this rank's tokens
          reduce = dist::ReduceScatterOp::create(b, op->getLoc(), v.getType(), v, meshRef,
                                                 tpAttr, b.getI64IntegerAttr(1), sum);
          seqSplit = true;
        } else {
          reduce = dist::AllReduceOp::create(b, op->getLoc(), v.getType(), v, meshRef, tpAttr, sum);
        }
        reduce->setAttr(dist::kShardingAttrName, whole(v, seqSplit));
        v.replaceAllUsesExcept(reduce->getResult(0), reduce);
        v = reduce->getResult(0);
        b.setInsertionPointAfter(reduce);
      }
      if (isa<graph::ParamOp>(op) || !llvm::any_of(v.getUsers(), isColumnParallel))
        continue;
      // Megatron's f: a copy of a whole value, or (sequence parallelism) the
      // gather of a sequence-split one.
      Operation *enter =
          seqSplit ? dist::AllGatherOp::create(b, op->getLoc(), v.getType(), v, meshRef, tpAttr,
                                               b.getI64IntegerAttr(1))
                         .getOperation()
                   : dist::CopyOp::create(b, op->getLoc(), v.getType(), v, meshRef, tpAttr)
                         .getOperation();
      enter->setAttr(dist::kShardingAttrName, whole(v));
      v.replaceUsesWithIf(enter->getResult(0), [&](OpOperand &use) {
        return use.getOwner() != enter && isColumnParallel(use.getOwner()) &&
               use.getOperandNumber() == 0;
      });
    }
  }
};

} // namespace
} // namespace heiretsu
