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
    const int64_t dp = in->mesh.getDp();
    if (dp == 1)
      return; // one data rank: nothing to shard, the optimizer's update stays
    SmallVector<plan_ir::ParamOp> params = paramsOf(program);
    Block &body = in->update.getBody().front();
    if (body.empty()) {
      program.emitError("the update unit is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    // Moments become this rank's shard of the flattened parameter.
    SmallVector<plan_ir::ParamOp> sharded;
    for (plan_ir::ParamOp p : params) {
      OpBuilder b(p);
      int64_t n = numElements(p.getValue());
      auto value = cast<MemRefType>(p.getValue().getType());
      auto moment = MemRefType::get({plan::ShardSize(n, dp)}, value.getElementType());
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
    plan::op::ReduceScatter<Value> scatter{.axis = plan::kAxisDp, .reduce = plan::kReduceAvg};
    plan::op::AllGather<Value> gather{.axis = plan::kAxisDp};
    for (plan_ir::ParamOp q : sharded) {
      scatter.buffers.push_back(q.getGrad());
      gather.buffers.push_back(q.getValue());
    }
    Location loc = program.getLoc();
    createPartialGradReduce(b, loc, sharded, in->mesh.getEp());
    createKernel(b, loc, scatter);
    createGradNorm(b, loc, sharded, /*sharded=*/true);
    for (plan_ir::ParamOp q : sharded)
      createAdamW(b, q, numElements(q.getExpAvg()));
    createKernel(b, loc, gather);
  }
};

} // namespace
} // namespace heiretsu
