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
    SmallVector<Value> grads;
    plan_ir::UpdateOp update;
    for (Operation &op : program.getBody().front()) {
      if (auto p = dyn_cast<plan_ir::ParamOp>(op))
        grads.push_back(p.getGrad());
      if (auto u = dyn_cast<plan_ir::UpdateOp>(op))
        update = u;
    }
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
