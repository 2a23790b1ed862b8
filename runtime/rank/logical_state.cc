// Logical checkpoint tensors; see logical_state.h.
#include "runtime/rank/logical_state.h"

#include <algorithm>
#include <map>
#include <utility>

namespace heiretsu::rank {

namespace {

using TensorKey = std::pair<std::string, checkpoint::TensorKind>;
using checkpoint::ShapeText;

// This rank's tensors by (name, kind).
std::map<TensorKey, const checkpoint::Tensor*> ByKey(const std::vector<checkpoint::Tensor>& state) {
  std::map<TensorKey, const checkpoint::Tensor*> mine;
  for (const checkpoint::Tensor& t : state) mine[{t.name, t.kind}] = &t;
  return mine;
}

}  // namespace

bool IsStageLeader(const plan::MeshCoordinates& coords) {
  return coords.coord[plan::kAxisDp] == 0 && coords.coord[plan::kAxisTp] == 0 &&
         coords.coord[plan::kAxisEp] == 0;
}

Status StageParts(const std::vector<plan::LoadedPlan>& programs,
                  std::vector<checkpoint::Part>* parts) {
  parts->clear();
  std::map<TensorKey, std::pair<std::vector<int64_t>, size_t>> held;  // shape, stage
  for (size_t s = 0; s < programs.size(); ++s) {
    checkpoint::Part part;
    part.file = checkpoint::TensorFileName(static_cast<int>(s));
    for (checkpoint::Tensor& t : checkpoint::PlanState(*programs[s].plan)) {
      auto [it, fresh] = held.emplace(TensorKey{t.name, t.kind}, std::make_pair(t.shape, s));
      if (fresh) {
        part.tensors.push_back(std::move(t));
      } else if (it->second.first != t.shape) {
        return Error::BadInput(programs[s].path + ": parameter '" + t.name + "' has shape " +
                               ShapeText(t.shape) + ", but " +
                               programs[it->second.second].path + " gives it " +
                               ShapeText(it->second.first) +
                               " (the programs of a directory train one model)");
      }
    }
    parts->push_back(std::move(part));
  }
  return std::nullopt;
}

std::vector<checkpoint::Tensor> PartState(const checkpoint::Part& part,
                                          const std::vector<checkpoint::Tensor>& state) {
  const auto mine = ByKey(state);
  std::vector<checkpoint::Tensor> out;
  for (const checkpoint::Tensor& t : part.tensors) out.push_back(*mine.at({t.name, t.kind}));
  return out;
}

std::vector<checkpoint::Tensor> ModelState(const std::vector<checkpoint::Part>& parts,
                                           const std::vector<checkpoint::Tensor>& state) {
  const auto mine = ByKey(state);
  std::vector<checkpoint::Tensor> out;
  for (const checkpoint::Part& part : parts)
    for (const checkpoint::Tensor& t : part.tensors) {
      auto it = mine.find({t.name, t.kind});
      out.push_back(it == mine.end() ? t : *it->second);
    }
  return out;
}

LogicalState::LogicalState(const plan::fb::Plan& plan, exec::Executor* executor,
                           const Groups& groups)
    : executor_(executor), groups_(groups) {
  for (const plan::fb::Param* p : *plan.params()) {
    plan::Block block = plan::BlockOf(*p, executor->coordinates());
    const bool split = !block.whole();
    comm::Communicator* dp = groups_.get(p->shard_axis());
    const bool dp_shard = p->shard() > 0 && dp && dp->size() > 1;
    if (!split && !dp_shard) continue;
    const size_t n = static_cast<size_t>(block.global_numel());
    Entry e{p, std::move(block), split, dp_shard, {}, {}, {}};
    if (split) e.value.resize(n);
    e.m.resize(n);
    e.v.resize(n);
    entries_.push_back(std::move(e));
  }
}

void LogicalState::Redirect(std::vector<checkpoint::Tensor>* state) {
  for (Entry& e : entries_)
    for (checkpoint::Tensor& t : *state) {
      if (t.name != e.param->name()->str()) continue;
      if (t.kind == checkpoint::TensorKind::kValue && e.split) t.data = e.value.data();
      if (t.kind == checkpoint::TensorKind::kExpAvg) t.data = e.m.data();
      if (t.kind == checkpoint::TensorKind::kExpAvgSq) t.data = e.v.data();
    }
}

Status LogicalState::Gather() {
  for (Entry& e : entries_) {
    if (e.split)
      if (auto err = GatherOne(e, executor_->F32(e.param->value()), false, &e.value)) return err;
    if (auto err = GatherOne(e, executor_->F32(e.param->exp_avg()), e.dp_shard, &e.m)) return err;
    if (auto err = GatherOne(e, executor_->F32(e.param->exp_avg_sq()), e.dp_shard, &e.v))
      return err;
  }
  return std::nullopt;
}

void LogicalState::Scatter() {
  for (Entry& e : entries_) {
    if (e.split) ScatterOne(e, e.value, false, executor_->F32(e.param->value()));
    ScatterOne(e, e.m, e.dp_shard, executor_->F32(e.param->exp_avg()));
    ScatterOne(e, e.v, e.dp_shard, executor_->F32(e.param->exp_avg_sq()));
  }
}

// `local` is this rank's block (or, dp_shard, its ZeRO-1 shard of that block). The
// block is gathered over each splitting axis in turn: every member of the group
// contributes an equal block, placed at its coordinate along the split dimension.
Status LogicalState::GatherOne(const Entry& e, const float* local,
                                                   bool dp_shard, std::vector<float>* logical) {
  const int64_t n = e.block.local_numel();
  std::vector<float> block(local, local + (dp_shard ? 0 : n));
  if (dp_shard) {
    comm::Communicator* dp = groups_.get(e.param->shard_axis());  // its ZeRO-1 group
    const int64_t s = plan::ShardSize(n, dp->size());
    std::vector<float> all(static_cast<size_t>(s * dp->size()));
    if (auto err = dp->AllGather(local, all.data(), static_cast<size_t>(s))) return err;
    block.assign(all.begin(), all.begin() + n);
  }
  std::vector<int64_t> shape = e.block.local;  // of `block`, growing as axes are gathered
  if (e.param->splits())
    for (const plan::fb::Split* split : *e.param->splits()) {
      comm::Communicator* c = groups_.get(split->axis());
      if (!c) continue;  // an axis of size 1
      const int parts = c->size();
      const int64_t have = static_cast<int64_t>(block.size());
      std::vector<float> all(static_cast<size_t>(have * parts));
      if (auto err = c->AllGather(block.data(), all.data(), static_cast<size_t>(have))) return err;
      plan::Block part;  // member r's block inside the gathered one
      part.local = shape;
      part.global = shape;
      part.global[split->dim()] *= parts;
      part.offset.assign(shape.size(), 0);
      block.assign(static_cast<size_t>(have * parts), 0.f);
      for (int r = 0; r < parts; ++r) {
        part.offset[split->dim()] = shape[split->dim()] * r;
        const float* from = all.data() + r * have;
        plan::ForEachRun(part, [&](int64_t to, int64_t at, int64_t len) {
          std::copy_n(from + at, len, block.data() + to);
        });
      }
      shape = part.global;
    }
  std::copy(block.begin(), block.end(), logical->begin());
  return std::nullopt;
}

void LogicalState::ScatterOne(const Entry& e, const std::vector<float>& logical, bool dp_shard,
                              float* local) {
  const int64_t n = e.block.local_numel();
  std::vector<float> block(static_cast<size_t>(n));
  plan::ForEachRun(e.block, [&](int64_t from, int64_t at, int64_t len) {
    std::copy_n(logical.data() + from, len, block.data() + at);
  });
  if (!dp_shard) {
    std::copy(block.begin(), block.end(), local);
    return;
  }
  comm::Communicator* dp = groups_.get(e.param->shard_axis());  // its ZeRO-1 group
  const plan::Shard mine = plan::ShardOf(n, dp->rank(), dp->size());
  std::copy_n(block.begin() + mine.begin, mine.size, local);
}

}  // namespace heiretsu::rank
