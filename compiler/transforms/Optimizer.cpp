//===- Optimizer.cpp - global-norm clipping and AdamW in the update unit --===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"
#include "dialects/dist/DistDialect.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_OPTIMIZERPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

/// A parameter two pipeline stages hold (tied_stage: a tied embedding and head)
/// has its two copies' gradients summed before the update, in a comm unit "tied"
/// before it: each stage copies its gradient, sends the copy to the other stage
/// (the copy, so the gradient can be accumulated while the send is in flight),
/// receives the other's and adds it. Addition is commutative, so both copies get
/// the same bits and stay identical after AdamW.
void tieAcrossStages(plan_ir::ProgramOp program, plan_ir::UnitOp update,
                     ArrayRef<plan_ir::ParamOp> params) {
  SmallVector<plan_ir::ParamOp> tied;
  for (plan_ir::ParamOp p : params)
    if (p.getTiedStage())
      tied.push_back(p);
  if (tied.empty())
    return;
  OpBuilder ub(update);
  Location loc = program.getLoc();
  auto unit = plan_ir::UnitOp::create(ub, loc, ub.getStringAttr("tied"),
                                      plan_ir::UnitKindAttr::get(ub.getContext(),
                                                                 plan_ir::UnitKind::comm),
                                      IntegerAttr());
  unit.getBody().push_back(new Block());
  OpBuilder b = OpBuilder::atBlockEnd(&unit.getBody().front());
  for (plan_ir::ParamOp p : tied) {
    auto type = cast<MemRefType>(p.getGrad().getType());
    int64_t n = numElements(p.getGrad()), peer = p.getTiedStageAttr().getInt();
    Value out = createBuffer(program, loc, p.getName().str() + ".grad.send", type);
    Value in = createBuffer(program, loc, p.getName().str() + ".grad.recv", type);
    using namespace plan::op;
    createKernel(b, loc, Accumulate<Value>{.src = p.getGrad(), .dst = out, .n = n});
    createKernel(b, loc, Send<Value>{.x = out, .axis = plan::kAxisPp, .peer = peer});
    createKernel(b, loc, Recv<Value>{.x = in, .axis = plan::kAxisPp, .peer = peer});
    createKernel(b, loc,
                 Accumulate<Value>{.src = in, .dst = p.getGrad(), .n = n, .accumulate_dx = 1});
  }
}

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
    tieAcrossStages(program, update, params);
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    // The mesh, when the module has one (hand-written IR may not), says ep.
    auto module = program->getParentOfType<ModuleOp>();
    auto mesh = module ? module.lookupSymbol<dist::MeshOp>("world") : dist::MeshOp();
    createPartialGradReduce(b, program.getLoc(), params, mesh ? mesh.getEp() : 1);
    createGradNorm(b, program.getLoc(), params, /*sharded=*/false);
    for (plan_ir::ParamOp p : params)
      createAdamW(b, p, /*shard=*/0);
  }
};

} // namespace
} // namespace heiretsu
