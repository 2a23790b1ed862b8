//===- Schedule.cpp - the order of a step's units --------------------------===//
//
// See Passes.td. The pipeline schedule (schedules/: one file each) orders the
// stage's forward and backward passes; each becomes runs of the program's units
// of that kind, in program order. A microbatch takes the lowest free activation
// slot at its first run and frees it after its last; the program's slots are the
// most it ever holds. The units of the step (comm, update) follow, in program
// order.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"
#include "compiler/transforms/schedules/Schedules.h"

#include <map>
#include <set>

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
    const int64_t pp = static_cast<int64_t>(in->mesh.getPp());
    const int64_t stage = program.getStage();
    const int64_t microbatches = program.getMicrobatches();
    std::string name = schedule;
    std::vector<schedules::Step> order;
    if (name == "1f1b") {
      order = schedules::oneFOneB(pp, stage, microbatches);
    } else if (name == "gpipe") {
      order = schedules::gpipe(pp, stage, microbatches);
    } else {
      bool known = name == "interleaved" || name == "zb-h1";
      program.emitError() << "schedule '" << name << "' "
                          << (known ? "is not built yet; use 1f1b or gpipe"
                                    : "is unknown; expected 1f1b or gpipe (interleaved and "
                                      "zb-h1 are not built yet)");
      return signalPassFailure();
    }
    Block &body = program.getBody().front();
    if (!body.getOps<plan_ir::ScheduleOp>().empty()) {
      program.emitError("the program already has a plan.schedule");
      return signalPassFailure();
    }
    SmallVector<plan_ir::UnitOp> forwards, backwards, perStep;
    for (plan_ir::UnitOp unit : body.getOps<plan_ir::UnitOp>()) {
      if (!unit.isPerMicrobatch())
        perStep.push_back(unit);
      else if (unit.getKind() == plan_ir::UnitKind::forward)
        forwards.push_back(unit);
      else
        backwards.push_back(unit);
    }
    if (forwards.empty() || backwards.empty()) {
      program.emitError("the program needs a forward and a backward unit to schedule");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    Location loc = program.getLoc();
    auto sched = plan_ir::ScheduleOp::create(b, loc);
    sched.getBody().push_back(new Block());
    b.setInsertionPointToEnd(&sched.getBody().front());
    std::set<int64_t> free;
    std::map<int64_t, int64_t> slotOf;
    int64_t slots = 0;
    for (const schedules::Step &step : order) {
      const bool forward = step.pass == schedules::Pass::forward;
      auto [it, first] = slotOf.try_emplace(step.microbatch, 0);
      if (first) {
        if (free.empty())
          free.insert(slots++);
        it->second = *free.begin();
        free.erase(free.begin());
      }
      const int64_t slot = it->second;
      for (plan_ir::UnitOp unit : forward ? forwards : backwards)
        plan_ir::RunOp::create(b, loc, unit.getNameAttr(), b.getI64IntegerAttr(step.microbatch),
                               IntegerAttr(), slot ? b.getI64IntegerAttr(slot) : IntegerAttr());
      if (!forward) // its last pass: the slot is free again
        free.insert(slot);
    }
    for (plan_ir::UnitOp unit : perStep)
      plan_ir::RunOp::create(b, loc, unit.getNameAttr(), IntegerAttr(), IntegerAttr(),
                             IntegerAttr());
  }
};

} // namespace
} // namespace heiretsu
