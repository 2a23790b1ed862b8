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
    if (dp < 2) {
      program.emitError("heiretsu-zero1 needs dp >= 2, got ") << static_cast<int64_t>(dp);
      return signalPassFailure();
    }
    auto [params, update] = paramsAndUpdate(program);
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
                                        p.getTpDimAttr(), p.getGlobalShapeAttr(),
                                        p.getGradReduceAttr());
      p.getValue().replaceAllUsesWith(q.getValue());
      p.getGrad().replaceAllUsesWith(q.getGrad());
      sharded.push_back(q);
    }
    // The update stream is rebuilt: the moments' old uses go with it.
    Block &body = update.getBody().front();
    while (!body.empty())
      body.back().erase();
    for (plan_ir::ParamOp p : params)
      p.erase();
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    SmallVector<Value> grads, values;
    for (plan_ir::ParamOp q : sharded) {
      grads.push_back(q.getGrad());
      values.push_back(q.getValue());
    }
    Location loc = program.getLoc();
    createPartialGradReduce(b, loc, sharded);
    createKernel(b, loc, "reduce_scatter", grads, {plan::kAxisDp, plan::kReduceAvg});
    createGradNorm(b, loc, sharded, /*sharded=*/true);
    for (plan_ir::ParamOp q : sharded)
      createKernel(b, q.getLoc(), "clip_adamw",
                   {q.getValue(), q.getGrad(), q.getExpAvg(), q.getExpAvgSq()},
                   {numElements(q.getValue()), q.getDecay() ? 1 : 0,
                    numElements(q.getExpAvg())});
    createKernel(b, loc, "all_gather", values, {plan::kAxisDp});
  }
};

} // namespace
} // namespace heiretsu
