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
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    // One reduce-scatter and one all-gather per group with shards.
    plan::op::ReduceScatter<Value> scatter[2] = {
        {.axis = plan::kAxisData, .reduce = plan::kReduceAvg},
        {.axis = plan::kAxisDp, .reduce = plan::kReduceAvg}};
    plan::op::AllGather<Value> gather[2] = {{.axis = plan::kAxisData}, {.axis = plan::kAxisDp}};
    for (plan_ir::ParamOp q : sharded) {
      if (groupSize(q) == 1)
        continue; // an expert with dp = 1: its state stays whole
      int g = zeroShardAxis(q, ep) == plan::kAxisData ? 0 : 1;
      scatter[g].buffers.push_back(q.getGrad());
      gather[g].buffers.push_back(q.getValue());
    }
    Location loc = program.getLoc();
    // The reduce-scatter over the data ranks averages over ep too.
    createPartialGradReduce(b, loc, sharded, /*ep=*/1);
    for (auto &s : scatter)
      if (!s.buffers.empty())
        createKernel(b, loc, s);
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
