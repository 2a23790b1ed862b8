//===- Optimizer.cpp - global-norm clipping and AdamW in the update unit --===//

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
    SmallVector<plan_ir::ParamOp> params = paramsOf(program);
    plan_ir::UnitOp update =
        requireUnit(program, plan_ir::UnitKind::update, "heiretsu-optimizer");
    if (!update)
      return signalPassFailure();
    if (params.empty()) {
      program.emitError("the program has no parameters to optimize");
      return signalPassFailure();
    }
    Block &body = update.getBody().front();
    if (!body.empty()) {
      program.emitError("the update unit is not empty: the optimizer was already inserted");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    createPartialGradReduce(b, program.getLoc(), params);
    createGradNorm(b, program.getLoc(), params, /*sharded=*/false);
    for (plan_ir::ParamOp p : params)
      createAdamW(b, p, /*shard=*/0);
  }
};

} // namespace
} // namespace heiretsu
