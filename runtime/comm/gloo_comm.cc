// Communicator over Gloo (TCP, loopback or a real network). Gloo reports failures
// by throwing; every call is wrapped so the runtime sees an error message naming
// the operation, the group and the cause.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <exception>
#include <vector>

#include "runtime/comm/comm.h"

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
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> context, std::string name)
      : context_(std::move(context)), name_(std::move(name)) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }
  const std::string& name() const override { return name_; }

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
  Status ReduceScatter(const float* in, float* out, size_t n) override {
    if (size() == 1) {
      std::copy(in, in + n, out);
      return std::nullopt;
    }
    scratch_.resize(n * static_cast<size_t>(size()));
    if (auto err = AllToAll(in, scratch_.data(), n)) return err->Within("reduce_scatter");
    std::fill(out, out + n, 0.f);
    for (int r = 0; r < size(); ++r)
      for (size_t i = 0; i < n; ++i) out[i] += scratch_[static_cast<size_t>(r) * n + i];
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

  Status Send(const float* data, size_t n, int peer) override {
    return Guard("send to rank " + std::to_string(peer), name_, [&] {
      auto buffer = context_->createUnboundBuffer(const_cast<float*>(data), n * sizeof(float));
      buffer->send(peer, kPointToPointSlot);
      if (!buffer->waitSend(context_->getTimeout())) throw std::runtime_error("timed out");
    });
  }

  Status Recv(float* data, size_t n, int peer) override {
    return Guard("recv from rank " + std::to_string(peer), name_, [&] {
      auto buffer = context_->createUnboundBuffer(data, n * sizeof(float));
      buffer->recv(peer, kPointToPointSlot);
      if (!buffer->waitRecv(context_->getTimeout())) throw std::runtime_error("timed out");
    });
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

  static constexpr uint64_t kPointToPointSlot = 0x5e9d;

  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::string name_;
  uint32_t tag_ = 1;
  std::vector<float> scratch_;
};

}  // namespace

Status ConnectGloo(const GlooOptions& o, std::unique_ptr<Communicator>* out) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size)
    return Error::Failure("group '" + o.group + "': rank " + std::to_string(o.rank) +
                          " is not in [0, " + std::to_string(o.size) + ")");
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore files(o.store_dir);
    gloo::rendezvous::PrefixStore store(o.group, files);
    auto context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.size);
    context->setTimeout(o.timeout);
    context->connectFullMesh(store, device);
    *out = std::make_unique<GlooCommunicator>(std::move(context), o.group);
    return std::nullopt;
  } catch (const std::exception& e) {
    return Error::Failure("cannot connect group '" + o.group + "' (rank " +
                          std::to_string(o.rank) + " of " + std::to_string(o.size) +
                          ") through " + o.store_dir + ": " + e.what());
  }
}

}  // namespace heiretsu::comm
