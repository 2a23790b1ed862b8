//===- Schedule.cpp - the order of a step's units --------------------------===//
//
// See Passes.td. Writes the program's plan.schedule: for every microbatch, its
// units that run per microbatch (forward, then backward) in program order, then
// the units of the step (comm, update) in program order.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_SCHEDULEPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct SchedulePass : impl::SchedulePassBase<SchedulePass> {
  using SchedulePassBase::SchedulePassBase;

  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    std::optional<ProgramInputs> in = requireProgramInputs(program, getArgument());
    if (!in)
      return signalPassFailure();
    dist::MeshOp mesh = in->mesh;
    std::string name = schedule;
    if (name != "1f1b") {
      bool known = name == "gpipe" || name == "interleaved" || name == "zb-h1";
      program.emitError() << "schedule '" << name << "' "
                          << (known ? "is not built yet; use schedule=1f1b"
                                    : "is unknown; expected 1f1b (gpipe, interleaved and "
                                      "zb-h1 are not built yet)");
      return signalPassFailure();
    }
    if (mesh.getPp() != 1) {
      program.emitError() << "pipeline schedules for pp = " << mesh.getPp()
                          << " are not built yet; heiretsu-schedule orders one stage (pp = 1)";
      return signalPassFailure();
    }
    Block &body = program.getBody().front();
    if (!body.getOps<plan_ir::ScheduleOp>().empty()) {
      program.emitError("the program already has a plan.schedule");
      return signalPassFailure();
    }
    SmallVector<plan_ir::UnitOp> perMicrobatch, perStep;
    for (plan_ir::UnitOp unit : body.getOps<plan_ir::UnitOp>())
      (unit.isPerMicrobatch() ? perMicrobatch : perStep).push_back(unit);
    if (perMicrobatch.empty()) {
      program.emitError("the program has no forward or backward unit to schedule");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    Location loc = program.getLoc();
    auto sched = plan_ir::ScheduleOp::create(b, loc);
    sched.getBody().push_back(new Block());
    b.setInsertionPointToEnd(&sched.getBody().front());
    // One stage: 1F1B is each microbatch's forward then its backward (the memory
    // plan holds one microbatch's activations), and no bubble.
    for (int64_t m = 0, n = static_cast<int64_t>(program.getMicrobatches()); m < n; ++m)
      for (plan_ir::UnitOp unit : perMicrobatch)
        plan_ir::RunOp::create(b, loc, unit.getNameAttr(), b.getI64IntegerAttr(m),
                               IntegerAttr());
    for (plan_ir::UnitOp unit : perStep)
      plan_ir::RunOp::create(b, loc, unit.getNameAttr(), IntegerAttr(), IntegerAttr());
  }
};

} // namespace
} // namespace heiretsu
