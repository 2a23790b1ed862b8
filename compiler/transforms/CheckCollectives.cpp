//===- CheckCollectives.cpp - static matching of every rank's collectives -===//
//
// See Passes.td. Each program's collectives are listed once per axis, from its
// schedule (a unit's collectives per run of the unit); a group
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
#include <type_traits>

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_CHECKCOLLECTIVESPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

/// A collective instruction as the matching sees it: its axis, what it exchanges
/// (name, reduction, buffers' element counts and dtypes: two ranks' collectives
/// match when these are equal) and, for the block collectives, the group size it
/// assumes (`parts`, else -1).
struct Collective {
  plan_ir::KernelOp k;
  int64_t axis = 0;
  int64_t parts = -1;
  std::string what;
};

std::string buffersOf(llvm::ArrayRef<Value> buffers) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << " of";
  for (Value b : buffers) {
    auto t = cast<MemRefType>(b.getType());
    os << " " << t.getNumElements() << " x " << t.getElementType();
  }
  return s;
}

std::optional<Collective> collectiveOf(plan_ir::KernelOp k) {
  using namespace plan::op;
  auto reduced = [&](const auto &op) {
    return Collective{k, op.axis, -1,
                      std::string(std::decay_t<decltype(op)>::kName) + "(" + plan::ReductionName(op.reduce) +
                          ")" + buffersOf(op.buffers)};
  };
  auto block = [&](const auto &op) {
    return Collective{k, op.axis, op.parts,
                      std::string(std::decay_t<decltype(op)>::kName) + buffersOf({op.src, op.dst})};
  };
  if (auto op = kernelAs<AllReduce<Value>>(k))
    return reduced(*op);
  if (auto op = kernelAs<ReduceScatter<Value>>(k))
    return reduced(*op);
  if (auto op = kernelAs<BucketAllReduce<Value>>(k))
    return reduced(*op);
  if (auto op = kernelAs<AllGather<Value>>(k))
    return Collective{k, op->axis, -1, std::string(AllGather<Value>::kName) + buffersOf(op->buffers)};
  if (auto op = kernelAs<AllGatherInto<Value>>(k))
    return block(*op);
  if (auto op = kernelAs<ReduceScatterInto<Value>>(k))
    return block(*op);
  return std::nullopt;
}

/// A send or recv between two pipeline stages.
struct PointToPoint {
  mutable plan_ir::KernelOp k; // emitError is not const
  bool send;
  int64_t axis;
  int64_t peer;
  int64_t numel;
};

/// `k` as a send or recv, else nothing.
std::optional<PointToPoint> pointToPointOf(plan_ir::KernelOp k) {
  auto of = [&](const auto &op, bool send) {
    return PointToPoint{
        .k = k, .send = send, .axis = op.axis, .peer = op.peer, .numel = numElements(op.x)};
  };
  if (auto op = kernelAs<plan::op::Send<Value>>(k))
    return of(*op, true);
  if (auto op = kernelAs<plan::op::Recv<Value>>(k))
    return of(*op, false);
  return std::nullopt;
}

struct Program {
  plan_ir::ProgramOp op;
  int64_t stage = 0;
  // Per axis: the collectives over it in one step, in order.
  std::vector<Collective> byAxis[plan::kNumAxes];
  // The sends and recvs of one step, in order.
  std::vector<PointToPoint> p2p;
};

struct CheckCollectivesPass : impl::CheckCollectivesPassBase<CheckCollectivesPass> {
  using CheckCollectivesPassBase::CheckCollectivesPassBase;

  /// Lists `program`'s collectives and sends/recvs of one step: its schedule's
  /// runs in order, each unit's kernels per run, a bucket_all_reduce only in its
  /// unit's last run of the step.
  LogicalResult expand(plan_ir::ProgramOp program, const int64_t size[], Program &p) {
    auto schedules = program.getBody().front().getOps<plan_ir::ScheduleOp>();
    if (schedules.empty())
      return program.emitError("the program has no plan.schedule (run heiretsu-schedule "
                               "first): its collectives are those of its schedule's runs");
    llvm::StringMap<plan_ir::UnitOp> units;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      units[unit.getName()] = unit;
    SmallVector<plan_ir::UnitOp> runs;
    for (auto run : (*schedules.begin()).getBody().front().getOps<plan_ir::RunOp>())
      runs.push_back(units.lookup(run.getUnit()));
    DenseMap<Operation *, size_t> lastRun;
    for (auto [i, unit] : llvm::enumerate(runs))
      lastRun[unit] = i;
    for (auto [i, unit] : llvm::enumerate(runs)) {
      for (auto k : unit.getBody().front().getOps<plan_ir::KernelOp>()) {
        if (std::optional<PointToPoint> x = pointToPointOf(k)) {
          const char *what = x->send ? "send" : "recv";
          if (x->axis != plan::kAxisPp)
            return k.emitError() << what << " over " << plan::AxisName(x->axis) << ": only "
                                 << what << "s between pipeline stages (axis pp) are built";
          p.p2p.push_back(*x);
          continue;
        }
        std::optional<Collective> c = collectiveOf(k);
        if (!c)
          continue;
        if (k.getName() == plan::op::BucketAllReduce<Value>::kName && i != lastRun[unit])
          continue; // once per step, in its unit's last run
        if (c->parts >= 0 && c->parts != size[c->axis])
          return k.emitError() << k.getName() << " expects a group of " << c->parts
                               << " ranks but its group over " << plan::AxisName(c->axis)
                               << " has " << size[c->axis];
        p.byAxis[c->axis].push_back(*c);
      }
    }
    for (const PointToPoint &x : p.p2p)
      if (x.peer >= size[plan::kAxisPp] || x.peer == p.stage)
        return x.k.emitError() << (x.send ? "send to" : "recv from") << " stage " << x.peer
                               << " of stage " << p.stage << ": the peer must be another of the "
                               << size[plan::kAxisPp] << " stages (pp)";
    return success();
  }

  /// Every send from stage a to stage b has its recv on b from a, in the same order
  /// and of the same element count, and the other way round.
  LogicalResult matchPointToPoint(std::map<int64_t, Program> &programs) {
    for (auto &[from, a] : programs)
      for (auto &[to, b] : programs) {
        if (from == to)
          continue;
        SmallVector<const PointToPoint *> sends, recvs;
        for (const PointToPoint &x : a.p2p)
          if (x.send && x.peer == to)
            sends.push_back(&x);
        for (const PointToPoint &x : b.p2p)
          if (!x.send && x.peer == from)
            recvs.push_back(&x);
        for (size_t i = 0; i < std::min(sends.size(), recvs.size()); ++i)
          if (sends[i]->numel != recvs[i]->numel) {
            InFlightDiagnostic d = sends[i]->k.emitError()
                                   << "send #" << i + 1 << " from stage " << from << " to stage "
                                   << to << " has " << sends[i]->numel
                                   << " elements but its recv on stage " << to << " has "
                                   << recvs[i]->numel;
            d.attachNote(recvs[i]->k.getLoc()) << "the recv is here";
            return failure();
          }
        if (sends.size() != recvs.size()) {
          plan_ir::ProgramOp where = sends.size() > recvs.size() ? a.op : b.op;
          return where.emitError() << "stage " << from << " sends " << sends.size()
                                   << " buffers per step to stage " << to << ", which receives "
                                   << recvs.size() << " from it";
        }
      }
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    dist::MeshOp mesh = requireMesh(module, "heiretsu-check-collectives");
    if (!mesh)
      return signalPassFailure();
    const int64_t size[plan::kNumAxes] = {
        static_cast<int64_t>(mesh.getDp()), static_cast<int64_t>(mesh.getPp()),
        static_cast<int64_t>(mesh.getTp()), static_cast<int64_t>(mesh.getEp())};
    // Programs by stage.
    std::map<int64_t, Program> programs;
    for (auto program : module.getOps<plan_ir::ProgramOp>()) {
      int64_t stage = program.getStage();
      if (stage < 0 || stage >= size[plan::kAxisPp] || programs.count(stage)) {
        program.emitError() << "stage " << stage << " is outside [0, " << size[plan::kAxisPp]
                            << ") or has two programs";
        return signalPassFailure();
      }
      Program &p = programs[stage];
      p.op = program;
      p.stage = stage;
      if (failed(expand(program, size, p)))
        return signalPassFailure();
    }
    for (int64_t stage = 0; stage < size[plan::kAxisPp]; ++stage)
      if (!programs.count(stage)) {
        module.emitError() << "no plan.program for stage " << stage << " of pp = "
                           << size[plan::kAxisPp];
        return signalPassFailure();
      }
    if (failed(matchPointToPoint(programs)))
      return signalPassFailure();
    if (programs.size() == 1)
      return; // one program for every rank: every group runs the same sequence
    // Only groups over pp mix programs (the other axes keep the pp coordinate):
    // stage 0's first rank against its counterpart on every other stage.
    plan::MeshCoordinates c = plan::CoordinatesOf(
        plan::fb::Mesh(static_cast<int32_t>(size[0]), static_cast<int32_t>(size[1]),
                       static_cast<int32_t>(size[2]), static_cast<int32_t>(size[3])),
        0);
    for (int64_t stage = 1; stage < size[plan::kAxisPp]; ++stage) {
      c.coord[plan::kAxisPp] = static_cast<int>(stage);
      if (failed(compare(programs[0], 0, programs[stage], plan::RankAt(c), plan::kAxisPp)))
        return signalPassFailure();
    }
  }

  LogicalResult compare(Program &a, int64_t rankA, Program &b, int64_t rankB, int axis) {
    auto &x = a.byAxis[axis], &y = b.byAxis[axis];
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
      const std::string &dx = x[i].what, &dy = y[i].what;
      if (dx == dy)
        continue;
      InFlightDiagnostic d = x[i].k.emitError()
                             << "collective #" << i + 1 << " over " << plan::AxisName(axis)
                             << " does not match: rank " << rankA << " does " << dx
                             << ", rank " << rankB << " does " << dy;
      d.attachNote(y[i].k.getLoc()) << "rank " << rankB << "'s collective is here";
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
