//===- Zero1.cpp - ZeRO-1: optimizer state sharded over dp ----------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_ZERO1PASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct Zero1Pass : impl::Zero1PassBase<Zero1Pass> {
  using Zero1PassBase::Zero1PassBase;

  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    std::optional<ProgramInputs> in =
        requireProgramInputs(program, getArgument(), {plan_ir::UnitKind::update});
    if (!in)
      return signalPassFailure();
    const int64_t dp = in->mesh.getDp(), ep = in->mesh.getEp();
    if (dp * ep == 1)
      return; // one data rank: nothing to shard, the optimizer's update stays
    SmallVector<plan_ir::ParamOp> params = paramsOf(program);
    Block &body = in->update.getBody().front();
    if (body.empty()) {
      program.emitError("the update unit is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    // Moments become this rank's shard of the flattened parameter, over its group:
    // the data ranks (dp x ep) for what every data rank holds, dp for the experts.
    auto groupSize = [&](plan_ir::ParamOp p) {
      return zeroShardAxis(p, ep) == plan::kAxisData ? dp * ep : dp;
    };
    SmallVector<plan_ir::ParamOp> sharded;
    for (plan_ir::ParamOp p : params) {
      OpBuilder b(p);
      int64_t n = numElements(p.getValue());
      auto value = cast<MemRefType>(p.getValue().getType());
      auto moment = MemRefType::get({plan::ShardSize(n, groupSize(p))}, value.getElementType());
      auto q = plan_ir::ParamOp::create(b, p.getLoc(), value, value, moment, moment,
                                        p.getNameAttr(), p.getInitAttr(), p.getStdAttr(),
                                        p.getDecayAttr(), DenseI64ArrayAttr(),
                                        p.getSplitAxesAttr(), p.getGlobalShapeAttr(),
                                        p.getGradReduceAttr(), p.getTiedStageAttr());
      p.getValue().replaceAllUsesWith(q.getValue());
      p.getGrad().replaceAllUsesWith(q.getGrad());
      sharded.push_back(q);
    }
    // The update unit is rebuilt: the moments' old uses go with it.
    while (!body.empty())
      body.back().erase();
    for (plan_ir::ParamOp p : params)
      p.erase();
    // The gradients' reduce-scatter: in buckets that overlap the backward pass, one
    // group per bucket (an expert with dp = 1 keeps its state whole and its gradient).
    Location loc = program.getLoc();
    auto axisOf = [&](plan_ir::ParamOp q) -> std::optional<int64_t> {
      if (groupSize(q) == 1)
        return std::nullopt;
      return zeroShardAxis(q, ep);
    };
    auto scatter = [&](OpBuilder &b, ArrayRef<Value> grads, int64_t axis) {
      // Over the data ranks this also averages the dense gradients over ep.
      createKernel(b, loc,
                   plan::op::BucketReduceScatter<Value>{.buffers = {grads.begin(), grads.end()},
                                                        .axis = axis,
                                                        .reduce = plan::kReduceAvg});
    };
    if (failed(insertGradientBuckets(program, sharded, bucketBytes, axisOf, scatter,
                                     getArgument())))
      return signalPassFailure();
    // The update: the partial gradients' sum over tp (on every rank's shard),
    // the norm over the shards, AdamW on each shard, the parameters gathered.
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    plan::op::AllGather<Value> gather[2] = {{.axis = plan::kAxisData}, {.axis = plan::kAxisDp}};
    for (plan_ir::ParamOp q : sharded)
      if (std::optional<int64_t> axis = axisOf(q))
        gather[*axis == plan::kAxisData ? 0 : 1].buffers.push_back(q.getValue());
    createPartialGradReduce(b, loc, sharded, /*ep=*/1);
    createGradNorm(b, loc, sharded, /*sharded=*/true, ep);
    for (plan_ir::ParamOp q : sharded)
      createAdamW(b, q, groupSize(q) > 1 ? numElements(q.getExpAvg()) : 0, zeroShardAxis(q, ep));
    for (auto &g : gather)
      if (!g.buffers.empty())
        createKernel(b, loc, g);
  }
};

} // namespace
} // namespace heiretsu
