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
    Block &body = program.getBody().front();
    // The stage's virtual chunks: one per forward unit's chunk.
    std::set<int64_t> chunkSet;
    for (plan_ir::UnitOp unit : body.getOps<plan_ir::UnitOp>())
      if (unit.getKind() == plan_ir::UnitKind::forward)
        chunkSet.insert(unit.chunkIndex());
    const int64_t chunks = static_cast<int64_t>(chunkSet.size());
    if ((name == "interleaved") != (chunks > 1)) {
      program.emitError() << (chunks > 1 ? "the program holds " + std::to_string(chunks) +
                                               " virtual chunks: only schedule 'interleaved' "
                                               "runs them"
                                         : std::string("schedule 'interleaved' needs virtual "
                                                       "chunks (heiretsu-stage-cuts "
                                                       "virtual-stages > 1)"));
      return signalPassFailure();
    }
    if (name == "interleaved" && microbatches % pp != 0) {
      program.emitError() << "schedule 'interleaved' needs microbatches (" << microbatches
                          << ") to be a multiple of pp (" << pp << ")";
      return signalPassFailure();
    }
    std::vector<schedules::Step> order;
    if (name == "interleaved") {
      order = schedules::interleaved(pp, stage, microbatches, chunks);
    } else if (name == "1f1b") {
      order = schedules::oneFOneB(pp, stage, microbatches);
    } else if (name == "gpipe") {
      order = schedules::gpipe(pp, stage, microbatches);
    } else if (name == "zb-h1") {
      order = schedules::zeroBubbleH1(pp, stage, microbatches);
    } else {
      program.emitError() << "schedule '" << name
                          << "' is unknown; expected 1f1b, gpipe, interleaved or zb-h1";
      return signalPassFailure();
    }
    if (!body.getOps<plan_ir::ScheduleOp>().empty()) {
      program.emitError("the program already has a plan.schedule");
      return signalPassFailure();
    }
    SmallVector<plan_ir::UnitOp> forwards, backwards, weights, perStep;
    for (plan_ir::UnitOp unit : body.getOps<plan_ir::UnitOp>()) {
      if (!unit.isPerMicrobatch())
        perStep.push_back(unit);
      else if (unit.getKind() == plan_ir::UnitKind::forward)
        forwards.push_back(unit);
      else if (unit.getKind() == plan_ir::UnitKind::backward_weight)
        weights.push_back(unit);
      else
        backwards.push_back(unit);
    }
    if (forwards.empty() || backwards.empty()) {
      program.emitError("the program needs a forward and a backward unit to schedule");
      return signalPassFailure();
    }
    const bool split = name == "zb-h1";
    if (split != !weights.empty()) {
      program.emitError() << (split ? "schedule 'zb-h1' needs a split backward (a "
                                      "backward_weight unit: heiretsu-autodiff "
                                      "split-backward=true)"
                                    : "schedule '" + name + "' runs whole backward passes; this "
                                      "program's is split (use zb-h1)");
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(&body);
    Location loc = program.getLoc();
    auto sched = plan_ir::ScheduleOp::create(b, loc);
    sched.getBody().push_back(new Block());
    b.setInsertionPointToEnd(&sched.getBody().front());
    // A microbatch's last step (of its chunk) frees its slot; each chunk has its
    // own slotted buffers, so its own slots.
    using Key = std::pair<int64_t, int64_t>; // (chunk, microbatch)
    std::map<Key, size_t> lastStep;
    for (auto [i, step] : llvm::enumerate(order))
      lastStep[{step.chunk, step.microbatch}] = i;
    std::map<int64_t, std::set<int64_t>> free;
    std::map<int64_t, int64_t> used;
    std::map<Key, int64_t> slotOf;
    for (auto [i, step] : llvm::enumerate(order)) {
      const Key key{step.chunk, step.microbatch};
      auto [it, first] = slotOf.try_emplace(key, 0);
      if (first) {
        std::set<int64_t> &mine = free[step.chunk];
        if (mine.empty())
          mine.insert(used[step.chunk]++);
        it->second = *mine.begin();
        mine.erase(mine.begin());
      }
      const int64_t slot = it->second;
      ArrayRef<plan_ir::UnitOp> units = step.pass == schedules::Pass::forward ? forwards
                                        : step.pass == schedules::Pass::backward ? backwards
                                                                                 : weights;
      for (plan_ir::UnitOp unit : units) {
        if (unit.chunkIndex() != step.chunk)
          continue;
        plan_ir::RunOp::create(b, loc, unit.getNameAttr(), b.getI64IntegerAttr(step.microbatch),
                               unit.getChunkAttr(),
                               slot ? b.getI64IntegerAttr(slot) : IntegerAttr());
      }
      if (i == lastStep[key]) // its last pass: the slot is free again
        free[step.chunk].insert(slot);
    }
    for (plan_ir::UnitOp unit : perStep)
      plan_ir::RunOp::create(b, loc, unit.getNameAttr(), IntegerAttr(), IntegerAttr(),
                             IntegerAttr());
  }
};

} // namespace
} // namespace heiretsu
