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
#include <set>
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

/// A gradient bucket's collective (plan::IsBucket): once per step, in its unit's
/// last run.
bool isBucket(plan_ir::KernelOp k) {
  return k.getName() == plan::op::BucketAllReduce<Value>::kName ||
         k.getName() == plan::op::BucketReduceScatter<Value>::kName;
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
  if (auto op = kernelAs<BucketReduceScatter<Value>>(k))
    return reduced(*op);
  if (auto op = kernelAs<AllGather<Value>>(k))
    return Collective{k, op->axis, -1, std::string(AllGather<Value>::kName) + buffersOf(op->buffers)};
  if (auto op = kernelAs<AllGatherInto<Value>>(k))
    return block(*op);
  if (auto op = kernelAs<ReduceScatterInto<Value>>(k))
    return block(*op);
  if (auto op = kernelAs<AllToAll<Value>>(k)) {
    Collective c = block(*op);
    if (op->back)
      c.what += " (back)";
    return c;
  }
  return std::nullopt;
}

/// A send or recv between two pipeline stages, and the run it belongs to.
struct PointToPoint {
  mutable plan_ir::KernelOp k; // emitError is not const
  bool send;
  int64_t axis;
  int64_t peer;
  int64_t numel;
  std::string unit = {};
  int64_t microbatch = -1; // -1: a unit of the step
  int64_t slot = 0;
};

/// What a stage does in one step, as the blocking simulation sees it (the
/// executor's semantics, runtime/exec/executor.h): a send is posted and does not
/// block; a recv blocks until its send is posted; before a run on slot k the
/// sends posted from slot k must have been received; before the first unit of the
/// step, and at the end of each, every posted send must have been.
struct Event {
  enum Kind { kSend, kRecv, kWaitSlot, kWaitAll } kind;
  const PointToPoint *p2p = nullptr; // kSend, kRecv
  int64_t slot = 0;                   // kWaitSlot
  std::string where;                  // the run, for messages
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
  // The step as the deadlock simulation sees it.
  std::vector<Event> events;
};

/// A run's activation slot, one number per (chunk, slot): each virtual chunk has
/// slots of its own (the runtime keys its pending sends the same way).
constexpr int64_t kSlotsPerChunk = 1 << 20;
int64_t slotKey(plan_ir::RunOp run) {
  return (run.getChunkAttr() ? run.getChunkAttr().getInt() : 0) * kSlotsPerChunk +
         (run.getSlotAttr() ? run.getSlotAttr().getInt() : 0);
}
std::string slotName(int64_t key) {
  std::string s = "slot " + std::to_string(key % kSlotsPerChunk);
  if (key >= kSlotsPerChunk)
    s += " of chunk " + std::to_string(key / kSlotsPerChunk);
  return s;
}

/// "unit "backward" of microbatch 3" or "unit "tied"".
std::string runName(StringRef unit, int64_t microbatch) {
  std::string s = "unit \"" + unit.str() + "\"";
  if (microbatch >= 0)
    s += " of microbatch " + std::to_string(microbatch);
  return s;
}

struct CheckCollectivesPass : impl::CheckCollectivesPassBase<CheckCollectivesPass> {
  using CheckCollectivesPassBase::CheckCollectivesPassBase;

  /// Lists `program`'s collectives and sends/recvs of one step: its schedule's
  /// runs in order, each unit's kernels per run, a bucket only in its unit's
  /// last run of the step.
  LogicalResult expand(plan_ir::ProgramOp program, const int64_t size[], Program &p) {
    auto schedules = program.getBody().front().getOps<plan_ir::ScheduleOp>();
    if (schedules.empty())
      return program.emitError("the program has no plan.schedule (run heiretsu-schedule "
                               "first): its collectives are those of its schedule's runs");
    llvm::StringMap<plan_ir::UnitOp> units;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      units[unit.getName()] = unit;
    SmallVector<plan_ir::UnitOp> runs;
    SmallVector<plan_ir::RunOp> runOps;
    for (auto run : (*schedules.begin()).getBody().front().getOps<plan_ir::RunOp>()) {
      runs.push_back(units.lookup(run.getUnit()));
      runOps.push_back(run);
    }
    DenseMap<Operation *, size_t> lastRun;
    for (auto [i, unit] : llvm::enumerate(runs))
      lastRun[unit] = i;
    // Per run, the indices of its sends and recvs in p.p2p (which must not move
    // while the events point into it: filled first, events after).
    std::vector<std::vector<size_t>> runP2p(runs.size());
    for (auto [i, unit] : llvm::enumerate(runs)) {
      plan_ir::RunOp run = runOps[i];
      const int64_t microbatch = run.getMicrobatchAttr() ? run.getMicrobatchAttr().getInt() : -1;
      const int64_t slot = slotKey(run);
      for (auto k : unit.getBody().front().getOps<plan_ir::KernelOp>()) {
        if (std::optional<PointToPoint> x = pointToPointOf(k)) {
          const char *what = x->send ? "send" : "recv";
          if (x->axis != plan::kAxisPp)
            return k.emitError() << what << " over " << plan::AxisName(x->axis) << ": only "
                                 << what << "s between pipeline stages (axis pp) are built";
          x->unit = unit.getName().str();
          x->microbatch = microbatch;
          x->slot = slot;
          runP2p[i].push_back(p.p2p.size());
          p.p2p.push_back(*x);
          continue;
        }
        std::optional<Collective> c = collectiveOf(k);
        if (!c)
          continue;
        if (isBucket(k) && i != lastRun[unit])
          continue; // once per step, in its unit's last run
        if (c->parts >= 0 && c->parts != size[c->axis])
          return k.emitError() << k.getName() << " expects a group of " << c->parts
                               << " ranks but its group over " << plan::AxisName(c->axis)
                               << " has " << size[c->axis];
        p.byAxis[c->axis].push_back(*c);
      }
    }
    bool stepStarted = false;
    for (auto [i, unit] : llvm::enumerate(runs)) {
      plan_ir::RunOp run = runOps[i];
      const int64_t microbatch = run.getMicrobatchAttr() ? run.getMicrobatchAttr().getInt() : -1;
      std::string where = runName(unit.getName(), microbatch);
      if (unit.isPerMicrobatch())
        p.events.push_back({Event::kWaitSlot, nullptr, slotKey(run), where});
      else if (!std::exchange(stepStarted, true))
        p.events.push_back({Event::kWaitAll, nullptr, 0, where});
      for (size_t j : runP2p[i])
        p.events.push_back({p.p2p[j].send ? Event::kSend : Event::kRecv, &p.p2p[j], 0, where});
      if (!unit.isPerMicrobatch())
        p.events.push_back({Event::kWaitAll, nullptr, 0, where});
    }
    p.events.push_back({Event::kWaitAll, nullptr, 0, "the end of the step"});
    for (const PointToPoint &x : p.p2p)
      if (x.peer >= size[plan::kAxisPp] || x.peer == p.stage)
        return x.k.emitError() << (x.send ? "send to" : "recv from") << " stage " << x.peer
                               << " of stage " << p.stage << ": the peer must be another of the "
                               << size[plan::kAxisPp] << " stages (pp)";
    return success();
  }

  /// Every send from stage a to stage b has its recv on b from a, in the same order,
  /// of the same microbatch and element count, and the other way round.
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
        if (sends.size() != recvs.size()) {
          plan_ir::ProgramOp where = sends.size() > recvs.size() ? a.op : b.op;
          return where.emitError() << "stage " << from << " sends " << sends.size()
                                   << " buffers per step to stage " << to << ", which receives "
                                   << recvs.size() << " from it";
        }
        for (size_t i = 0; i < std::min(sends.size(), recvs.size()); ++i) {
          if (sends[i]->microbatch != recvs[i]->microbatch) {
            InFlightDiagnostic d = sends[i]->k.emitError()
                                   << "send #" << i + 1 << " from stage " << from << " to stage "
                                   << to << " (" << runName(sends[i]->unit, sends[i]->microbatch)
                                   << ") is received by stage " << to << "'s "
                                   << runName(recvs[i]->unit, recvs[i]->microbatch)
                                   << ": the stages' schedules disagree on the order of the "
                                      "microbatches";
            d.attachNote(recvs[i]->k.getLoc()) << "the recv is here";
            return failure();
          }
          if (sends[i]->numel != recvs[i]->numel) {
            InFlightDiagnostic d = sends[i]->k.emitError()
                                   << "send #" << i + 1 << " from stage " << from << " to stage "
                                   << to << " (" << runName(sends[i]->unit, sends[i]->microbatch)
                                   << ") has " << sends[i]->numel
                                   << " elements but its recv on stage " << to << " ("
                                   << runName(recvs[i]->unit, recvs[i]->microbatch) << ") has "
                                   << recvs[i]->numel;
            d.attachNote(recvs[i]->k.getLoc()) << "the recv is here";
            return failure();
          }
        }
      }
    return success();
  }

  /// Runs every stage's step under the executor's semantics (Event) until all
  /// finish; a state where some cannot go on is a deadlock, reported at the op the
  /// first blocked stage waits in, naming what every blocked stage waits for.
  /// The pairing (numbers, sizes) is matchPointToPoint's, checked before.
  LogicalResult simulate(std::map<int64_t, Program> &programs) {
    struct Channel { // the sends from one stage to another, in posting order
      std::vector<const PointToPoint *> posted;
      size_t received = 0;
    };
    std::map<std::pair<int64_t, int64_t>, Channel> channels;
    struct Pending {
      Channel *channel;
      size_t index;
      int64_t slot; // -1: of a unit of the step
    };
    struct State {
      size_t pc = 0;
      std::vector<Pending> pending;
    };
    std::map<int64_t, State> states;
    auto delivered = [](const Pending &x) { return x.index < x.channel->received; };
    bool progress = true;
    while (progress) {
      progress = false;
      for (auto &[stage, program] : programs) {
        State &st = states[stage];
        while (st.pc < program.events.size()) {
          const Event &e = program.events[st.pc];
          if (e.kind == Event::kSend) {
            Channel &c = channels[{stage, e.p2p->peer}];
            st.pending.push_back({&c, c.posted.size(), e.p2p->microbatch >= 0 ? e.p2p->slot : -1});
            c.posted.push_back(e.p2p);
          } else if (e.kind == Event::kRecv) {
            Channel &c = channels[{e.p2p->peer, stage}];
            if (c.received >= c.posted.size())
              break;
            ++c.received;
          } else {
            bool ready = true;
            for (const Pending &x : st.pending)
              if ((e.kind == Event::kWaitAll || x.slot == e.slot) && !delivered(x))
                ready = false;
            if (!ready)
              break;
            llvm::erase_if(st.pending, delivered);
          }
          ++st.pc;
          progress = true;
        }
      }
    }
    std::string why;
    plan_ir::KernelOp at;
    plan_ir::ProgramOp atProgram;
    for (auto &[stage, program] : programs) {
      const State &st = states[stage];
      if (st.pc == program.events.size())
        continue;
      const Event &e = program.events[st.pc];
      std::string what;
      if (e.kind == Event::kRecv) {
        what = "waits in a recv from stage " + std::to_string(e.p2p->peer);
        if (!at)
          at = e.p2p->k;
      } else {
        std::set<int64_t> peers;
        for (const Pending &x : st.pending)
          if ((e.kind == Event::kWaitAll || x.slot == e.slot) && !delivered(x))
            peers.insert(x.channel->posted[x.index]->peer);
        what = "waits for its sends to stage";
        for (int64_t q : peers)
          what += " " + std::to_string(q);
        what += e.kind == Event::kWaitSlot ? " from " + slotName(e.slot) + " to be received"
                                           : " to be received";
        if (!atProgram)
          atProgram = program.op;
      }
      why += (why.empty() ? "" : "; ") + ("stage " + std::to_string(stage) + " " + what +
                                         " before " + e.where);
    }
    if (why.empty())
      return success();
    InFlightDiagnostic d = at ? at.emitError() : atProgram.emitError();
    d << "the pipeline schedule deadlocks (sends posted, recvs blocking): " << why;
    return failure();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    dist::MeshOp mesh = requireMesh(module, "heiretsu-check-collectives");
    if (!mesh)
      return signalPassFailure();
    const int64_t size[plan::kNumAxes] = {
        static_cast<int64_t>(mesh.getDp()), static_cast<int64_t>(mesh.getPp()),
        static_cast<int64_t>(mesh.getTp()), static_cast<int64_t>(mesh.getEp()),
        static_cast<int64_t>(mesh.getDp()) * static_cast<int64_t>(mesh.getEp())};
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
    if (failed(matchPointToPoint(programs)) || failed(simulate(programs)))
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
