//===- DataParallel.cpp - data-parallel gradient averaging -----------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_DATAPARALLELPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct DataParallelPass : impl::DataParallelPassBase<DataParallelPass> {
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    auto [params, update] = paramsAndUpdate(program);
    SmallVector<Value> grads;
    for (plan_ir::ParamOp p : params)
      grads.push_back(p.getGrad());
    Block &body = update.getBody().front();
    if (body.empty()) {
      program.emitError("plan.update is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockBegin(&body);
    createKernel(b, program.getLoc(), "all_reduce", grads,
                 {plan::kAxisDp, plan::kReduceAvg});
  }
};

} // namespace
} // namespace heiretsu
