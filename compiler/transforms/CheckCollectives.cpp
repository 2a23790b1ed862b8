//===- CheckCollectives.cpp - static matching of every rank's collectives -===//
//
// See Passes.td. Each program's collectives are listed once per axis; a group
// whose ranks run the same program matches trivially, so programs are compared
// pairwise only where a group mixes them, which keeps the check linear in the
// number of ranks.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

#include <map>

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_CHECKCOLLECTIVESPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

bool isCollective(StringRef name) {
  return name == "all_reduce" || name == "reduce_scatter" || name == "all_gather" ||
         name == "all_gather_into" || name == "reduce_scatter_into" ||
         name == "bucket_all_reduce";
}

/// What a collective exchanges: its name, reduction and buffers' element counts
/// and dtypes. Two ranks' collectives match when these are equal.
std::string describe(plan_ir::KernelOp k) {
  std::string s;
  llvm::raw_string_ostream os(s);
  StringRef name = k.getName();
  os << name;
  if (name == "all_reduce" || name == "reduce_scatter" || name == "bucket_all_reduce") {
    static const char *kReduce[] = {"sum", "max", "avg"};
    int64_t r = k.getInts()[1];
    os << "(" << (r >= 0 && r <= 2 ? kReduce[r] : "?") << ")";
  }
  os << " of";
  for (Value b : k.getBuffers()) {
    auto t = cast<MemRefType>(b.getType());
    os << " " << t.getNumElements() << " x " << t.getElementType();
  }
  return s;
}

struct Program {
  plan_ir::ProgramOp op;
  // Per axis: the collectives over it in one step, in order.
  std::vector<plan_ir::KernelOp> byAxis[4];
};

struct CheckCollectivesPass : impl::CheckCollectivesPassBase<CheckCollectivesPass> {
  using CheckCollectivesPassBase::CheckCollectivesPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    int64_t size[4] = {dp, pp, tp, ep};
    for (int a = 0; a < 4; ++a)
      if (size[a] < 1) {
        module.emitError() << plan::AxisName(a) << " must be >= 1, got " << size[a];
        return signalPassFailure();
      }
    // Programs by stage.
    std::map<int64_t, Program> programs;
    for (auto program : module.getOps<plan_ir::ProgramOp>()) {
      auto stageAttr = program->getAttrOfType<IntegerAttr>("stage");
      int64_t stage = stageAttr ? stageAttr.getInt() : 0;
      if (stage < 0 || stage >= size[1] || programs.count(stage)) {
        program.emitError() << "stage " << stage << " is outside [0, " << size[1]
                            << ") or has two programs";
        return signalPassFailure();
      }
      Program &p = programs[stage];
      p.op = program;
      for (Operation &op : program.getBody().front()) {
        if (!isa<plan_ir::MicrobatchOp, plan_ir::UpdateOp>(op))
          continue;
        int64_t times = isa<plan_ir::MicrobatchOp>(op) ? program.getMicrobatches() : 1;
        for (int64_t t = 0; t < times; ++t)
          for (Operation &inner : op.getRegion(0).front()) {
            auto k = dyn_cast<plan_ir::KernelOp>(inner);
            if (!k || !isCollective(k.getName()))
              continue;
            if (k.getName() == "bucket_all_reduce" && t + 1 < times)
              continue; // once per step, in the last microbatch
            int64_t axis = k.getInts()[0];
            if (axis < 0 || axis > 3) {
              k.emitError() << "collective over unknown mesh axis " << axis;
              return signalPassFailure();
            }
            if ((k.getName() == "all_gather_into" || k.getName() == "reduce_scatter_into") &&
                k.getInts()[2] != size[axis]) {
              k.emitError() << k.getName() << " expects a group of " << k.getInts()[2]
                            << " ranks but its group over " << plan::AxisName(axis) << " has "
                            << size[axis];
              return signalPassFailure();
            }
            p.byAxis[axis].push_back(k);
          }
      }
    }
    for (int64_t stage = 0; stage < size[1]; ++stage)
      if (!programs.count(stage)) {
        module.emitError() << "no plan.program for stage " << stage << " of pp = " << size[1];
        return signalPassFailure();
      }
    if (programs.size() == 1)
      return; // one program for every rank: every group runs the same sequence
    // Only groups over pp mix programs (the other axes keep the pp coordinate):
    // stage 0's first rank against its counterpart on every other stage.
    plan::MeshCoordinates c = plan::CoordinatesOf(
        plan::fb::Mesh(static_cast<int32_t>(size[0]), static_cast<int32_t>(size[1]),
                       static_cast<int32_t>(size[2]), static_cast<int32_t>(size[3])),
        0);
    for (int64_t stage = 1; stage < size[1]; ++stage) {
      c.coord[plan::kAxisPp] = static_cast<int>(stage);
      if (failed(compare(programs[0], 0, programs[stage], plan::RankAt(c), plan::kAxisPp)))
        return signalPassFailure();
    }
  }

  LogicalResult compare(Program &a, int64_t rankA, Program &b, int64_t rankB, int axis) {
    auto &x = a.byAxis[axis], &y = b.byAxis[axis];
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      std::string dx = describe(x[i]), dy = describe(y[i]);
      if (dx == dy)
        continue;
      InFlightDiagnostic d = x[i].emitError()
                             << "collective #" << i + 1 << " over " << plan::AxisName(axis)
                             << " does not match: rank " << rankA << " does " << dx
                             << ", rank " << rankB << " does " << dy;
      d.attachNote(y[i].getLoc()) << "rank " << rankB << "'s collective is here";
      return failure();
    }
    if (x.size() != y.size()) {
      plan_ir::ProgramOp where = x.size() > y.size() ? a.op : b.op;
      where.emitError() << "ranks of one group over " << plan::AxisName(axis)
                        << " issue different numbers of collectives per step: rank " << rankA
                        << " issues " << x.size() << ", rank " << rankB << " issues "
                        << y.size();
      return failure();
    }
    return success();
  }
};

} // namespace
} // namespace heiretsu
