// The explain report; see explain.h. Communication volume counts, for each
// collective of one optimizer step, the bytes it reduces and the bytes each rank
// sends with a ring algorithm (2 (n - 1) / n of the buffer for all_reduce).
#include "runtime/plan/explain.h"

#include <cinttypes>
#include <cstdio>
#include <map>

#include "runtime/plan/ops.h"

namespace heiretsu::plan {
namespace {

std::string Bytes(uint64_t b) {
  char buf[64];
  if (b >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.2f GiB)", b, b / 1073741824.0);
  else if (b >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.2f MiB)", b, b / 1048576.0);
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.1f KiB)", b, b / 1024.0);
  return buf;
}

int AxisSize(const fb::Mesh& mesh, int64_t axis) {
  switch (axis) {
    case kAxisDp: return mesh.dp();
    case kAxisPp: return mesh.pp();
    case kAxisTp: return mesh.tp();
    default: return mesh.ep();
  }
}

}  // namespace

std::string Explain(const LoadedPlan& loaded) {
  const fb::Plan& p = *loaded.plan;
  const fb::Mesh& mesh = *p.mesh();
  const int world = mesh.dp() * mesh.pp() * mesh.tp() * mesh.ep();
  uint64_t params = 0, values = 0, grads = 0, moments = 0;
  for (const fb::Param* param : *p.params()) {
    uint64_t n = static_cast<uint64_t>(NumElements(*p.buffers()->Get(param->value())));
    params += n;
    values += 4 * n;
    grads += 4 * n;
    // ZeRO-1 moments are this rank's shard only.
    moments += 8 * static_cast<uint64_t>(NumElements(*p.buffers()->Get(param->exp_avg())));
  }
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line,
                "plan %s: model '%s', mesh dp=%d pp=%d tp=%d ep=%d (%d ranks), program %d run "
                "by ranks 0-%d\n",
                loaded.path.c_str(), p.model() ? p.model()->c_str() : "", mesh.dp(), mesh.pp(),
                mesh.tp(), mesh.ep(), world, p.program(), world - 1);
  out += line;
  std::snprintf(line, sizeof line,
                "schedule: %" PRId64 " microbatches of %" PRId64 " x %" PRId64
                " tokens per rank per step; %u + %u instructions\n",
                p.microbatches(), p.micro_batch_size(), p.seq(), p.microbatch()->size(),
                p.update()->size());
  out += line;
  std::snprintf(line, sizeof line, "memory per rank (the arena, known before launch):\n");
  out += line;
  out += "  parameters        " + std::to_string(params) + " values, " + Bytes(values) + "\n";
  out += "  gradients         " + Bytes(grads) + "\n";
  out += "  optimizer state   " + Bytes(moments) + " (AdamW moments)\n";
  out += "  activations peak  " + Bytes(p.activation_bytes()) + "\n";
  out += "  arena             " + Bytes(p.arena_bytes()) + "\n";

  // Communication per step by (group, collective): bytes, bytes sent per rank.
  // all_reduce sends 2 (n - 1) / n of the buffer per rank in a ring; reduce_scatter
  // and all_gather (n - 1) / n of the whole. The microbatch stream's collectives
  // (tensor parallelism) count once per microbatch.
  std::map<std::pair<int64_t, std::string>, std::pair<uint64_t, double>> comm;
  auto count = [&](const fb::Instr* in, int64_t times) {
    const char* name = nullptr;
    switch (in->op()) {
      case fb::Op_AllReduce: name = "all_reduce"; break;
      case fb::Op_BucketAllReduce: name = "all_reduce"; break;
      case fb::Op_ReduceScatter: name = "reduce_scatter"; break;
      case fb::Op_AllGather: name = "all_gather"; break;
      case fb::Op_AllGatherInto: name = "all_gather"; break;
      case fb::Op_ReduceScatterInto: name = "reduce_scatter"; break;
      default: return;
    }
    int64_t axis = in->ints()->Get(0);
    uint64_t bytes = 0;
    if (in->op() == fb::Op_AllGatherInto)  // the whole tensor is the gathered one
      bytes = 4 * static_cast<uint64_t>(NumElements(*p.buffers()->Get(in->buffers()->Get(1))));
    else if (in->op() == fb::Op_ReduceScatterInto)
      bytes = 4 * static_cast<uint64_t>(NumElements(*p.buffers()->Get(in->buffers()->Get(0))));
    else
      for (uint32_t b : *in->buffers())
        bytes += 4 * static_cast<uint64_t>(NumElements(*p.buffers()->Get(b)));
    bytes *= static_cast<uint64_t>(times);
    int n = AxisSize(mesh, axis);
    const bool reduce = in->op() == fb::Op_AllReduce || in->op() == fb::Op_BucketAllReduce;
    double factor = n > 1 ? (reduce ? 2.0 : 1.0) * (n - 1) / n : 0.0;
    auto& entry = comm[{axis, name}];
    entry.first += bytes;
    entry.second += factor * static_cast<double>(bytes);
  };
  for (const fb::Instr* in : *p.microbatch())  // gradient buckets: once per step
    count(in, in->op() == fb::Op_BucketAllReduce ? 1 : p.microbatches());
  for (const fb::Instr* in : *p.update()) count(in, 1);
  out += "communication per step:\n";
  if (comm.empty()) out += "  none\n";
  for (const auto& [key, v] : comm) {
    std::snprintf(line, sizeof line, "  %s group of %d: %s of %s, %s sent per rank (ring)\n",
                  AxisName(key.first), AxisSize(mesh, key.first), key.second.c_str(),
                  Bytes(v.first).c_str(), Bytes(static_cast<uint64_t>(v.second)).c_str());
    out += line;
  }
  return out;
}

}  // namespace heiretsu::plan
