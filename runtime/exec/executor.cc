// Executor of a verified plan; see executor.h. The instructions themselves run on
// the backend (backend.h); collectives and point-to-point transfers are the
// executor's (they need the job's communicators).
#include "runtime/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "runtime/init/init.h"
#include "runtime/plan/layout.h"
#include "runtime/plan/ops.h"

namespace heiretsu::exec {

namespace fb = plan::fb;
namespace op = plan::op;

Executor::Executor(const plan::LoadedPlan& plan, std::unique_ptr<Backend> backend, int rank)
    : plan_(plan),
      backend_(backend ? std::move(backend) : MakeCpuBackend()),
      coords_(plan::CoordinatesOf(*plan.plan, rank)),
      schedule_(plan::ScheduleOf(*plan.plan)),
      units_(plan::PrepareUnits(*plan.plan, coords_)) {
  for (uint32_t slot = 0; slot < plan_.plan->slots(); ++slot)
    offsets_.push_back(plan::SlotOffsets(*plan_.plan, slot));
  // Per unit: which of the microbatch's inputs it reads and whether it writes the
  // loss (with virtual chunks only the first chunk's forward takes the tokens and
  // the last's the targets and the loss). Pending sends are kept per (chunk, slot).
  const fb::Plan& p = *plan_.plan;
  uint32_t chunks = 1;
  for (size_t u = 0; u < units_.size(); ++u) {
    chunks = std::max(chunks, static_cast<uint32_t>(p.units()->Get(u)->chunk()) + 1);
    auto touches = [&](uint32_t buffer) {
      if (!plan::Has(buffer)) return false;
      for (const plan::Instruction& instr : units_[u])
        if (std::find(instr.buffers.begin(), instr.buffers.end(), buffer) != instr.buffers.end())
          return true;
      return false;
    };
    unit_io_.push_back({touches(p.tokens()), touches(p.targets()), touches(p.loss())});
  }
  sending_.resize(static_cast<size_t>(p.slots()) * chunks);
  reduced_.resize(p.buffers()->size());
  PlanFirstWrites();
  arena_ = backend_->AllocateArena(plan_.plan->arena_bytes());
  if (!arena_) throw std::bad_alloc();
  backend_->Reserve(p, units_);
  view_ = arena_;
  if (!backend_->host_visible()) {  // staged through a host copy of the arena
    host_.assign(plan_.plan->arena_bytes(), 0);
    view_ = host_.data();
  }
}

Executor::~Executor() { backend_->FreeArena(arena_); }

Status Executor::ShareArena(comm::Communicator& communicator, std::string* why_not) {
  const bool host = view_ == arena_;
  if (auto err = communicator.ShareArena(host ? arena_ : nullptr, plan_.plan->arena_bytes(),
                                         host ? backend_->ArenaFd(arena_) : -1, why_not))
    return err;
  for (int axis = 0; axis < plan::kNumAxes; ++axis)
    if (comms_[axis] == &communicator) {
      if (auto err = PlanMirroredUpdates(axis)) return err;
      if (auto err = PlanSplitNorms(axis)) return err;
      if (auto err = PlanSplitUpdates(axis)) return err;
      if (auto err = PlanSharedParameters(axis)) return err;
      if (auto err = PlanSplitReduces(axis)) return err;
      return PlanDirectReduceScatters(axis);
    }
  return std::nullopt;
}

// Every member's copy of each of `buffers` (Communicator::MapOperand, a call of the
// whole group): *mapped says whether all of them lie in every member's arena (the
// same verdict on every member).
Status Executor::MapBuffers(comm::Communicator& c, const std::vector<uint32_t>& buffers,
                            std::vector<std::vector<float*>>* copies, bool* mapped) {
  copies->assign(buffers.size(), {});
  *mapped = true;
  for (size_t k = 0; k < buffers.size(); ++k) {
    const int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(buffers[k]));
    if (auto err = c.MapOperand(F32(buffers[k]), static_cast<size_t>(n), &(*copies)[k]))
      return err;
    *mapped = *mapped && !(*copies)[k].empty();
  }
  return std::nullopt;
}

// Whether every member of `c` found `ok` (one all_reduce) and every one of
// `buffers` lies in every member's arena (MapBuffers, *copies): *agreed, the same
// verdict on every member.
Status Executor::AgreeAndMap(comm::Communicator& c, bool ok, const std::vector<uint32_t>& buffers,
                             std::vector<std::vector<float*>>* copies, bool* agreed) {
  float refused = ok ? 0.f : 1.f;
  if (auto err = c.AllReduce(&refused, 1, comm::ReduceOp::kMax)) return err;
  *agreed = false;
  if (refused > 0) return std::nullopt;
  return MapBuffers(c, buffers, copies, agreed);
}

// The reduce-scatters over `axis`, when the group's members share their arenas: each
// buffer of a reduce_scatter or bucket_reduce_scatter that lies in every member's
// arena (MapOperand: the same verdict on every member; an instruction goes direct
// only if all of its buffers do) is summed by the executor itself, one barrier of
// the group first (every member's gradients are complete), then this member's shard
// from every member's copy, in member order, as the communicator would
// (Backend::SumCopies), its sum of squares computed on the way. No barrier after: a
// member reads only its own shard of the others' copies and writes only its own
// shard of its own, and the later collectives of the step on the group (the
// sharded norm's all_reduce, the all_gather) order those reads before the next
// step's writes. A grad_norm_sq over buffers that nothing else in the step's units
// touches before it may then take those sums (norm_from_reduce).
Status Executor::PlanDirectReduceScatters(int axis) {
  comm::Communicator* c = comms_[axis];
  if (!c || c->size() == 1 || view_ != arena_ || backend_->ArenaFd(arena_) < 0)
    return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  for (size_t u = 0; u < units_.size(); ++u)
    for (size_t i = 0; i < units_[u].size(); ++i) {
      plan::Instruction& instr = units_[u][i];
      if ((instr.op != fb::Op_ReduceScatter && instr.op != fb::Op_BucketReduceScatter) ||
          instr.axis != axis)
        continue;
      const auto rs = plan::Read<op::ReduceScatter<uint32_t>>(instr);
      if (rs.reduce == plan::kReduceMax) continue;  // the same on every member
      std::vector<std::vector<float*>> copies;
      bool mapped = false;
      if (auto err = MapBuffers(*c, rs.buffers, &copies, &mapped)) return err;
      if (!mapped) continue;
      for (size_t k = 0; k < rs.buffers.size(); ++k) {
        const int64_t n = plan::NumElements(*p.buffers()->Get(rs.buffers[k]));
        const int64_t begin = plan::ShardOf(n, c->rank(), c->size()).begin;
        for (float*& copy : copies[k]) copy += begin;  // this member's shard of each
      }
      // The unit's first run of the step may run its copy (PlanFirstWrites).
      if (!first_units_[u].empty()) first_units_[u][i].copies = copies;
      instr.copies = std::move(copies);
      direct_reduced_[axis] += static_cast<int>(rs.buffers.size());
    }
  // The norms: in schedule order, the buffers touched so far by the step's units
  // other than by direct reduce-scatters.
  std::vector<bool> touched(p.buffers()->size(), false);
  for (const plan::ScheduledRun& run : schedule_) {
    if (plan::PerMicrobatch(run.unit->kind())) continue;
    for (plan::Instruction& instr : units_[run.run->unit()]) {
      if (instr.op == fb::Op_GradNormSq) {
        const auto norm = plan::Read<op::GradNormSq<uint32_t>>(instr);
        instr.norm_from_reduce = norm.sharded == 1 && !instr.buffers.empty();
        for (uint32_t b : instr.buffers)
          instr.norm_from_reduce = instr.norm_from_reduce && plan::Has(b) && !touched[b];
        if (instr.norm_from_reduce && direct_reduced_[axis]) direct_norm_[axis] = true;
      }
      if (instr.copies.empty())
        for (uint32_t b : instr.buffers)
          if (plan::Has(b)) touched[b] = true;
    }
  }
  return std::nullopt;
}

std::string Executor::DirectSummary(int axis) const {
  auto join = [](std::string& to, const char* sep, const std::string& part) {
    to += (to.empty() ? "" : sep) + part;
  };
  const std::string copies = shared_params_[axis] ? "the group's one copy of them"
                                                  : "every member's copies";
  std::string parts;
  if (direct_reduced_[axis] || mirrored_params_[axis]) {
    if (direct_reduced_[axis])
      join(parts, ", ", "reduce_scatter of " + std::to_string(direct_reduced_[axis]) +
                            " gradients" + (direct_norm_[axis] ? " (with their norm)" : ""));
    if (mirrored_params_[axis])
      join(parts, ", ", "all_gather of " + std::to_string(mirrored_params_[axis]) +
                            " parameters written by the update into " + copies);
    return "ZeRO-1 between the arenas: " + parts;
  }
  if (split_reduced_[axis])
    join(parts, "; ", "each member's part of the all_reduce of " +
                          std::to_string(split_reduced_[axis]) +
                          " gradients summed between the arenas (with its norm)");
  if (split_params_[axis])
    join(parts, "; ", "the AdamW of " + std::to_string(split_params_[axis]) +
                          " parameters split over the group, each part written into " + copies);
  if (split_norms_[axis]) join(parts, "; ", "the gradient norm split over the group");
  return parts;
}

// A direct reduce-scatter (PlanDirectReduceScatters): this member's shard of each
// buffer, summed from every member's copy; its sum of squares kept for the norm.
Status Executor::DirectReduceScatter(const plan::Instruction& instr, comm::Communicator& c) {
  const auto rs = plan::Read<op::ReduceScatter<uint32_t>>(instr);
  if (auto err = c.Barrier()) return err->Within(plan::OpName(instr.op));
  for (size_t k = 0; k < rs.buffers.size(); ++k) {
    const uint32_t b = rs.buffers[k];
    const int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(b));
    const plan::Shard mine = plan::ShardOf(n, c.rank(), c.size());
    ReducedSum& kept = reduced_[b];
    if (auto err = backend_->SumCopies(instr.copies[k].data(), c.size(), F32(b) + mine.begin,
                                       mine.size, rs.reduce == plan::kReduceAvg, &kept.sum))
      return err;
    kept.serial = step_serial_, kept.begin = mine.begin, kept.size = mine.size;
  }
  return std::nullopt;
}

// ZeRO-1's all_gather of the updated parameters, done by the update itself. An
// all_gather over `axis` in a unit of the step qualifies when each of its buffers is
// the parameter of exactly one clip_adamw before it in the unit, which updates this
// rank's shard of it in the group (plan::ShardOf), and no other instruction between
// the first of those and the all_gather touches the buffers; every member must find
// its all_gather so (one all_reduce), and every buffer must lie in every member's
// arena (Communicator::MapOperand, the same verdict on every member). Then each of
// those clip_adamw also writes its shard into the other members' copies (mirrors);
// RunUnitBody runs a barrier of the group before the first of them in the step (every
// member is done reading its parameters), and the all_gather becomes a barrier (no
// member reads a parameter before every shard is in). The result is bitwise the
// all_gather's: the same values, copied by whoever computed them.
Status Executor::PlanMirroredUpdates(int axis) {
  comm::Communicator* c = comms_[axis];
  if (!c || c->size() == 1) return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  for (size_t u = 0; u < units_.size(); ++u) {
    if (plan::PerMicrobatch(p.units()->Get(u)->kind())) continue;
    std::vector<plan::Instruction>& instrs = units_[u];
    for (size_t g = 0; g < instrs.size(); ++g) {
      plan::Instruction& gather = instrs[g];
      if (gather.op != fb::Op_AllGather || gather.axis != axis) continue;
      const auto ag = plan::Read<op::AllGather<uint32_t>>(gather);
      std::vector<size_t> updates;  // per gathered buffer, its clip_adamw
      bool ok = true;
      for (uint32_t b : ag.buffers) {
        size_t found = g;
        for (size_t i = 0; i < g && ok; ++i) {
          if (instrs[i].op != fb::Op_ClipAndAdamW) continue;
          const auto update = plan::Read<op::ClipAndAdamW<uint32_t>>(instrs[i]);
          if (update.param != b) continue;
          const plan::Shard mine = plan::ShardOf(update.n, c->rank(), c->size());
          ok = found == g && update.shard > 0 && update.begin == mine.begin &&
               update.size == mine.size;
          found = i;
        }
        if (!ok || found == g) {
          ok = false;
          break;
        }
        updates.push_back(found);
      }
      if (ok) {
        const size_t first = *std::min_element(updates.begin(), updates.end());
        for (size_t i = first; i < g && ok; ++i)
          if (std::find(updates.begin(), updates.end(), i) == updates.end())
            for (uint32_t b : instrs[i].buffers)
              ok = ok && std::find(ag.buffers.begin(), ag.buffers.end(), b) == ag.buffers.end();
      }
      std::vector<std::vector<float*>> peers;
      bool agreed = false;
      if (auto err = AgreeAndMap(*c, ok, ag.buffers, &peers, &agreed)) return err;
      if (!agreed) continue;
      for (size_t k = 0; k < ag.buffers.size(); ++k) {
        plan::Instruction& update = instrs[updates[k]];
        const int64_t begin = plan::Read<op::ClipAndAdamW<uint32_t>>(update).begin;
        update.mirrors.clear();
        for (int r = 0; r < c->size(); ++r)
          if (r != c->rank()) update.mirrors.push_back(peers[k][static_cast<size_t>(r)] + begin);
        update.mirror_axis = axis;
      }
      gather.mirrored = true;
      mirrored_params_[axis] += static_cast<int>(ag.buffers.size());
    }
  }
  return std::nullopt;
}

// A split clip_adamw's part for member `member`: the part of its gradient the
// member's split norm sums (SplitPart), else plan::ShardOf over the group.
plan::Shard Executor::UpdatePart(const plan::Instruction& update, int member) const {
  const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(update);
  if (std::optional<plan::Shard> part = SplitPart(u.grad, member)) return *part;
  return plan::ShardOf(u.n, member, comms_[plan::kAxisDp]->size());
}

// Plain data parallelism (no ZeRO-1) over members that share their arenas: every
// member holds the whole parameters and moments and would apply the same AdamW to
// all of them, from the same all-reduced gradients. Instead, in each unit of the
// step, the clip_adamw over whole moments whose parameter and moments lie in every
// member's arena (MapOperand) update this member's part of them only (UpdatePart:
// the instruction's range narrowed), writing the new parameter into every other
// member's copies too (or only into the group's one copy: PlanSharedParameters):
// the same bits each would have computed. Each member's
// moments are then current in its own parts only; PullState copies the others'
// parts from their arenas (moment_syncs_) when the state is read. A barrier of the
// group comes before the first of them in the step (every member is done reading
// its parameters) and one after the last (every part is in before anything reads
// them, PullState included); nothing else between them may touch those buffers.
// Only over dp, whose members hold the same parameter blocks.
Status Executor::PlanSplitUpdates(int axis) {
  comm::Communicator* c = comms_[axis];
  if (axis != plan::kAxisDp || !c || c->size() == 1) return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  for (size_t u = 0; u < units_.size(); ++u) {
    if (plan::PerMicrobatch(p.units()->Get(u)->kind())) continue;
    std::vector<plan::Instruction>& instrs = units_[u];
    std::vector<size_t> updates;
    std::vector<uint32_t> state;  // their parameters and moments
    for (size_t i = 0; i < instrs.size(); ++i)
      if (instrs[i].op == fb::Op_ClipAndAdamW && instrs[i].mirrors.empty()) {
        const auto update = plan::Read<op::ClipAndAdamW<uint32_t>>(instrs[i]);
        if (update.shard != 0) continue;
        updates.push_back(i);
        state.insert(state.end(), {update.param, update.exp_avg, update.exp_avg_sq});
      }
    if (updates.empty()) continue;  // the same on every member: the same program
    bool ok = true;
    for (size_t i = updates.front(); i < updates.back() && ok; ++i)
      if (std::find(updates.begin(), updates.end(), i) == updates.end())
        for (uint32_t b : instrs[i].buffers)
          ok = ok && std::find(state.begin(), state.end(), b) == state.end();
    std::vector<std::vector<float*>> copies;
    bool agreed = false;
    if (auto err = AgreeAndMap(*c, ok, state, &copies, &agreed)) return err;
    if (!agreed) continue;
    for (size_t k = 0; k < updates.size(); ++k) {
      plan::Instruction& update = instrs[updates[k]];
      const plan::Shard part = UpdatePart(update, c->rank());
      update.resolved = {part.begin, part.size};  // op_table.h: RES(begin) RES(size)
      update.mirrors.clear();
      for (int r = 0; r < c->size(); ++r) {
        if (r == c->rank()) continue;
        update.mirrors.push_back(copies[3 * k][static_cast<size_t>(r)] + part.begin);
        // Member r's part of the moments, for PullState.
        const plan::Shard theirs = UpdatePart(update, r);
        for (size_t moment : {3 * k + 1, 3 * k + 2}) {
          const float* from = copies[moment][static_cast<size_t>(r)];
          if (theirs.size > 0)
            moment_syncs_.push_back({from + theirs.begin,
                                     copies[moment][static_cast<size_t>(c->rank())] + theirs.begin,
                                     theirs.size});
        }
      }
      update.mirror_axis = axis;
    }
    instrs[updates.back()].mirror_sync_after = true;
    split_params_[axis] += static_cast<int>(updates.size());
  }
  return std::nullopt;
}

// One copy of the parameters for a dp group whose members share their arenas, when
// each member's updates write only its part of them into every member's copies
// (PlanSplitUpdates; ZeRO-1's PlanMirroredUpdates): every member then reads and
// updates member 0's copy (its offset tables point there: Backend::BufferAt), each
// update writes its part once instead of into every copy, and the members' passes
// read the same memory instead of one copy each. A parameter qualifies when every
// instruction of the plan that writes it or moves it is such an update (mirroring
// into every other member) or a mirrored all_gather; kernels only read parameters.
// The barriers around the updates stay: no member writes its part before every
// member is done reading, none reads before every part is in. Every member still
// initializes the parameters, writing the same values into the one copy before any
// update writes it (the updates' first barrier); a checkpoint loads them through
// member 0 alone (Borrowed). The members' own copies stay in their arenas, unused.
Status Executor::PlanSharedParameters(int axis) {
  comm::Communicator* c = comms_[axis];
  if (axis != plan::kAxisDp || !c || c->size() == 1 || view_ != arena_) return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  std::vector<bool> refused(p.buffers()->size(), false);
  const size_t others = static_cast<size_t>(c->size() - 1);
  for (const std::vector<plan::Instruction>& unit : units_)
    for (const plan::Instruction& instr : unit) {
      if (instr.op == fb::Op_ClipAndAdamW) {
        const uint32_t b = plan::Read<op::ClipAndAdamW<uint32_t>>(instr).param;
        if (instr.mirror_axis != axis || instr.mirrors.size() != others) refused[b] = true;
        continue;
      }
      if (!instr.axis || (instr.op == fb::Op_AllGather && instr.mirrored && instr.axis == axis))
        continue;
      for (uint32_t b : instr.buffers)
        if (plan::Has(b)) refused[b] = true;
    }
  std::vector<uint32_t> shared;
  for (const fb::Param* each : *p.params())
    if (!refused[each->value()]) shared.push_back(each->value());
  // The same list on every member (the same program, the same planned updates).
  float count[2] = {static_cast<float>(shared.size()), -static_cast<float>(shared.size())};
  if (auto err = c->AllReduce(count, 2, comm::ReduceOp::kMax)) return err;
  if (shared.empty() || count[0] != -count[1]) return std::nullopt;
  std::vector<std::vector<float*>> copies;
  bool mapped = false;
  if (auto err = MapBuffers(*c, shared, &copies, &mapped)) return err;
  if (!mapped) return std::nullopt;
  std::vector<bool> one(p.buffers()->size(), false);
  for (size_t k = 0; k < shared.size(); ++k) {
    const uint64_t offset =
        reinterpret_cast<uintptr_t>(copies[k][0]) - reinterpret_cast<uintptr_t>(arena_);
    for (std::vector<uint64_t>& table : offsets_) table[shared[k]] = offset;
    one[shared[k]] = true;
    if (c->rank() != 0) borrowed_.push_back(copies[k][0]);
  }
  for (std::vector<plan::Instruction>& unit : units_)
    for (plan::Instruction& instr : unit)
      if (instr.op == fb::Op_ClipAndAdamW &&
          one[plan::Read<op::ClipAndAdamW<uint32_t>>(instr).param])
        instr.mirrors.clear();  // its part is written once, into the one copy
  shared_params_[axis] = static_cast<int>(shared.size());
  return std::nullopt;
}

// Plain dp's gradient norm split over the group: every member holds the same
// summed gradients (or at least its part of them: PlanSplitReduces), so each
// grad_norm_sq in a unit of the step has each member sum the squares of its runs
// of the buffers' chunks (SplitOf; Backend::SumSquareChunks, or the sums its
// split reduce kept), the members all_gather those partial sums, and every member
// adds up each buffer's in order: the bits the backend's own sum gives. Any
// transport; a backend that sums otherwise (square_chunk() == 0) keeps its own. A
// buffer that lies whole in exactly one such norm has its run in that norm as its
// split part (SplitPart), which the split updates and reduces then use too.
// A split grad_norm_sq's chunks of `chunk` elements, buffer by buffer (of its
// ranges), divided among `members`: each buffer's cut into contiguous runs in
// member order, as even as they go, its one-chunk-longer runs going to members i,
// i + 1, ... (mod members) for buffer i, so that every member gets about its share
// of every bucket's elements.
Executor::NormSplit Executor::SplitOf(const plan::Instruction& instr, int64_t chunk,
                                      int members) {
  NormSplit split{&instr, 0, std::vector<std::vector<ChunkShare>>(static_cast<size_t>(members))};
  for (int m = 0; m < members; ++m) {
    std::vector<ChunkShare>& shares = split.members[static_cast<size_t>(m)];
    shares.resize(instr.buffers.size());
    int64_t length = 0;
    for (size_t i = 0; i < instr.buffers.size(); ++i) {
      const int64_t chunks = (instr.ranges[i].size + chunk - 1) / chunk;
      const int rotation = static_cast<int>(i % static_cast<size_t>(members));
      auto run = [&](int r) {
        return chunks / members + ((r - rotation + members) % members < chunks % members ? 1 : 0);
      };
      ChunkShare& s = shares[i];
      for (int r = 0; r < m; ++r) s.first += run(r);
      s.count = run(m);
      s.partial = length;
      length += s.count;
    }
    split.share = std::max(split.share, length);
  }
  return split;
}

Status Executor::PlanSplitNorms(int axis) {
  comm::Communicator* c = comms_[axis];
  const int64_t chunk = backend_->square_chunk();
  if (axis != plan::kAxisDp || !c || c->size() == 1 || chunk <= 0 || view_ != arena_)
    return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  int64_t most = 0;  // the most partial sums of any member in any instruction
  split_part_of_.assign(p.buffers()->size(), {});
  std::vector<int> norms(p.buffers()->size(), 0);  // the split norms over each buffer
  for (size_t u = 0; u < units_.size(); ++u) {
    if (plan::PerMicrobatch(p.units()->Get(u)->kind())) continue;
    for (plan::Instruction& instr : units_[u]) {
      if (instr.op != fb::Op_GradNormSq || plan::Read<op::GradNormSq<uint32_t>>(instr).sharded)
        continue;
      norm_splits_.push_back(SplitOf(instr, chunk, c->size()));
      most = std::max(most, norm_splits_.back().share);
      instr.split_norm_axis = axis;
      ++split_norms_[axis];
      const int32_t split = static_cast<int32_t>(norm_splits_.size() - 1);
      for (size_t i = 0; i < instr.buffers.size(); ++i) {
        const uint32_t b = instr.buffers[i];
        if (!plan::Has(b)) continue;
        const bool whole = instr.ranges[i].begin == 0 &&
                           instr.ranges[i].size == plan::NumElements(*p.buffers()->Get(b));
        split_part_of_[b] = ++norms[b] == 1 && whole ? SplitPartOf{split, i} : SplitPartOf{};
      }
    }
  }
  norm_mine_.assign(static_cast<size_t>(most), 0.0);
  norm_parts_.assign(static_cast<size_t>(most) * static_cast<size_t>(c->size()), 0.0);
  return std::nullopt;
}

std::optional<plan::Shard> Executor::SplitPart(uint32_t buffer, int member) const {
  if (!plan::Has(buffer) || buffer >= split_part_of_.size() || split_part_of_[buffer].split < 0)
    return std::nullopt;
  const SplitPartOf of = split_part_of_[buffer];
  const NormSplit& split = norm_splits_[static_cast<size_t>(of.split)];
  const ChunkShare& s = split.members[static_cast<size_t>(member)][of.index];
  const int64_t chunk = backend_->square_chunk(), size = split.norm->ranges[of.index].size;
  const int64_t begin = std::min(size, s.first * chunk);
  return plan::Shard{begin, std::min(size - begin, s.count * chunk)};
}

Status Executor::SplitNorm(const plan::Instruction& instr, StepScalars& scalars) {
  comm::Communicator& c = *comms_[instr.split_norm_axis];
  const NormSplit& split = *std::find_if(norm_splits_.begin(), norm_splits_.end(),
                                         [&](const NormSplit& s) { return s.norm == &instr; });
  // This member's runs, buffer by buffer: those its split reduce summed this step,
  // as it kept them; the others' here.
  double* mine = norm_mine_.data();
  for (size_t i = 0; i < instr.buffers.size(); ++i) {
    const ChunkShare& s = split.members[static_cast<size_t>(c.rank())][i];
    if (!s.count) continue;
    const uint32_t b = instr.buffers[i];
    if (b < split_sums_.size() && split_sums_[b].serial == step_serial_ &&
        split_sums_[b].sums.size() == static_cast<size_t>(s.count)) {
      std::copy(split_sums_[b].sums.begin(), split_sums_[b].sums.end(), mine + s.partial);
      continue;
    }
    const plan::Shard& range = instr.ranges[i];
    backend_->SumSquareChunks(F32(b) + range.begin, range.size, s.first, s.count, mine + s.partial);
  }
  static_assert(sizeof(double) == 2 * sizeof(float));
  if (auto err = c.AllGather(reinterpret_cast<const float*>(norm_mine_.data()),
                             reinterpret_cast<float*>(norm_parts_.data()),
                             static_cast<size_t>(2 * split.share)))
    return err->Within("grad_norm_sq");
  // Member m's partial sums from m * share on; each buffer's chunks in order are
  // member 0's run, then member 1's, ...
  for (size_t i = 0; i < instr.buffers.size(); ++i) {
    double total = 0;
    for (size_t r = 0; r < split.members.size(); ++r) {
      const ChunkShare& s = split.members[r][i];
      const double* run = norm_parts_.data() + r * static_cast<size_t>(split.share) + s.partial;
      for (int64_t k = 0; k < s.count; ++k) total += run[k];
    }
    scalars.grad_norm_sq += total;
  }
  return std::nullopt;
}

// Plain dp's all-reduce of the gradients when the updates and the norm are split
// over members that share their arenas: each member reads only its part of each
// summed gradient (SplitPart: the part its split update reads and its split norm
// sums). So a bucket_all_reduce over the group (not a max) each of whose gradients
// has a split part, and is read in the step's units only by its split clip_adamw
// (over that part) and its split grad_norm_sq, and lies in every member's arena
// (MapOperand: the same verdict on every member), is run by the executor: one
// barrier of the group (every member's gradients are complete), then this member's
// part of each summed from every member's copy in member order, as the
// communicator's all_reduce sums it (Backend::SumCopies), chunk by chunk of the
// norm, whose sums of squares are kept for it (split_sums_). The rest of the buffer
// keeps this member's own gradient; nothing reads it. No barrier after: the loss's
// all_reduce over the group, after the buckets join, orders every member's reads
// of the others' copies before any member's next step writes them.
// ComputeGradients, whose result is the gradients, runs the all_reduce itself.
Status Executor::PlanSplitReduces(int axis) {
  comm::Communicator* c = comms_[axis];
  if (axis != plan::kAxisDp || !c || c->size() == 1 || view_ != arena_ ||
      backend_->ArenaFd(arena_) < 0 || !split_params_[axis] || !split_norms_[axis])
    return std::nullopt;
  const fb::Plan& p = *plan_.plan;
  // readable[b]: gradient b has a split part, and the step's units read it only
  // through its split update and its split norm.
  std::vector<bool> readable(p.buffers()->size(), false);
  for (const fb::Param* param : *p.params())
    readable[param->grad()] = SplitPart(param->grad(), c->rank()).has_value();
  for (size_t u = 0; u < units_.size(); ++u) {
    if (plan::PerMicrobatch(p.units()->Get(u)->kind())) continue;
    for (const plan::Instruction& instr : units_[u])
      for (uint32_t b : instr.buffers) {
        if (!plan::Has(b) || !readable[b]) continue;
        if (instr.op == fb::Op_GradNormSq && instr.split_norm_axis == axis &&
            norm_splits_[static_cast<size_t>(split_part_of_[b].split)].norm == &instr)
          continue;
        if (instr.op == fb::Op_ClipAndAdamW && instr.mirror_axis == axis) {
          const auto update = plan::Read<op::ClipAndAdamW<uint32_t>>(instr);
          const plan::Shard part = *SplitPart(b, c->rank());
          if (update.grad == b && update.begin == part.begin && update.size == part.size) continue;
        }
        readable[b] = false;
      }
  }
  split_sums_.assign(p.buffers()->size(), {});
  for (size_t u = 0; u < units_.size(); ++u)
    for (size_t i = 0; i < units_[u].size(); ++i) {
      plan::Instruction& instr = units_[u][i];
      if (instr.op != fb::Op_BucketAllReduce || instr.axis != axis) continue;
      const auto ar = plan::Read<op::AllReduce<uint32_t>>(instr);
      bool ok = ar.reduce != plan::kReduceMax;
      for (uint32_t b : ar.buffers) ok = ok && plan::Has(b) && readable[b];
      std::vector<std::vector<float*>> copies;
      bool agreed = false;
      if (auto err = AgreeAndMap(*c, ok, ar.buffers, &copies, &agreed)) return err;
      if (!agreed) continue;
      for (size_t k = 0; k < ar.buffers.size(); ++k) {
        SplitSums& kept = split_sums_[ar.buffers[k]];
        kept.part = *SplitPart(ar.buffers[k], c->rank());
        for (float*& copy : copies[k]) copy += kept.part.begin;  // this member's part of each
        const int64_t chunk = backend_->square_chunk();
        kept.sums.assign(static_cast<size_t>((kept.part.size + chunk - 1) / chunk), 0.0);
      }
      // The unit's first run of the step may run its copy (PlanFirstWrites).
      if (!first_units_[u].empty()) first_units_[u][i].copies = copies;
      instr.copies = std::move(copies);
      split_reduced_[axis] += static_cast<int>(ar.buffers.size());
    }
  chunk_copies_.resize(static_cast<size_t>(c->size()));
  return std::nullopt;
}

// A split reduce (PlanSplitReduces): this member's part of each buffer, summed
// from every member's copy, chunk by chunk of the norm, their sums of squares kept.
Status Executor::SplitAllReduce(const plan::Instruction& instr, comm::Communicator& c) {
  const auto ar = plan::Read<op::AllReduce<uint32_t>>(instr);
  if (auto err = c.Barrier()) return err->Within(plan::OpName(instr.op));
  const int64_t chunk = backend_->square_chunk();
  for (size_t k = 0; k < ar.buffers.size(); ++k) {
    const uint32_t b = ar.buffers[k];
    SplitSums& kept = split_sums_[b];
    const plan::Shard part = kept.part;
    for (int64_t at = 0, j = 0; at < part.size; at += chunk, ++j) {
      for (size_t r = 0; r < chunk_copies_.size(); ++r) chunk_copies_[r] = instr.copies[k][r] + at;
      if (auto err = backend_->SumCopies(chunk_copies_.data(), c.size(), F32(b) + part.begin + at,
                                         std::min(chunk, part.size - at),
                                         ar.reduce == plan::kReduceAvg,
                                         &kept.sums[static_cast<size_t>(j)]))
        return err;
    }
    kept.serial = step_serial_;
  }
  return std::nullopt;
}

float* Executor::F32(uint32_t buffer, uint32_t slot) {
  return reinterpret_cast<float*>(Backend::BufferAt(view_, offsets_[slot][buffer]));
}

int32_t* Executor::I32(uint32_t buffer, uint32_t slot) {
  return reinterpret_cast<int32_t*>(Backend::BufferAt(view_, offsets_[slot][buffer]));
}

namespace {
uint64_t BufferBytes(const fb::Buffer& b) {
  return static_cast<uint64_t>(plan::NumElements(b)) * plan::DTypeSize(b.dtype());
}

// An event of the trace (trace.h) from `start` to `end`, on the instructions' track
// unless said otherwise.
TraceEvent Span(TraceCategory category, const char* name, int64_t start, int64_t end,
                int tid = kTraceInstructions) {
  TraceEvent e;
  e.category = category;
  e.tid = tid;
  e.name = name;
  e.start_ns = start;
  e.end_ns = end;
  return e;
}
}  // namespace

// Which instruction first touches each gradient in a step: the microbatch runs in
// schedule order, each unit's instructions in order, each unit looked at in its
// first run (later runs repeat the same instructions). A gradient whose first
// toucher is a weight-gradient kernel that writes it (plan::WeightGradientsOf),
// touching no other gradient for the first time, is written there instead of being
// zeroed and added to; the backend must say it can (overwrites_weight_grads). Every
// other gradient, and all of them otherwise, is zeroed before the step. A gradient
// no microbatch run touches is zeroed too (a step unit may add to it).
void Executor::PlanFirstWrites() {
  const fb::Plan& p = *plan_.plan;
  first_units_.assign(units_.size(), {});
  // zero[b]: buffer b is a gradient the step must zero (all of them, until a first
  // writer that overwrites it is found).
  std::vector<bool> zero(p.buffers()->size(), false), touched(p.buffers()->size(), false);
  for (const fb::Param* param : *p.params()) zero[param->grad()] = true;
  std::vector<bool> seen(units_.size(), false);
  for (const plan::ScheduledRun& run : schedule_) {
    if (!backend_->overwrites_weight_grads() || !plan::PerMicrobatch(run.unit->kind())) break;
    const uint32_t u = run.run->unit();
    if (seen[u]) continue;
    seen[u] = true;
    for (size_t i = 0; i < units_[u].size(); ++i) {
      const plan::Instruction& instr = units_[u][i];
      std::vector<uint32_t> fresh;  // the gradients it touches first
      for (uint32_t b : instr.buffers)
        if (plan::Has(b) && zero[b] && !touched[b] &&
            std::find(fresh.begin(), fresh.end(), b) == fresh.end())
          fresh.push_back(b);
      if (fresh.empty()) continue;
      std::vector<uint32_t> writes = plan::WeightGradientsOf(instr);
      std::sort(fresh.begin(), fresh.end());
      std::sort(writes.begin(), writes.end());
      for (uint32_t b : fresh) touched[b] = true;
      if (fresh != writes) continue;  // left to the zeroing below
      if (first_units_[u].empty()) first_units_[u] = units_[u];
      first_units_[u][i].overwrite_weight_grads = true;
      for (uint32_t b : fresh) zero[b] = false;
    }
  }
  zeroed_grads_.clear();
  for (const fb::Param* param : *p.params())
    if (zero[param->grad()])
      zeroed_grads_.push_back(
          {offsets_[0][param->grad()], BufferBytes(*p.buffers()->Get(param->grad()))});
}

void Executor::Pull(uint32_t buffer, uint32_t slot) {
  if (view_ == arena_) return;
  const uint64_t at = offsets_[slot][buffer];
  backend_->CopyToHost(arena_, at, view_ + at, BufferBytes(*plan_.plan->buffers()->Get(buffer)));
}

void Executor::Push(uint32_t buffer, uint32_t slot) {
  if (view_ == arena_) return;
  const uint64_t at = offsets_[slot][buffer];
  backend_->CopyToArena(arena_, at, view_ + at, BufferBytes(*plan_.plan->buffers()->Get(buffer)));
}

Status Executor::PullState() {
  for (const fb::Param* p : *plan_.plan->params())
    for (uint32_t b : {p->value(), p->grad(), p->exp_avg(), p->exp_avg_sq()}) Pull(b);
  // The other members' parts of split updates' moments (PlanSplitUpdates): final
  // since their last update, and not written again before this member's next step.
  for (const MomentSync& sync : moment_syncs_)
    std::memcpy(sync.to, sync.from, static_cast<size_t>(sync.n) * sizeof(float));
  return backend_->error();
}

Status Executor::PushState() {
  for (const fb::Param* p : *plan_.plan->params())
    for (uint32_t b : {p->value(), p->grad(), p->exp_avg(), p->exp_avg_sq()}) Push(b);
  return backend_->error();
}

void Executor::InitializeParameters(uint64_t seed) {
  for (const fb::Param* p : *plan_.plan->params()) {
    int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(p->value()));
    float* value = F32(p->value());
    switch (p->init()) {
      case fb::Init_Zeros:
        std::fill_n(value, n, 0.f);
        break;
      case fb::Init_Ones:
        std::fill_n(value, n, 1.f);
        break;
      case fb::Init_Normal:
        // This rank's block, each value from its logical index.
        plan::ForEachRun(plan::BlockOf(*p, coords_), [&](int64_t logical, int64_t local, int64_t len) {
          init::FillNormal(seed, p->name()->str(), p->std(), logical, logical + len, value + local);
        });
        break;
    }
    for (uint32_t b : {p->grad(), p->exp_avg(), p->exp_avg_sq()})
      std::fill_n(F32(b), plan::NumElements(*plan_.plan->buffers()->Get(b)), 0.f);
  }
  (void)PushState();  // a failed copy stays the backend's error: the next Step returns it
}

// The barrier of `axis`'s group around mirrored updates (PlanMirroredUpdates,
// PlanSplitUpdates), traced as "mirror_barrier".
Status Executor::MirrorBarrier(int axis) {
  const int64_t start = tracer_ ? tracer_->Now() : 0;
  if (auto err = comms_[axis]->Barrier()) return err;
  if (tracer_) {
    TraceEvent e = Span(TraceCategory::kCollective, "mirror_barrier", start, tracer_->Now());
    e.axis = axis;
    tracer_->Add(e);
  }
  return std::nullopt;
}

Status Executor::RunUnit(const plan::ScheduledRun& run, const FillMicrobatch* fill,
                         double* loss_sum) {
  if (!tracer_) return RunUnitBody(run, fill, loss_sum);
  const bool microbatch = plan::PerMicrobatch(run.unit->kind());
  TraceEvent e = Span(TraceCategory::kUnit, run.unit->name() ? run.unit->name()->c_str() : "unit",
                      tracer_->Now(), 0, kTraceSchedule);
  e.microbatch = microbatch ? run.run->microbatch() : -1;
  e.slot = run.run->slot();
  e.chunk = run.run->chunk();
  Status err = RunUnitBody(run, fill, loss_sum);
  e.end_ns = tracer_->Now();
  tracer_->Add(e);
  return err;
}

Status Executor::RunUnitBody(const plan::ScheduledRun& run, const FillMicrobatch* fill,
                             double* loss_sum) {
  const fb::Plan& p = *plan_.plan;
  const uint32_t slot = static_cast<uint32_t>(run.run->slot());
  const bool microbatch = plan::PerMicrobatch(run.unit->kind());
  const UnitIo& io = unit_io_[run.run->unit()];
  // Each chunk has its own slots: its sends are waited for by (chunk, slot).
  send_key_ = static_cast<uint32_t>(run.run->chunk()) * p.slots() + slot;
  // This slot's copy of the slotted buffers is about to be written again: the
  // sends of earlier runs that read it must be complete. (A unit of the step runs
  // after every microbatch run's sends completed; this finds none.)
  if (auto err = TracedWaitSends(!microbatch, send_key_, "wait_sends"))
    return err->Within("stage " + std::to_string(p.stage()) + ": waiting for the sends of slot " +
                       std::to_string(slot));
  const bool forward = run.unit->kind() == fb::UnitKind_Forward;
  if (forward && fill && (io.tokens || io.targets)) {
    const int64_t start = tracer_ ? tracer_->Now() : 0;
    int32_t* tokens = io.tokens ? I32(p.tokens(), slot) : nullptr;
    int32_t* targets = io.targets ? I32(p.targets(), slot) : nullptr;
    (*fill)(run.run->microbatch(), tokens, targets);
    if (tokens) Push(p.tokens(), slot);
    if (targets) Push(p.targets(), slot);
    if (tracer_)
      tracer_->Add(Span(TraceCategory::kInstr, "fill_microbatch", start, tracer_->Now()));
  }
  const uint32_t u = run.run->unit();
  const std::vector<plan::Instruction>& instrs =
      run.first && !first_units_[u].empty() ? first_units_[u] : units_[u];
  for (const plan::Instruction& instr : instrs) {
    if (plan::IsBucket(instr.op)) {
      if (run.last) {  // the gradients are complete only now
        const int64_t start = tracer_ ? tracer_->Now() : 0;
        StartBucket(instr, slot);
        if (tracer_) {  // where it was posted; it runs on the buckets' track
          TraceEvent e = Span(TraceCategory::kCollective, plan::OpName(instr.op), start,
                              tracer_->Now());
          e.axis = static_cast<int32_t>(instr.axis.value_or(-1));
          tracer_->Add(e);
        }
      }
      continue;
    }
    if (instr.op == fb::Op_ClipAndAdamW && !scalars_.clip_ready) {
      // The norm is complete (and global) before the first update: nothing is
      // applied from a non-finite one.
      const int64_t start = tracer_ ? tracer_->Now() : 0;
      if (auto err = CompleteGradNorm()) return err;
      if (tracer_ && comms_[plan::kAxisPp] && comms_[plan::kAxisPp]->size() > 1) {
        TraceEvent e =
            Span(TraceCategory::kCollective, "grad_norm_all_reduce", start, tracer_->Now());
        e.axis = plan::kAxisPp;
        tracer_->Add(e);
      }
      if (!std::isfinite(scalars_.grad_norm_sq)) {
        nonfinite_norm_ = true;
        return std::nullopt;
      }
      // The one place the clipping factor is fixed (both backends read it): of
      // the true norm, and with the loss scale divided out of every gradient.
      const double norm = std::sqrt(scalars_.grad_norm_sq) / scalars_.loss_scale;
      const double clip = scalars_.grad_clip > 0 && norm > scalars_.grad_clip
                              ? scalars_.grad_clip / (norm + 1e-6) : 1.0;
      scalars_.clip_scale = clip / scalars_.loss_scale;
      scalars_.clip_ready = true;
    }
    if (instr.mirror_axis >= 0 && !mirror_synced_[instr.mirror_axis]) {
      // This update writes into the other members' parameters: they are done
      // reading them (PlanMirroredUpdates).
      if (auto err = MirrorBarrier(instr.mirror_axis)) return err;
      mirror_synced_[instr.mirror_axis] = true;
    }
    // One pointer check per instruction when not tracing.
    if (auto err = tracer_ ? TracedRun(instr, slot) : Run(instr, slot, scalars_)) {
      // A backend's failure (not bad data, not a collective's) names the
      // instruction: with a device backend in check mode it is the one that failed.
      if (instr.axis || err->kind != Error::Kind::kFailure) return err;
      const auto index = &instr - instrs.data();
      return err->Within("unit '" + (run.unit->name() ? run.unit->name()->str() : "") +
                         "' instruction " + std::to_string(index));
    }
    // Every member's part of the split updates is in (PlanSplitUpdates).
    if (instr.mirror_sync_after)
      if (auto err = MirrorBarrier(instr.mirror_axis)) return err;
  }
  // A unit of the step (a tied embedding's gradient exchange) completes its own
  // sends.
  if (!microbatch)
    if (auto err = TracedWaitSends(true, send_key_, "wait_sends"))
      return err->Within("stage " + std::to_string(p.stage()) +
                         ": waiting for the sends of unit '" +
                         (run.unit->name() ? run.unit->name()->str() : "") + "'");
  if (forward && io.loss) {
    Pull(p.loss(), slot);
    *loss_sum += *F32(p.loss(), slot);
  }
  return std::nullopt;
}

Status Executor::ComputeGradients(const FillMicrobatch& fill, double* loss) {
  scalars_ = StepScalars{};  // the gradients of the loss itself (loss scale 1)
  full_gradients_ = true;    // every member's whole gradients (PlanSplitReduces)
  Status err = MicrobatchRuns(fill, loss);
  if (!err) err = backend_->error();  // a copy's or zeroing's failure (backend.h)
  if (err) {  // nothing in flight may outlive the call
    (void)WaitAllSends();
    (void)FinishBuckets();
  }
  full_gradients_ = false;  // after the buckets, which read it
  return err;
}

// Whether this step's direct reduce-scatters summed the squares of exactly the
// ranges of grad_norm_sq `instr`.
bool Executor::Reduced(const plan::Instruction& instr) const {
  for (size_t i = 0; i < instr.buffers.size(); ++i) {
    const ReducedSum& kept = reduced_[instr.buffers[i]];
    if (kept.serial != step_serial_ || kept.begin != instr.ranges[i].begin ||
        kept.size != instr.ranges[i].size)
      return false;
  }
  return true;
}

Status Executor::MicrobatchRuns(const FillMicrobatch& fill, double* loss) {
  const fb::Plan& p = *plan_.plan;
  ++step_serial_;  // what the direct reduce-scatters keep is this step's from now
  const int64_t start = tracer_ ? tracer_->Now() : 0;
  for (const auto& [offset, bytes] : zeroed_grads_) backend_->Zero(arena_, offset, bytes);
  if (tracer_) tracer_->Add(Span(TraceCategory::kInstr, "zero_grads", start, tracer_->Now()));
  double loss_sum = 0;
  for (const plan::ScheduledRun& run : schedule_) {
    if (!plan::PerMicrobatch(run.unit->kind())) break;
    if (auto err = RunUnit(run, &fill, &loss_sum)) return err;
  }
  // Every send of the microbatch runs completes before the loss is reduced and the
  // step's units run; the buckets join.
  Status sends = TracedWaitSends(true, 0, "wait_all_sends");
  if (sends)
    sends = sends->Within("stage " + std::to_string(p.stage()) +
                          ": waiting for the sends of the microbatch runs");
  const bool joining = tracer_ && buckets_.valid();
  const int64_t join_start = joining ? tracer_->Now() : 0;
  Status buckets = FinishBuckets();
  if (joining)
    tracer_->Add(Span(TraceCategory::kCollective, "join_buckets", join_start, tracer_->Now()));
  if (sends) return sends;
  if (buckets) return buckets;
  *loss = loss_sum / static_cast<double>(p.microbatches());
  return std::nullopt;
}

Status Executor::Step(const FillMicrobatch& fill, const StepOptions& options,
                      StepResult* result) {
  if (tracer_) tracer_->set_step(options.step);
  const int64_t start = tracer_ ? tracer_->Now() : 0;
  Status err = StepRuns(fill, options, result);
  if (!err) err = backend_->error();  // a copy's or zeroing's failure (backend.h)
  if (err) {  // nothing in flight may outlive the call
    (void)WaitAllSends();
    (void)FinishBuckets();
  }
  if (tracer_)
    tracer_->Add(Span(TraceCategory::kStep, "step", start, tracer_->Now(), kTraceSchedule));
  return err;
}

// The reported loss is the mean over the global batch, whose rows the data ranks
// (dp x ep, docs/architecture.md §3) share, summed over the stages that have a
// loss (the cross-entropy's, the auxiliary losses of MoE layers; the others
// contribute 0). `moe` (dropped and routed slots, already summed over the data
// ranks; null: none) is summed over the stages in the same all_reduce.
Status Executor::ReduceLoss(double* loss, float* moe) {
  for (auto [axis, reduce] : {std::pair{plan::kAxisDp, comm::ReduceOp::kAvg},
                              std::pair{plan::kAxisEp, comm::ReduceOp::kAvg},
                              std::pair{plan::kAxisPp, comm::ReduceOp::kSum}}) {
    comm::Communicator* c = comms_[axis];
    if (!c || c->size() == 1) continue;
    const bool stages = axis == plan::kAxisPp;
    float values[3] = {static_cast<float>(*loss), moe ? moe[0] : 0.f, moe ? moe[1] : 0.f};
    const int64_t start = tracer_ ? tracer_->Now() : 0;
    if (auto err = c->AllReduce(values, stages ? 3 : 1, reduce)) return err;
    if (tracer_) {
      TraceEvent e = Span(TraceCategory::kCollective, "loss_all_reduce", start, tracer_->Now());
      e.axis = axis;
      tracer_->Add(e);
    }
    *loss = values[0];
    if (stages && moe) std::copy_n(values + 1, 2, moe);
  }
  return std::nullopt;
}

// The forward runs of the schedule, in its order: every stage's forwards keep their
// relative order, and a forward waits only for forwards, so the training schedule's
// check (no deadlock) covers this subsequence too.
Status Executor::Evaluate(const FillMicrobatch& fill, double* loss) {
  double sum = 0;
  Status err;
  for (const plan::ScheduledRun& run : schedule_) {
    if (!plan::PerMicrobatch(run.unit->kind())) break;
    if (run.unit->kind() != fb::UnitKind_Forward) continue;
    if ((err = RunUnit(run, &fill, &sum))) break;
  }
  Status sends = WaitAllSends();
  if (!err) err = sends;
  if (!err) err = backend_->error();
  // The MoE load of these forwards is not the training step's.
  moe_load_.clear();
  if (err) return err;
  *loss = sum / static_cast<double>(plan_.plan->microbatches());
  return ReduceLoss(loss, nullptr);
}

Status Executor::Decode(const int32_t* tokens, int32_t position, const float** logits) {
  const fb::Plan& p = *plan_.plan;
  if (!plan::Has(p.position()) || !plan::Has(p.logits()))
    return Error::BadInput("this plan is not a decode program (it has no position and logits; "
                           "a plan directory's decode program is " +
                           std::string(plan::kDecodeFileName) + ")");
  if (position < 0) return Error::BadInput("position " + std::to_string(position) + " < 0");
  const int64_t rows = p.micro_batch_size() * p.seq();
  std::copy_n(tokens, rows, I32(p.tokens()));
  *I32(p.position()) = position;
  Push(p.tokens());
  Push(p.position());
  double unused = 0;
  for (const plan::ScheduledRun& run : schedule_)
    if (run.unit->kind() == fb::UnitKind_Forward)
      if (auto err = RunUnit(run, nullptr, &unused)) return err;
  Pull(p.logits());
  if (auto err = backend_->error()) return err;
  *logits = F32(p.logits());
  return std::nullopt;
}

Status Executor::StepRuns(const FillMicrobatch& fill, const StepOptions& options,
                          StepResult* result) {
  scalars_ = StepScalars{options.lr, options.weight_decay, options.grad_clip,
                         options.update > 0 ? options.update : options.step, options.loss_scale};
  std::fill(std::begin(mirror_synced_), std::end(mirror_synced_), false);
  if (auto err = MicrobatchRuns(fill, &result->loss)) return err;
  std::vector<float> kept;  // per expert of every layer: the slots it kept
  float moe[2] = {0.f, 0.f};  // dropped, routed
  if (auto err = SumMoeLoad(&kept, moe)) return err;
  if (auto err = ReduceLoss(&result->loss, moe)) return err;
  if (auto err = MoeLoadRange(kept, moe, result)) return err;
  result->nonfinite = false;
  result->grad_norm = std::nan("");
  if (!std::isfinite(result->loss)) {
    result->nonfinite = true;
    return std::nullopt;
  }
  nonfinite_norm_ = false;
  double unused = 0;
  for (const plan::ScheduledRun& run : schedule_) {
    if (plan::PerMicrobatch(run.unit->kind())) continue;
    if (auto err = RunUnit(run, nullptr, &unused)) return err;
    if (nonfinite_norm_) {  // nothing was applied; every rank saw the same norm
      result->grad_norm = std::sqrt(scalars_.grad_norm_sq) / scalars_.loss_scale;
      result->nonfinite = true;
      return WaitAllSends();
    }
  }
  result->grad_norm = std::sqrt(scalars_.grad_norm_sq) / scalars_.loss_scale;
  return std::nullopt;
}

Status Executor::Run(const plan::Instruction& instr, uint32_t slot, StepScalars& scalars) {
  // Collectives and send / recv are the executor's, not the backend's: they run on
  // the communicator of their axis's group (Gloo on CPU; NCCL will serve device
  // memory).
  if (const std::optional<int64_t> axis = instr.axis) {
    comm::Communicator* c = comms_[*axis];
    if (!c)
      return Error::Failure(std::string(plan::OpName(instr.op)) + " over " +
                            plan::AxisName(*axis) + " has no communicator (the group of this " +
                            "rank over " + plan::AxisName(*axis) + " was not connected)");
    switch (instr.op) {
      case fb::Op_AllGather:
        // Mirrored: the updates wrote every member's copies (PlanMirroredUpdates).
        if (instr.mirrored) return c->Barrier();
        return ShardCollective(instr, slot, *c);
      case fb::Op_ReduceScatter:
      case fb::Op_BucketReduceScatter:
        if (!instr.copies.empty()) return DirectReduceScatter(instr, *c);
        return ShardCollective(instr, slot, *c);
      case fb::Op_AllGatherInto:
      case fb::Op_ReduceScatterInto:
        return BlockCollective(instr, slot, *c);
      case fb::Op_AllReduce:
      case fb::Op_BucketAllReduce:
        if (!instr.copies.empty() && !full_gradients_) return SplitAllReduce(instr, *c);
        return AllReduce(instr, slot, *c);
      case fb::Op_AllToAll:
        return Exchange(instr, slot, *c);
      default:
        return PointToPoint(instr, slot, *c);
    }
  }
  // The clock is read only while profiling: this runs for every instruction.
  const auto t0 = profiling_ ? std::chrono::steady_clock::now()
                             : std::chrono::steady_clock::time_point();
  const double norm_before = scalars.grad_norm_sq;
  Status err;
  if (instr.split_norm_axis >= 0) {
    err = SplitNorm(instr, scalars);
  } else if (instr.norm_from_reduce && Reduced(instr)) {
    // The direct reduce-scatters' sums of squares: what the backend would add, in its order.
    for (uint32_t b : instr.buffers) scalars.grad_norm_sq += reduced_[b].sum;
  } else {
    err = backend_->Run(*plan_.plan, instr, arena_, offsets_[slot].data(), scalars);
  }
  if (!err && instr.op == fb::Op_MoeRoute) {  // the step's MoE metrics
    const auto route = plan::Read<op::MoeRoute<uint32_t>>(instr);
    Pull(route.load, slot);
    const float* load = F32(route.load, slot);
    std::vector<double>& sum = moe_load_[&instr];
    sum.resize(static_cast<size_t>(2 * route.experts), 0.0);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += load[i];
  }
  if (!err && instr.op == fb::Op_GradNormSq) {
    // This instruction's sum of squares covers this rank's ZeRO-1 shards (sharded)
    // or tp or ep blocks (tp_sharded, ep_sharded): the norm is over every rank's.
    const auto norm = plan::Read<op::GradNormSq<uint32_t>>(instr);
    for (auto [flag, axis] : {std::pair{norm.sharded, norm.shard_data ? plan::kAxisData
                                                                      : plan::kAxisDp},
                              std::pair{norm.tp_sharded, plan::kAxisTp},
                              std::pair{norm.ep_sharded, plan::kAxisEp}}) {
      comm::Communicator* c = comms_[axis];
      if (err || flag != 1 || !c || c->size() == 1) continue;
      float part = static_cast<float>(scalars.grad_norm_sq - norm_before);
      err = c->AllReduce(&part, 1, comm::ReduceOp::kSum);
      scalars.grad_norm_sq = norm_before + part;
    }
  }
  if (profiling_)
    op_seconds_[instr.op] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return err;
}

Status Executor::TracedRun(const plan::Instruction& instr, uint32_t slot) {
  TraceEvent e = Span(TraceCategory::kInstr, instr.mirrored ? "mirrored_all_gather"
                                                           : plan::OpName(instr.op),
                      tracer_->Now(), 0);
  Status err = Run(instr, slot, scalars_);
  e.end_ns = tracer_->Now();
  if (instr.axis) {
    e.axis = static_cast<int32_t>(*instr.axis);
    e.category = TraceCategory::kCollective;
    if (instr.op == fb::Op_Send || instr.op == fb::Op_Recv) {
      const auto p2p = plan::Read<op::Send<uint32_t>>(instr);
      const fb::Buffer& buffer = *plan_.plan->buffers()->Get(p2p.x);
      e.category = TraceCategory::kP2p;
      e.blocked = instr.op == fb::Op_Recv;  // a send only posts
      e.buffer = buffer.name() ? buffer.name()->c_str() : nullptr;
      e.peer = static_cast<int32_t>(p2p.peer);
      e.slot = static_cast<int32_t>(slot);
    }
  }
  tracer_->Add(e);
  return err;
}

// The MoE metrics of the step, in two parts around ReduceLoss (which sums `moe` over
// the stages with the loss). SumMoeLoad: each route's load summed over the data ranks
// (dp x ep; tp ranks hold copies): every layer's experts' kept slots, and the
// dropped and routed slots in all.
Status Executor::SumMoeLoad(std::vector<float>* kept, float moe[2]) {
  if (moe_load_.empty()) return std::nullopt;
  std::vector<float> all;
  for (auto& [instr, load] : moe_load_) all.insert(all.end(), load.begin(), load.end());
  for (int axis : {plan::kAxisDp, plan::kAxisEp})
    if (comm::Communicator* c = comms_[axis]; c && c->size() > 1)
      if (auto err = c->AllReduce(all.data(), all.size(), comm::ReduceOp::kSum)) return err;
  size_t at = 0;
  for (auto& [instr, load] : moe_load_) {
    const size_t experts = load.size() / 2;
    for (size_t e = 0; e < experts; ++e) {
      kept->push_back(all[at + e]);
      moe[0] += all[at + experts + e];
      moe[1] += all[at + e] + all[at + experts + e];
    }
    at += load.size();
    std::fill(load.begin(), load.end(), 0.0);
  }
  return std::nullopt;
}

// MoeLoadRange: the fewest and most slots an expert kept, over the stages too. Only a
// model with MoE layers (routed slots on some stage, so on every rank after the sum)
// takes this all_reduce.
Status Executor::MoeLoadRange(const std::vector<float>& kept, const float moe[2],
                              StepResult* result) {
  if (!(moe[1] > 0)) return std::nullopt;
  float extremes[2] = {-INFINITY, -INFINITY};  // max kept, -min kept
  for (float k : kept) {
    extremes[0] = std::max(extremes[0], k);
    extremes[1] = std::max(extremes[1], -k);
  }
  if (comm::Communicator* pp = comms_[plan::kAxisPp]; pp && pp->size() > 1)
    if (auto err = pp->AllReduce(extremes, 2, comm::ReduceOp::kMax)) return err;
  result->moe_dropped = moe[0] / moe[1];
  result->moe_tokens_max = extremes[0];
  result->moe_tokens_min = -extremes[1];
  return std::nullopt;
}

// Each pipeline stage's grad_norm_sq instructions summed its own parameters'
// gradients: the global norm, and so the clipping, sums over pp first.
Status Executor::CompleteGradNorm() {
  if (comm::Communicator* pp = comms_[plan::kAxisPp]; pp && pp->size() > 1) {
    float part = static_cast<float>(scalars_.grad_norm_sq);
    if (auto err = pp->AllReduce(&part, 1, comm::ReduceOp::kSum)) return err;
    scalars_.grad_norm_sq = part;
  }
  return std::nullopt;
}

// reduce_scatter / all_gather on whole buffers: each buffer is padded to
// group-size blocks of ceil(n / size) in a scratch vector (sized once, on first
// use), exchanged, and this rank's block is written back in place.
Status Executor::ShardCollective(const plan::Instruction& instr, uint32_t slot,
                                 comm::Communicator& group) {
  comm::Communicator* c = &group;
  const bool gather = instr.op == fb::Op_AllGather;
  // reduce_scatter's operands are all_gather's and a reduction.
  const auto rs = gather ? op::ReduceScatter<uint32_t>{} : plan::Read<op::ReduceScatter<uint32_t>>(instr);
  const auto ag = gather ? plan::Read<op::AllGather<uint32_t>>(instr) : op::AllGather<uint32_t>{};
  const int parts = c->size();
  // A bucket runs beside the unit's other instructions: its own staging.
  Staging& staging = instr.op == fb::Op_BucketReduceScatter ? bucket_staging_ : staging_;
  std::vector<float>& scratch = staging.whole;
  std::vector<float>& out = staging.shard;
  for (uint32_t b : gather ? ag.buffers : rs.buffers) {
    Pull(b, slot);
    float* data = F32(b, slot);
    const int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(b));
    const int64_t s = plan::ShardSize(n, parts);
    const plan::Shard mine = plan::ShardOf(n, c->rank(), parts);
    const auto reduce = static_cast<comm::ReduceOp>(rs.reduce);
    if (s * parts == n) {
      // Equal shards: in place on the buffer, no staging (comm.h allows it).
      if (gather) {
        if (auto err = c->AllGather(data + mine.begin, data, static_cast<size_t>(s))) return err;
      } else {
        if (auto err = c->ReduceScatter(data, data + mine.begin, static_cast<size_t>(s), reduce))
          return err;
      }
      Push(b, slot);
      continue;
    }
    scratch.assign(static_cast<size_t>(s * parts), 0.f);
    out.assign(static_cast<size_t>(s), 0.f);
    if (!gather) {
      std::copy(data, data + n, scratch.begin());
      if (auto err = c->ReduceScatter(scratch.data(), out.data(), static_cast<size_t>(s), reduce))
        return err;
      std::copy(out.begin(), out.begin() + mine.size, data + mine.begin);
    } else {
      std::copy(data + mine.begin, data + mine.begin + mine.size, out.begin());
      if (auto err = c->AllGather(out.data(), scratch.data(), static_cast<size_t>(s)))
        return err;
      std::copy(scratch.begin(), scratch.begin() + n, data);
    }
    Push(b, slot);
  }
  return std::nullopt;
}

// all_reduce and bucket_all_reduce (the same operands): in place on each buffer,
// over the group of ranks that differ only in the instruction's axis.
Status Executor::AllReduce(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c) {
  const auto ar = plan::Read<op::AllReduce<uint32_t>>(instr);
  const auto reduce = static_cast<comm::ReduceOp>(ar.reduce);
  for (uint32_t b : ar.buffers) {
    Pull(b, slot);
    if (auto err = c.AllReduce(F32(b, slot), plan::NumElements(*plan_.plan->buffers()->Get(b)),
                               reduce))
      return err;
    Push(b, slot);
  }
  return std::nullopt;
}

// all_to_all: src [parts, outer, inner] -> dst [outer, parts, inner] (back: the
// inverse), block p to and from the group member at coordinate p, through
// contiguous per-member blocks (packed or unpacked here).
Status Executor::Exchange(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c) {
  const auto a = plan::Read<op::AllToAll<uint32_t>>(instr);
  if (a.parts != c.size())
    return Error::Failure(std::string("all_to_all over ") + plan::AxisName(*instr.axis) + " of " +
                          std::to_string(a.parts) + " parts, but the group has " +
                          std::to_string(c.size()) + " members");
  const size_t outer = static_cast<size_t>(a.outer), inner = static_cast<size_t>(a.inner);
  const size_t parts = static_cast<size_t>(a.parts), block = outer * inner;
  if (a.variable) return ExchangeRows(instr, slot, c);
  Pull(a.src, slot);
  if (a.accumulate_dx) Pull(a.dst, slot);
  const float* src = F32(a.src, slot);
  float* dst = F32(a.dst, slot);
  // [outer, parts, inner] <-> [parts, outer, inner]: run (o, p) of one is run (p, o)
  // of the other.
  auto transpose = [&](const float* from, float* to, bool from_parts_major, bool add) {
    for (size_t p = 0; p < parts; ++p)
      for (size_t o = 0; o < outer; ++o) {
        const size_t pm = (p * outer + o) * inner, om = (o * parts + p) * inner;
        const float* f = from + (from_parts_major ? pm : om);
        float* t = to + (from_parts_major ? om : pm);
        if (add)
          for (size_t i = 0; i < inner; ++i) t[i] += f[i];
        else
          std::copy_n(f, inner, t);
      }
  };
  exchange_out_.resize(block * parts);
  if (!a.back) {
    // Sent as it is; received member-major, then transposed into dst.
    if (auto err = c.AllToAll(src, exchange_out_.data(), block)) return err;
    transpose(exchange_out_.data(), dst, true, a.accumulate_dx != 0);
  } else {
    exchange_in_.resize(block * parts);
    transpose(src, exchange_in_.data(), false, false);
    if (a.accumulate_dx) {
      if (auto err = c.AllToAll(exchange_in_.data(), exchange_out_.data(), block)) return err;
      for (size_t i = 0; i < block * parts; ++i) dst[i] += exchange_out_[i];
    } else if (auto err = c.AllToAll(exchange_in_.data(), dst, block)) {
      return err;
    }
  }
  Push(a.dst, slot);
  return std::nullopt;
}

// The variable-size all_to_all (op_table.h): the rows in use of each block travel,
// after an exchange of the counts. (p, o) indexes the parts-major side [parts,
// outer] (block p, o at (p * outer + o) * inner, its rows at the start), the packed
// side [outer, parts] holds outer o's rows from (for) part p after those of the
// parts before p.
Status Executor::ExchangeRows(const plan::Instruction& instr, uint32_t slot,
                              comm::Communicator& c) {
  const auto a = plan::Read<op::AllToAll<uint32_t>>(instr);
  const size_t outer = static_cast<size_t>(a.outer), inner = static_cast<size_t>(a.inner);
  const size_t parts = static_cast<size_t>(a.parts), row = static_cast<size_t>(a.row);
  if (row == 0 || inner % row != 0)
    return Error::Failure("all_to_all: rows of " + std::to_string(row) + " elements do not tile " +
                          "blocks of " + std::to_string(inner));
  const size_t block_rows = inner / row;
  Pull(a.src, slot);
  Pull(a.src_rows, slot);
  if (a.accumulate_dx) Pull(a.dst, slot);
  const float* src = F32(a.src, slot);
  float* dst = F32(a.dst, slot);
  const int32_t* src_rows = I32(a.src_rows, slot);
  int32_t* dst_rows = I32(a.dst_rows, slot);
  // The rows this rank sends part p for outer o, and where they sit in src.
  auto sent = [&](size_t p, size_t o) {
    return static_cast<size_t>(a.back ? src_rows[o * parts + p] : src_rows[p * outer + o]);
  };
  for (size_t i = 0; i < outer * parts; ++i)
    if (src_rows[i] < 0 || static_cast<size_t>(src_rows[i]) > block_rows * (a.back ? parts : 1))
      return Error::Failure("all_to_all: " + std::to_string(src_rows[i]) + " rows in a block of " +
                            std::to_string(block_rows));
  // The counts first: rank p learns how many rows of each outer this rank sends it.
  exchange_in_.assign(parts * outer, 0.f);
  for (size_t p = 0; p < parts; ++p)
    for (size_t o = 0; o < outer; ++o) exchange_in_[p * outer + o] = static_cast<float>(sent(p, o));
  std::vector<float> got(parts * outer);
  if (auto err = c.AllToAll(exchange_in_.data(), got.data(), outer)) return err;
  auto received = [&](size_t p, size_t o) { return static_cast<size_t>(got[p * outer + o]); };
  // Pack what goes to each part, member after member.
  std::vector<int64_t> send_counts(parts, 0), recv_counts(parts, 0);
  size_t total_send = 0, total_recv = 0;
  for (size_t p = 0; p < parts; ++p)
    for (size_t o = 0; o < outer; ++o) {
      send_counts[p] += static_cast<int64_t>(sent(p, o) * row);
      recv_counts[p] += static_cast<int64_t>(received(p, o) * row);
    }
  for (size_t p = 0; p < parts; ++p) {
    total_send += static_cast<size_t>(send_counts[p]);
    total_recv += static_cast<size_t>(recv_counts[p]);
  }
  exchange_in_.resize(total_send);
  exchange_out_.resize(total_recv);
  std::vector<size_t> packed(outer, 0);  // the packed side: rows of outer o so far
  for (size_t p = 0, at = 0; p < parts; ++p)
    for (size_t o = 0; o < outer; ++o) {
      const size_t n = sent(p, o) * row;
      const float* from = a.back ? src + o * parts * inner + packed[o] * row
                                 : src + (p * outer + o) * inner;
      std::copy_n(from, n, exchange_in_.data() + at);
      at += n;
      if (a.back) packed[o] += sent(p, o);
    }
  if (auto err = c.AllToAllV(exchange_in_.data(), send_counts, exchange_out_.data(), recv_counts))
    return err;
  if (!a.accumulate_dx) std::fill_n(dst, outer * parts * inner, 0.f);
  std::fill(packed.begin(), packed.end(), 0);
  for (size_t p = 0, at = 0; p < parts; ++p)
    for (size_t o = 0; o < outer; ++o) {
      const size_t n = received(p, o) * row;
      float* to = a.back ? dst + (p * outer + o) * inner : dst + o * parts * inner + packed[o] * row;
      if (a.accumulate_dx)
        for (size_t i = 0; i < n; ++i) to[i] += exchange_out_[at + i];
      else
        std::copy_n(exchange_out_.data() + at, n, to);
      at += n;
      if (!a.back) packed[o] += received(p, o);
      dst_rows[a.back ? p * outer + o : o * parts + p] = static_cast<int32_t>(received(p, o));
    }
  Push(a.dst, slot);
  Push(a.dst_rows, slot);
  return std::nullopt;
}

// send / recv (the same operands): whole buffer, the run's slot's copy, to or from
// the group member at coordinate `peer`. A send is posted and not waited for here
// (executor.h: the next run on its slot, or the end of the microbatch runs, waits);
// a recv blocks until its data has arrived.
Status Executor::PointToPoint(const plan::Instruction& instr, uint32_t slot,
                              comm::Communicator& c) {
  const auto p2p = plan::Read<op::Send<uint32_t>>(instr);
  const fb::Buffer& buffer = *plan_.plan->buffers()->Get(p2p.x);
  const size_t n = static_cast<size_t>(plan::NumElements(buffer));
  const bool send = instr.op == fb::Op_Send;
  // For messages: "stage 0: send of 'h' (slot 1) to stage 1".
  auto what = [&] {
    const std::string name = buffer.name() ? buffer.name()->str() : "#" + std::to_string(p2p.x);
    const std::string peer = p2p.axis == plan::kAxisPp
                                 ? "stage " + std::to_string(p2p.peer)
                                 : std::string(plan::AxisName(p2p.axis)) + " member " +
                                       std::to_string(p2p.peer);
    return "stage " + std::to_string(plan_.plan->stage()) + ": " + plan::OpName(instr.op) +
           " of '" + name + "' (slot " + std::to_string(slot) + ") " + (send ? "to " : "from ") +
           peer;
  };
  const int peer = static_cast<int>(p2p.peer);
  if (send) {
    Pull(p2p.x, slot);
    if (auto err = c.StartSend(F32(p2p.x, slot), n, peer, static_cast<int>(send_key_)))
      return err->Within(what());
    std::vector<comm::Communicator*>& waiting = sending_[send_key_];
    if (std::find(waiting.begin(), waiting.end(), &c) == waiting.end()) waiting.push_back(&c);
    return std::nullopt;
  }
  if (auto err = c.Recv(F32(p2p.x, slot), n, peer)) return err->Within(what());
  Push(p2p.x, slot);
  return std::nullopt;
}

Status Executor::WaitSends(uint32_t key) {
  Status first;
  for (comm::Communicator* c : sending_[key])
    if (auto err = c->WaitSends(static_cast<int>(key)); err && !first) first = err;
  sending_[key].clear();
  return first;
}

Status Executor::WaitAllSends() {
  Status first;
  for (uint32_t key = 0; key < sending_.size(); ++key)
    if (auto err = WaitSends(key); err && !first) first = err;
  return first;
}

Status Executor::TracedWaitSends(bool all, uint32_t slot, const char* name) {
  bool pending = false;
  if (tracer_)
    for (uint32_t s = 0; s < sending_.size(); ++s)
      pending = pending || ((all || s == slot) && !sending_[s].empty());
  if (!pending) return all ? WaitAllSends() : WaitSends(slot);
  TraceEvent e = Span(TraceCategory::kP2p, name, tracer_->Now(), 0);
  Status err = all ? WaitAllSends() : WaitSends(slot);
  e.end_ns = tracer_->Now();
  e.blocked = true;
  e.slot = all ? -1 : static_cast<int32_t>(slot);
  tracer_->Add(e);
  return err;
}

void Executor::StartBucket(const plan::Instruction& instr, uint32_t slot) {
  // The bucket's own time, on the buckets' track of the trace.
  Tracer* const tracer = tracer_;
  auto traced = [this, &instr, slot, tracer] {
    const int64_t start = tracer ? tracer->Now() : 0;
    Status err = Run(instr, slot, scalars_);
    if (tracer) {
      TraceEvent e = Span(TraceCategory::kCollective, plan::OpName(instr.op), start,
                          tracer->Now(), kTraceBuckets);
      e.axis = static_cast<int32_t>(instr.axis.value_or(-1));
      tracer->AddBackground(e);
    }
    return err;
  };
  if (view_ != arena_) {
    // Staged through host memory: in order, now (a device backend overlaps with
    // its own communicator instead).
    Status err = FinishBuckets();
    if (!err) err = traced();
    buckets_ = std::async(std::launch::deferred, [err] { return err; });
    return;
  }
  // On the arena itself, in the background, after the bucket before it. The
  // gradients are not touched again before FinishBuckets.
  buckets_ = std::async(std::launch::async,
                        [traced, before = std::move(buckets_)]() mutable {
                          if (before.valid())
                            if (auto err = before.get()) return err;
                          return traced();
                        });
}

Status Executor::FinishBuckets() {
  if (!buckets_.valid()) return std::nullopt;
  return buckets_.get();
}

// all_gather_into / reduce_scatter_into (op_table.h): the blocks are staged in
// rank-major order, [rank][outer][inner], which is what Gloo's collectives
// exchange, and rearranged to [outer][rank][inner] on the way in or out.
Status Executor::BlockCollective(const plan::Instruction& instr, uint32_t slot,
                                 comm::Communicator& group) {
  comm::Communicator* c = &group;
  const bool gather = instr.op == fb::Op_AllGatherInto;
  // The two opcodes have the same operands.
  const auto bc = plan::Read<op::AllGatherInto<uint32_t>>(instr);
  const bool accumulate = bc.accumulate_dx != 0;
  if (c->size() != bc.parts)
    return Error::Failure(std::string(plan::OpName(instr.op)) + " over " +
                          plan::AxisName(bc.axis) + " expects a group of " +
                          std::to_string(bc.parts) + " ranks, this rank's has " +
                          std::to_string(c->size()));
  Pull(bc.src, slot);
  if (accumulate) Pull(bc.dst, slot);
  const float* src = F32(bc.src, slot);
  float* dst = F32(bc.dst, slot);
  const int64_t outer = bc.outer, parts = bc.parts, inner = bc.inner;
  const int64_t block = outer * inner;
  std::vector<float>& scratch = staging_.whole;
  std::vector<float>& out = staging_.shard;
  scratch.resize(static_cast<size_t>(block * parts));
  out.resize(static_cast<size_t>(block));
  auto store = [&](float* to, float v) { *to = accumulate ? *to + v : v; };
  if (gather) {
    if (auto err = c->AllGather(src, scratch.data(), static_cast<size_t>(block))) return err;
    for (int64_t r = 0; r < parts; ++r)
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i)
          store(dst + (o * parts + r) * inner + i, scratch[(r * outer + o) * inner + i]);
    Push(bc.dst, slot);
    return std::nullopt;
  }
  for (int64_t r = 0; r < parts; ++r)
    for (int64_t o = 0; o < outer; ++o)
      std::copy_n(src + (o * parts + r) * inner, inner, scratch.data() + (r * outer + o) * inner);
  if (auto err = c->ReduceScatter(scratch.data(), out.data(), static_cast<size_t>(block)))
    return err;
  for (int64_t k = 0; k < block; ++k) store(dst + k, out[k]);
  Push(bc.dst, slot);
  return std::nullopt;
}

std::string Executor::ProfileReport() const {
  double total = 0;
  for (double s : op_seconds_) total += s;
  std::vector<std::pair<double, int>> order;
  for (int op = 0; op <= fb::Op_MAX; ++op)
    if (op_seconds_[op] > 0) order.push_back({op_seconds_[op], op});
  std::sort(order.rbegin(), order.rend());
  std::string out;
  char line[128];
  for (auto [secs, op] : order) {
    std::snprintf(line, sizeof line, "  %-20s %9.3f s  %5.1f%%\n",
                  plan::OpName(static_cast<fb::Op>(op)), secs, 100 * secs / total);
    out += line;
  }
  return out;
}

}  // namespace heiretsu::exec
