//===- Optimizer.cpp - global-norm clipping and AdamW in plan.update ------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_OPTIMIZERPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct OptimizerPass : impl::OptimizerPassBase<OptimizerPass> {
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    auto [params, update] = paramsAndUpdate(program);
    if (params.empty()) {
      program.emitError("the program has no parameters to optimize");
      return signalPassFailure();
    }
    Block &body = update.getBody().front();
    if (!body.empty()) {
      program.emitError("plan.update is not empty: the optimizer was already inserted");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    createPartialGradReduce(b, program.getLoc(), params);
    createGradNorm(b, program.getLoc(), params, /*sharded=*/false);
    for (plan_ir::ParamOp p : params)
      createKernel(b, p.getLoc(), "clip_adamw",
                   {p.getValue(), p.getGrad(), p.getExpAvg(), p.getExpAvgSq()},
                   {numElements(p.getValue()), p.getDecay() ? 1 : 0, /*shard=*/0});
  }
};

} // namespace
} // namespace heiretsu
