// Executor of a verified plan; see executor.h. The instructions themselves run on
// the backend (backend.h).
#include "runtime/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "runtime/init/init.h"
#include "runtime/plan/ops.h"

namespace heiretsu::exec {

namespace fb = plan::fb;

Executor::Executor(const plan::LoadedPlan& plan, std::unique_ptr<Backend> backend)
    : plan_(plan), backend_(backend ? std::move(backend) : MakeCpuBackend()) {
  arena_ = backend_->AllocateArena(plan_.plan->arena_bytes());
  if (!arena_) throw std::bad_alloc();
  view_ = arena_;
  if (!backend_->host_visible()) {  // staged through a host copy of the arena
    host_.assign(plan_.plan->arena_bytes(), 0);
    view_ = host_.data();
  }
}

Executor::~Executor() { backend_->FreeArena(arena_); }

float* Executor::F32(uint32_t buffer) {
  return reinterpret_cast<float*>(view_ + plan_.plan->buffers()->Get(buffer)->offset());
}

int32_t* Executor::I32(uint32_t buffer) {
  return reinterpret_cast<int32_t*>(view_ + plan_.plan->buffers()->Get(buffer)->offset());
}

namespace {
uint64_t BufferBytes(const fb::Buffer& b) {
  return static_cast<uint64_t>(plan::NumElements(b)) * plan::DTypeSize(b.dtype());
}
}  // namespace

void Executor::Pull(uint32_t buffer) {
  if (view_ == arena_) return;
  const fb::Buffer& b = *plan_.plan->buffers()->Get(buffer);
  backend_->CopyToHost(arena_, b.offset(), view_ + b.offset(), BufferBytes(b));
}

void Executor::Push(uint32_t buffer) {
  if (view_ == arena_) return;
  const fb::Buffer& b = *plan_.plan->buffers()->Get(buffer);
  backend_->CopyToArena(arena_, b.offset(), view_ + b.offset(), BufferBytes(b));
}

void Executor::PullState() {
  for (const fb::Param* p : *plan_.plan->params())
    for (uint32_t b : {p->value(), p->grad(), p->exp_avg(), p->exp_avg_sq()}) Pull(b);
}

void Executor::PushState() {
  for (const fb::Param* p : *plan_.plan->params())
    for (uint32_t b : {p->value(), p->grad(), p->exp_avg(), p->exp_avg_sq()}) Push(b);
}

namespace {

// Parameter `p`'s values on this rank from the logical tensor's generator: its
// tensor-parallel block (all of it without tp_dim), run by run.
void FillNormalBlock(uint64_t seed, const fb::Param& p, int coord, int parts, float* out) {
  if (p.tp_dim() < 0) coord = 0, parts = 1;  // whole on every tp rank
  const plan::TpBlock block = plan::TpBlockOf(p, parts);
  for (int64_t o = 0; o < block.outer; ++o) {
    const int64_t begin = block.Begin(o, coord, parts);
    init::FillNormal(seed, p.name()->str(), p.std(), begin, begin + block.run, out + o * block.run);
  }
}

}  // namespace

void Executor::SetCoordinates(StepScalars& s) const {
  const comm::Communicator* dp = comms_[plan::kAxisDp];
  const comm::Communicator* tp = comms_[plan::kAxisTp];
  s.dp_rank = dp ? dp->rank() : 0;
  s.dp_size = dp ? dp->size() : 1;
  s.tp_rank = tp ? tp->rank() : 0;
  s.tp_size = tp ? tp->size() : 1;
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
        FillNormalBlock(seed, *p, scalars_.tp_rank, scalars_.tp_size, value);
        break;
    }
    for (uint32_t b : {p->grad(), p->exp_avg(), p->exp_avg_sq()})
      std::fill_n(F32(b), plan::NumElements(*plan_.plan->buffers()->Get(b)), 0.f);
  }
  PushState();
}

std::optional<std::string> Executor::ComputeGradients(const FillMicrobatch& fill, double* loss) {
  const fb::Plan& p = *plan_.plan;
  for (const fb::Param* param : *p.params()) {
    const fb::Buffer& g = *p.buffers()->Get(param->grad());
    backend_->Zero(arena_, g.offset(), BufferBytes(g));
  }
  double loss_sum = 0;
  for (int64_t m = 0; m < p.microbatches(); ++m) {
    fill(m, I32(p.tokens()), I32(p.targets()));
    Push(p.tokens());
    Push(p.targets());
    const bool last = m + 1 == p.microbatches();
    for (const fb::Instr* instr : *p.microbatch()) {
      if (instr->op() == fb::Op_BucketAllReduce) {
        if (last) StartBucket(*instr);  // the gradients are complete only now
        continue;
      }
      if (auto err = Run(*instr, scalars_)) {
        FinishBuckets();
        return err;
      }
    }
    Pull(p.loss());
    loss_sum += *F32(p.loss());
  }
  if (auto err = FinishBuckets()) return err;
  *loss = loss_sum / static_cast<double>(p.microbatches());
  return std::nullopt;
}

std::optional<std::string> Executor::Step(const FillMicrobatch& fill, const StepOptions& options,
                                          StepResult* result) {
  if (auto err = ComputeGradients(fill, &result->loss)) return err;
  // The reported loss is the mean over the whole global batch.
  if (comm::Communicator* dp = comms_[plan::kAxisDp]; dp && dp->size() > 1) {
    float loss = static_cast<float>(result->loss);
    if (auto err = dp->AllReduce(&loss, 1, comm::ReduceOp::kAvg)) return err;
    result->loss = loss;
  }
  result->nonfinite = false;
  result->grad_norm = std::nan("");
  if (!std::isfinite(result->loss)) {
    result->nonfinite = true;
    return std::nullopt;
  }
  scalars_ = StepScalars{options.lr, options.weight_decay, options.grad_clip, options.step};
  SetCoordinates(scalars_);
  for (const fb::Instr* instr : *plan_.plan->update()) {
    // The norm is complete (and global) before the first update: nothing is applied
    // from a non-finite one.
    if (instr->op() == fb::Op_ClipAndAdamW && !scalars_.clip_ready &&
        !std::isfinite(scalars_.grad_norm_sq)) {
      result->grad_norm = std::sqrt(scalars_.grad_norm_sq);
      result->nonfinite = true;
      return std::nullopt;
    }
    if (auto err = Run(*instr, scalars_)) return err;
  }
  result->grad_norm = std::sqrt(scalars_.grad_norm_sq);
  return std::nullopt;
}

std::optional<std::string> Executor::Run(const fb::Instr& instr, StepScalars& scalars) {
  // Collectives are the executor's, not the backend's: they need the job's
  // communicators (Gloo on CPU; NCCL will serve device memory).
  if (instr.op() == fb::Op_ReduceScatter || instr.op() == fb::Op_AllGather)
    return ShardCollective(instr);
  if (instr.op() == fb::Op_AllGatherInto || instr.op() == fb::Op_ReduceScatterInto)
    return BlockCollective(instr);
  if (instr.op() == fb::Op_AllReduce) return AllReduce(instr);
  // The clock is read only while profiling: this runs for every instruction.
  const auto t0 = profiling_ ? std::chrono::steady_clock::now()
                             : std::chrono::steady_clock::time_point();
  const double norm_before = scalars.grad_norm_sq;
  auto err = backend_->Run(*plan_.plan, instr, arena_, scalars);
  if (!err && instr.op() == fb::Op_GradNormSq) {
    // This instruction's sum of squares covers this rank's ZeRO-1 shards (sharded)
    // or tp blocks (tp_sharded): the norm is over every rank's.
    for (auto [flag, axis] : {std::pair{0, plan::kAxisDp}, std::pair{1, plan::kAxisTp}}) {
      comm::Communicator* c = comms_[axis];
      if (err || instr.ints()->Get(flag) != 1 || !c || c->size() == 1) continue;
      float part = static_cast<float>(scalars.grad_norm_sq - norm_before);
      err = c->AllReduce(&part, 1, comm::ReduceOp::kSum);
      scalars.grad_norm_sq = norm_before + part;
    }
  }
  if (profiling_)
    op_seconds_[instr.op()] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return err;
}

// reduce_scatter / all_gather on whole buffers: each buffer is padded to
// group-size blocks of ceil(n / size) in a scratch vector (sized once, on first
// use), exchanged, and this rank's block is written back in place.
std::optional<std::string> Executor::ShardCollective(const fb::Instr& instr) {
  const int axis = static_cast<int>(instr.ints()->Get(0));
  comm::Communicator* c = comms_[axis];
  if (!c) return std::string(instr.op() == fb::Op_AllGather ? "all_gather" : "reduce_scatter") +
                " over mesh axis " + std::to_string(axis) + " has no communicator";
  const int parts = c->size();
  for (uint32_t b : *instr.buffers()) {
    Pull(b);
    float* data = F32(b);
    const int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(b));
    const int64_t s = plan::ShardSize(n, parts);
    const plan::Shard mine = plan::ShardOf(n, c->rank(), parts);
    scratch_.assign(static_cast<size_t>(s * parts), 0.f);
    if (instr.op() == fb::Op_ReduceScatter) {
      std::copy(data, data + n, scratch_.begin());
      std::vector<float>& out = scratch_out_;
      out.assign(static_cast<size_t>(s), 0.f);
      if (auto err = c->ReduceScatter(scratch_.data(), out.data(), static_cast<size_t>(s)))
        return err;
      const float scale =
          instr.ints()->Get(1) == plan::kReduceAvg ? 1.0f / static_cast<float>(parts) : 1.0f;
      for (int64_t i = 0; i < mine.size; ++i) data[mine.begin + i] = out[i] * scale;
    } else {
      scratch_out_.assign(static_cast<size_t>(s), 0.f);
      std::copy(data + mine.begin, data + mine.begin + mine.size, scratch_out_.begin());
      if (auto err = c->AllGather(scratch_out_.data(), scratch_.data(), static_cast<size_t>(s)))
        return err;
      std::copy(scratch_.begin(), scratch_.begin() + n, data);
    }
    Push(b);
  }
  return std::nullopt;
}

// all_reduce and bucket_all_reduce: in place on each buffer, over the group of
// ranks that differ only in the instruction's axis.
std::optional<std::string> Executor::AllReduce(const fb::Instr& instr) {
  const int axis = static_cast<int>(instr.ints()->Get(0));
  comm::Communicator* c = comms_[axis];
  if (!c)
    return std::string(plan::OpSignature(instr.op(), {}).name) + " over mesh axis " +
           std::to_string(axis) + " has no communicator";
  const auto reduce = static_cast<comm::ReduceOp>(instr.ints()->Get(1));
  for (uint32_t b : *instr.buffers()) {
    Pull(b);
    if (auto err = c->AllReduce(F32(b), plan::NumElements(*plan_.plan->buffers()->Get(b)), reduce))
      return err;
    Push(b);
  }
  return std::nullopt;
}

void Executor::StartBucket(const fb::Instr& instr) {
  if (view_ != arena_) {
    // Staged through host memory: in order, now (a device backend overlaps with
    // its own communicator instead).
    std::optional<std::string> err = FinishBuckets();
    if (!err) err = AllReduce(instr);
    buckets_ = std::async(std::launch::deferred, [err] { return err; });
    return;
  }
  // On the arena itself, in the background, after the bucket before it. The
  // gradients are not touched again before FinishBuckets.
  buckets_ = std::async(std::launch::async,
                        [this, &instr, before = std::move(buckets_)]() mutable {
                          if (before.valid())
                            if (auto err = before.get()) return err;
                          return AllReduce(instr);
                        });
}

std::optional<std::string> Executor::FinishBuckets() {
  if (!buckets_.valid()) return std::nullopt;
  return buckets_.get();
}

// all_gather_into / reduce_scatter_into (ops.h): the blocks are staged in
// rank-major order, [rank][outer][inner], which is what Gloo's collectives
// exchange, and rearranged to [outer][rank][inner] on the way in or out.
std::optional<std::string> Executor::BlockCollective(const fb::Instr& instr) {
  const bool gather = instr.op() == fb::Op_AllGatherInto;
  const int axis = static_cast<int>(instr.ints()->Get(0));
  const int64_t outer = instr.ints()->Get(1), parts = instr.ints()->Get(2);
  const int64_t inner = instr.ints()->Get(3);
  const bool accumulate = instr.ints()->Get(4) != 0;
  const char* name = gather ? "all_gather_into" : "reduce_scatter_into";
  comm::Communicator* c = comms_[axis];
  if (!c || c->size() != parts)
    return std::string(name) + " over mesh axis " + std::to_string(axis) + " expects a group of " +
           std::to_string(parts) + " ranks, this rank's has " + std::to_string(c ? c->size() : 1);
  Pull(instr.buffers()->Get(0));
  if (accumulate) Pull(instr.buffers()->Get(1));
  const float* src = F32(instr.buffers()->Get(0));
  float* dst = F32(instr.buffers()->Get(1));
  const int64_t block = outer * inner;
  scratch_.resize(static_cast<size_t>(block * parts));
  scratch_out_.resize(static_cast<size_t>(block));
  auto store = [&](float* to, float v) { *to = accumulate ? *to + v : v; };
  if (gather) {
    if (auto err = c->AllGather(src, scratch_.data(), static_cast<size_t>(block))) return err;
    for (int64_t r = 0; r < parts; ++r)
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i)
          store(dst + (o * parts + r) * inner + i, scratch_[(r * outer + o) * inner + i]);
    Push(instr.buffers()->Get(1));
    return std::nullopt;
  }
  for (int64_t r = 0; r < parts; ++r)
    for (int64_t o = 0; o < outer; ++o)
      std::copy_n(src + (o * parts + r) * inner, inner, scratch_.data() + (r * outer + o) * inner);
  if (auto err = c->ReduceScatter(scratch_.data(), scratch_out_.data(), static_cast<size_t>(block)))
    return err;
  for (int64_t k = 0; k < block; ++k) store(dst + k, scratch_out_[k]);
  Push(instr.buffers()->Get(1));
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
                  plan::OpSignature(static_cast<fb::Op>(op), {}).name, secs, 100 * secs / total);
    out += line;
  }
  return out;
}

}  // namespace heiretsu::exec
