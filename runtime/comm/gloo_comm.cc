// Communicator over Gloo (TCP, loopback or a real network), and ConnectGroup. Gloo reports failures
// by throwing; every call is wrapped so the runtime sees an error message naming
// the operation, the group and the cause.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <exception>
#include <vector>

#include "runtime/comm/comm.h"
#include "runtime/comm/shm_comm.h"

namespace heiretsu::comm {
namespace {

template <typename F>
Status Guard(const std::string& what, const std::string& group, F&& body) {
  try {
    body();
    return std::nullopt;
  } catch (const std::exception& e) {
    return Error::Failure(what + " in group '" + group + "' failed: " + e.what());
  }
}

void MaxFloats(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<float*>(c);
  auto* x = static_cast<const float*>(a);
  auto* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = std::max(x[i], y[i]);
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> context, std::string name,
                   std::vector<int> job_ranks)
      : context_(std::move(context)), name_(std::move(name)), job_ranks_(std::move(job_ranks)) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  const std::string& name() const override { return name_; }
  std::string transport() const override { return "TCP (Gloo)"; }

  Status AllReduce(float* data, size_t n, ReduceOp op) override {
    if (size() == 1 || n == 0) return std::nullopt;
    auto err = Guard("all_reduce", name_, [&] {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, n);
      opts.setTag(NextTag());
      if (op == ReduceOp::kMax)
        opts.setReduceFunction(&MaxFloats);
      else
        opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
            &gloo::sum<float>));
      gloo::allreduce(opts);
    });
    if (!err && op == ReduceOp::kAvg) {
      const float inv = 1.0f / static_cast<float>(size());
      for (size_t i = 0; i < n; ++i) data[i] *= inv;
    }
    return err;
  }

  Status AllGather(const float* in, float* out, size_t n) override {
    if (size() == 1) {
      std::copy(in, in + n, out);
      return std::nullopt;
    }
    if (in == out + static_cast<size_t>(rank()) * n) {  // in place: Gloo wants them apart
      gather_in_.assign(in, in + n);
      in = gather_in_.data();
    }
    return Guard("all_gather", name_, [&] {
      gloo::AllgatherOptions opts(context_);
      opts.setInput(const_cast<float*>(in), n);
      opts.setOutput(out, n * static_cast<size_t>(size()));
      opts.setTag(NextTag());
      gloo::allgather(opts);
    });
  }

  // Exchange blocks with all_to_all, then sum the received blocks in rank order:
  // the same traffic as a reduce-scatter, and a summation order that is the same
  // on every run.
  Status ReduceScatter(const float* in, float* out, size_t n,
                       ReduceOp op = ReduceOp::kSum) override {
    if (size() == 1) {
      std::copy(in, in + n, out);
      return std::nullopt;
    }
    scratch_.resize(n * static_cast<size_t>(size()));
    if (auto err = AllToAll(in, scratch_.data(), n)) return err->Within("reduce_scatter");
    std::copy(scratch_.begin(), scratch_.begin() + static_cast<ptrdiff_t>(n), out);
    for (int r = 1; r < size(); ++r)
      for (size_t i = 0; i < n; ++i) {
        const float x = scratch_[static_cast<size_t>(r) * n + i];
        out[i] = op == ReduceOp::kMax ? std::max(out[i], x) : out[i] + x;
      }
    if (op == ReduceOp::kAvg) {
      const float inv = 1.0f / static_cast<float>(size());
      for (size_t i = 0; i < n; ++i) out[i] *= inv;
    }
    return std::nullopt;
  }

  Status AllToAll(const float* in, float* out, size_t n) override {
    if (size() == 1) {
      std::copy(in, in + n, out);
      return std::nullopt;
    }
    return Guard("all_to_all", name_, [&] {
      gloo::AlltoallOptions opts(context_);
      opts.setInput(const_cast<float*>(in), n * static_cast<size_t>(size()));
      opts.setOutput(out, n * static_cast<size_t>(size()));
      opts.setTag(NextTag());
      gloo::alltoall(opts);
    });
  }

  Status AllToAllV(const float* in, const std::vector<int64_t>& in_counts, float* out,
                   const std::vector<int64_t>& out_counts) override {
    if (size() == 1) {
      std::copy(in, in + in_counts[0], out);
      return std::nullopt;
    }
    return Guard("all_to_all", name_, [&] {
      gloo::AlltoallvOptions opts(context_);
      opts.setInput(const_cast<float*>(in), in_counts);
      opts.setOutput(out, out_counts);
      opts.setTag(NextTag());
      gloo::alltoallv(opts);
    });
  }

  Status Send(const float* data, size_t n, int peer) override {
    return Guard("send to " + Member(peer), name_, [&] {
      auto buffer = context_->createUnboundBuffer(const_cast<float*>(data), n * sizeof(float));
      buffer->send(peer, kPointToPointSlot);
      if (!buffer->waitSend(context_->getTimeout())) throw std::runtime_error("timed out");
    });
  }

  Status Recv(float* data, size_t n, int peer) override {
    return Guard("recv from " + Member(peer), name_, [&] {
      auto buffer = context_->createUnboundBuffer(data, n * sizeof(float));
      buffer->recv(peer, kPointToPointSlot);
      if (!buffer->waitRecv(context_->getTimeout())) throw std::runtime_error("timed out");
    });
  }

  // Gloo queues an unbound buffer's send until the peer's recv of the same slot
  // is posted, and matches both sides per (pair, slot) in posting order; one slot
  // for every point-to-point transfer keeps that order the order of the calls.
  Status StartSend(const float* data, size_t n, int peer, int key) override {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    auto err = Guard("send to " + Member(peer), name_, [&] {
      buffer = context_->createUnboundBuffer(const_cast<float*>(data), n * sizeof(float));
      buffer->send(peer, kPointToPointSlot);
    });
    if (!err) pending_.push_back({std::move(buffer), peer, key});
    return err;
  }

  Status WaitSends(int key) override {
    using std::chrono::milliseconds;
    const auto deadline = std::chrono::steady_clock::now() + context_->getTimeout();
    Status first;
    std::vector<PendingSend> others;
    for (PendingSend& send : pending_) {
      if (key != kAllSends && send.key != key) {
        others.push_back(std::move(send));
        continue;
      }
      auto err = Guard("send to " + Member(send.peer), name_, [&] {
        const auto left = std::chrono::duration_cast<milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (!send.buffer->waitSend(std::max(left, milliseconds(1))))
          throw std::runtime_error("aborted");
      });
      if (err && !first) first = err;
    }
    // Destroying a buffer waits for Gloo's last use of it; it is never touched after.
    pending_ = std::move(others);
    return first;
  }

  Status Barrier() override {
    if (size() == 1) return std::nullopt;
    return Guard("barrier", name_, [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(NextTag());
      gloo::barrier(opts);
    });
  }

 private:
  // Collectives run in the same order on every rank of the group (the compiler
  // checks it), so a counter gives matching tags without coordination.
  uint32_t NextTag() { return tag_++; }

  // A member for messages: "member 1 (job rank 3)", or "member 1" when the job
  // ranks are unknown.
  std::string Member(int peer) const {
    std::string out = "member " + std::to_string(peer);
    if (peer >= 0 && static_cast<size_t>(peer) < job_ranks_.size())
      out += " (job rank " + std::to_string(job_ranks_[static_cast<size_t>(peer)]) + ")";
    return out;
  }

  struct PendingSend {
    std::unique_ptr<gloo::transport::UnboundBuffer> buffer;
    int peer;
    int key;
  };

  static constexpr uint64_t kPointToPointSlot = 0x5e9d;

  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::string name_;
  std::vector<int> job_ranks_;
  uint32_t tag_ = 1;
  std::vector<float> scratch_;
  std::vector<float> gather_in_;  // an in-place all_gather's own block
  // Started sends not yet waited for, in posting order (destroyed before the
  // context they use).
  std::vector<PendingSend> pending_;
};

}  // namespace

Status ConnectGroup(const GroupOptions& o, std::unique_ptr<Communicator>* out,
                    std::string* no_shm) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size)
    return Error::Failure("group '" + o.group + "': rank " + std::to_string(o.rank) +
                          " is not in [0, " + std::to_string(o.size) + ")");
  if (!o.job_ranks.empty() && o.job_ranks.size() != static_cast<size_t>(o.size))
    return Error::Failure("group '" + o.group + "': " + std::to_string(o.job_ranks.size()) +
                          " job ranks for " + std::to_string(o.size) + " members");
  std::unique_ptr<Communicator> tcp;
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore files(o.store_dir);
    gloo::rendezvous::PrefixStore store(o.group, files);
    auto context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.size);
    context->setTimeout(o.timeout);
    context->connectFullMesh(store, device);
    tcp = std::make_unique<GlooCommunicator>(std::move(context), o.group, o.job_ranks);
  } catch (const std::exception& e) {
    return Error::Failure("cannot connect group '" + o.group + "' (rank " +
                          std::to_string(o.rank) + " of " + std::to_string(o.size) +
                          ") through " + o.store_dir + ": " + e.what());
  }
  if (!o.shared_memory || o.size == 1) {
    *out = std::move(tcp);
    return std::nullopt;
  }
  return AttachSharedMemory(std::move(tcp), o.timeout, o.job_ranks, o.shm_slot_bytes, out, no_shm);
}

}  // namespace heiretsu::comm
