// The explain report; see explain.h. Communication volume counts, for each
// collective of one optimizer step, the bytes it reduces and the bytes each rank
// sends with a ring algorithm (2 (n - 1) / n of the buffer for all_reduce).
#include "runtime/plan/explain.h"

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <set>

#include "runtime/plan/layout.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/timeline.h"

namespace heiretsu::plan {

std::string FormatBytes(uint64_t b) {
  char buf[64];
  if (b >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.2f GiB)", b, b / 1073741824.0);
  else if (b >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.2f MiB)", b, b / 1048576.0);
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " (%.1f KiB)", b, b / 1024.0);
  return buf;
}

namespace {

// "  by dtype          f32 ... in N buffers, bf16 ... in M" where a plan stores
// other floats than f32: the bytes of the buffers other than parameters, gradients
// and moments, by element type, before the memory plan lets them share addresses.
std::string ByDtype(const fb::Plan& p) {
  uint64_t bytes[4] = {0, 0, 0, 0};
  int64_t count[4] = {0, 0, 0, 0};
  std::vector<bool> state(p.buffers()->size(), false);
  for (const fb::Param* param : *p.params())
    for (uint32_t b : {param->value(), param->grad(), param->exp_avg(), param->exp_avg_sq()})
      if (Has(b)) state[b] = true;
  bool half = false;
  for (uint32_t i = 0; i < p.buffers()->size(); ++i) {
    const fb::Buffer& b = *p.buffers()->Get(i);
    if (state[i] || b.dtype() > fb::DType_MAX) continue;
    bytes[b.dtype()] += static_cast<uint64_t>(NumElements(b) * DTypeSize(b.dtype()));
    ++count[b.dtype()];
    half = half || IsHalf(b.dtype());
  }
  if (!half) return "";
  std::string out = "  by dtype          ";
  const char* sep = "";
  for (fb::DType t : {fb::DType_BF16, fb::DType_F16, fb::DType_F32, fb::DType_I32}) {
    if (count[t] == 0) continue;
    out += std::string(sep) + DTypeName(t) + " " + FormatBytes(bytes[t]) + " in " +
           std::to_string(count[t]) + " buffer" + (count[t] == 1 ? "" : "s");
    sep = ", ";
  }
  return out + " (activations, before sharing)\n";
}

// The first rank of stage `stage`.
int RankOfStage(const fb::Mesh& mesh, int stage) {
  return static_cast<int>(stage * (WorldSize(mesh) / mesh.pp()));
}

// The ranks running stage `stage`, as "a-b" when contiguous.
std::string RanksOf(const fb::Mesh& mesh, int stage) {
  const int64_t per_stage = WorldSize(mesh) / mesh.pp();
  const int64_t first = stage * per_stage, last = first + per_stage - 1;
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

// "forward(0) backward(0) ... update", with long schedules shortened.
std::string ScheduleLine(const fb::Plan& p) {
  std::string out;
  const std::vector<ScheduledRun> runs = ScheduleOf(p);
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs.size() > 24 && i == 12) {
      out += " ... (" + std::to_string(runs.size() - 18) + " more)";
      i = runs.size() - 6;
    }
    const ScheduledRun& r = runs[i];
    out += (out.empty() ? "" : " ") + (r.unit->name() ? r.unit->name()->str() : "?");
    if (r.run->microbatch() >= 0) out += "(" + std::to_string(r.run->microbatch()) + ")";
  }
  return out;
}

// "layers 0-1" (or "layers 0, 2" for interleaved chunks) from the parameter
// names (layers.N....), "" without any.
std::string LayersOf(const fb::Plan& p) {
  std::set<int> layers;
  for (const fb::Param* param : *p.params()) {
    const std::string name = param->name()->str();
    if (name.rfind("layers.", 0) == 0) layers.insert(std::atoi(name.c_str() + 7));
  }
  if (layers.empty()) return "";
  std::string out;
  for (auto it = layers.begin(); it != layers.end();) {  // runs of consecutive layers
    int lo = *it, hi = lo;
    while (++it != layers.end() && *it == hi + 1) hi = *it;
    out += (out.empty() ? "" : ", ") + std::to_string(lo) + (hi > lo ? "-" + std::to_string(hi) : "");
  }
  return (layers.size() == 1 ? "layer " : "layers ") + out;
}

// The pipeline section: the schedules placed in time (timeline.h) as a stage x
// time grid, and the bubble they imply beside the published formula.
std::string ExplainPipeline(const std::vector<LoadedPlan>& programs) {
  constexpr double kForward = 1, kBackward = 2;
  Timeline t;
  if (auto err = SimulateTimeline(programs, kForward, kBackward, &t)) return err->message + "\n";
  const fb::Plan& first = *programs.front().plan;
  char line[256];
  std::string out;
  std::snprintf(line, sizeof line,
                "pipeline: %zu stages, %" PRId64 " microbatches per step; the schedules in time "
                "(a forward 1 unit, a backward 2, or B and W 1 each):\n",
                programs.size(), first.microbatches());
  out += line;
  out += TimelineGrid(t, kForward);
  const bool split = t.split;
  const int64_t chunks = t.chunks;
  std::snprintf(line, sizeof line,
                "bubble: %.1f%% of the stages' time idle (simulated); %s = %.1f%% for %s\n",
                100 * t.bubble,
                split ? "(p - 1) / (3 m + p - 1)"
                : chunks > 1 ? "(p - 1) / (v m + p - 1)"
                             : "(p - 1) / (m + p - 1)",
                100 * FormulaBubble(static_cast<int64_t>(programs.size()), first.microbatches(),
                                    split, chunks),
                split ? "ZB-H1 (F, B and W of equal time)"
                : chunks > 1 ? "interleaved 1F1B over v chunks per stage"
                             : "GPipe and 1F1B");
  out += line;
  out += "activations peak per stage (the microbatches each keeps at once):\n";
  for (const LoadedPlan& lp : programs)
    out += "  stage " + std::to_string(lp.plan->stage()) + "  " + FormatBytes(lp.plan->activation_bytes()) +
           ", " + std::to_string(lp.plan->slots()) +
           (lp.plan->slots() == 1 ? " microbatch" : " microbatches") +
           (chunks > 1 ? " per chunk\n" : "\n");
  return out;
}

// The MoE layers of a program: which experts each ep rank holds, the expert
// parameters of one rank, and the capacity buffers of each layer (sizes from the
// instructions: the dispatch buffer [E, slots, d] and the experts' input [E / ep,
// ep x slots, d]). Empty for a program without MoE layers.
std::string ExplainMoe(const fb::Plan& p, const MeshCoordinates& coords) {
  std::vector<const fb::Instr*> routes, dispatches, experts;
  for (const fb::Unit* u : *p.units())
    for (const fb::Instr* in : *u->instrs()) {
      if (in->op() == fb::Op_MoeRoute) routes.push_back(in);
      if (in->op() == fb::Op_MoeDispatch) dispatches.push_back(in);
      if (in->op() == fb::Op_MoeExperts) experts.push_back(in);
    }
  if (routes.empty() || experts.size() != routes.size() || dispatches.size() != routes.size())
    return "";
  const int ep = p.mesh()->ep();
  const auto r0 = plan::Read<op::MoeRoute<uint32_t>>(*routes.front());
  const auto x0 = plan::Read<op::MoeExperts<uint32_t>>(*experts.front());
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line, "moe: %zu layer%s, %" PRId64 " experts, top-%" PRId64
                ", %" PRId64 " slots per expert and sequence of %" PRId64 " tokens%s\n",
                routes.size(), routes.size() == 1 ? "" : "s", r0.experts, r0.top_k, r0.capacity,
                r0.seq, r0.capacity == r0.seq ? " (every token kept)" : "");
  out += line;
  std::string held;
  for (int r = 0; r < ep && r < 8; ++r) {
    const int64_t first = r * x0.experts, last = first + x0.experts - 1;
    held += (r ? ", " : "") + std::string("ep rank ") + std::to_string(r) + ": " +
            (first == last ? "expert " + std::to_string(first)
                           : "experts " + std::to_string(first) + "-" + std::to_string(last));
  }
  if (ep > 8) held += ", ...";
  std::snprintf(line, sizeof line, "  experts per rank  %" PRId64 " of %" PRId64 " (%s)\n",
                x0.experts, r0.experts, held.c_str());
  out += line;
  // Expert weights: the parameters the grouped GEMMs read.
  std::set<uint32_t> weights;
  for (const fb::Instr* in : experts) {
    const auto x = plan::Read<op::MoeExperts<uint32_t>>(*in);
    for (uint32_t w : {x.w_in, x.w_out, x.w_gate})
      if (w != kNoBuffer) weights.insert(w);
  }
  uint64_t local = 0, logical = 0;
  for (const fb::Param* param : *p.params())
    if (weights.count(param->value())) {
      local += static_cast<uint64_t>(NumElements(*p.buffers()->Get(param->value())));
      logical += static_cast<uint64_t>(BlockOf(*param, coords).global_numel());
    }
  out += "  expert weights    " + std::to_string(local) + " values, " + FormatBytes(4 * local) +
         " (of " + std::to_string(logical) + " logical values)\n";
  const auto d0 = plan::Read<op::MoeDispatch<uint32_t>>(*dispatches.front());
  const uint64_t dispatch = 4 * static_cast<uint64_t>(d0.experts * d0.slots * d0.d);
  const uint64_t input = 4 * static_cast<uint64_t>(x0.experts * x0.tokens * x0.d);
  std::snprintf(line, sizeof line,
                "  capacity buffers  per layer and microbatch: dispatch [%" PRId64 ", %" PRId64
                ", %" PRId64 "] %s, experts' input [%" PRId64 ", %" PRId64 ", %" PRId64
                "] %s\n",
                d0.experts, d0.slots, d0.d, FormatBytes(dispatch).c_str(), x0.experts, x0.tokens, x0.d,
                FormatBytes(input).c_str());
  out += line;
  return out;
}

std::string ExplainProgram(const LoadedPlan& loaded, const BackendMemory& backend_memory) {
  const fb::Plan& p = *loaded.plan;
  const fb::Mesh& mesh = *p.mesh();
  uint64_t params = 0, values = 0, grads = 0, moments = 0, logical = 0;
  int split = 0;
  const MeshCoordinates coords = CoordinatesOf(p, RankOfStage(mesh, p.stage()));
  for (const fb::Param* param : *p.params()) {
    const Block block = BlockOf(*param, coords);  // layout.h: this rank's block
    logical += static_cast<uint64_t>(block.global_numel());
    split += block.whole() ? 0 : 1;
    uint64_t n = static_cast<uint64_t>(NumElements(*p.buffers()->Get(param->value())));
    params += n;
    values += 4 * n;
    grads += 4 * n;
    // ZeRO-1 moments are this rank's shard only.
    moments += 8 * static_cast<uint64_t>(NumElements(*p.buffers()->Get(param->exp_avg())));
  }
  std::string out;
  char line[512];
  std::string io;
  if (Has(p.tokens())) io += "takes tokens";
  if (Has(p.targets())) io += std::string(io.empty() ? "" : ", ") + "takes targets";
  if (Has(p.loss())) io += std::string(io.empty() ? "" : ", ") + "produces the loss";
  const std::string ranks = RanksOf(mesh, p.stage());
  std::snprintf(line, sizeof line, "program %d (%s), run by rank%s %s: %s\n", p.stage(),
                loaded.path.c_str(), ranks.find('-') == std::string::npos ? "" : "s", ranks.c_str(),
                io.empty() ? "no inputs of its own" : io.c_str());
  out += line;
  if (const std::string layers = LayersOf(p); mesh.pp() > 1 && !layers.empty())
    out += "holds " + layers + "\n";
  size_t instrs = 0;
  for (const fb::Unit* u : *p.units()) instrs += u->instrs()->size();
  std::snprintf(line, sizeof line,
                "schedule: %" PRId64 " microbatch%s of %" PRId64 " x %" PRId64
                " tokens per rank per step; %u units, %zu instructions; %u runs:\n  ",
                p.microbatches(), p.microbatches() == 1 ? "" : "es", p.micro_batch_size(), p.seq(),
                p.units()->size(), instrs,
                p.schedule()->size());
  out += line + ScheduleLine(p) + "\n";
  std::snprintf(line, sizeof line, "memory per rank (the arena, known before launch):\n");
  out += line;
  out += "  parameters        " + std::to_string(params) + " values, " + FormatBytes(values) + "\n";
  if (split > 0)
    out += "                    (of " + std::to_string(logical) + " logical values: " +
           std::to_string(split) + " of " + std::to_string(p.params()->size()) +
           " tensors split over mesh axes)\n";
  out += "  gradients         " + FormatBytes(grads) + "\n";
  out += "  optimizer state   " + FormatBytes(moments) + " (AdamW moments)\n";
  out += "  activations peak  " + FormatBytes(p.activation_bytes()) + "\n";
  if (p.activation_bytes_f32() > 0) {  // 16-bit buffers (--precision)
    std::snprintf(line, sizeof line, "                    (%s in fp32: %.1f%% less)\n",
                  FormatBytes(p.activation_bytes_f32()).c_str(),
                  100.0 * (1.0 - static_cast<double>(p.activation_bytes()) /
                                     static_cast<double>(p.activation_bytes_f32())));
    out += line;
  }
  out += ByDtype(p);
  if (p.slots() > 1)  // the microbatches whose activations the schedule keeps at once
    out += "  activation slots  " + std::to_string(p.slots()) + ", " + FormatBytes(p.slot_bytes()) +
           " apart\n";
  out += "  arena             " + FormatBytes(p.arena_bytes()) + "\n";
  if (backend_memory) out += backend_memory(p, coords);
  out += ExplainMoe(p, coords);

  // Communication per step by (group, collective): bytes, bytes sent per rank,
  // counting each instruction once per run of its unit in the schedule (a gradient
  // bucket once per step, in its unit's last run). all_reduce sends 2 (n - 1) / n of
  // the buffer per rank in a ring; reduce_scatter and all_gather (n - 1) / n of the
  // whole; send the whole buffer.
  std::map<std::pair<int64_t, std::string>, std::pair<uint64_t, double>> comm;
  auto bytes_of = [&](uint32_t b) {
    const fb::Buffer& buffer = *p.buffers()->Get(b);
    return static_cast<uint64_t>(DTypeSize(buffer.dtype())) *
           static_cast<uint64_t>(NumElements(buffer));
  };
  // Adds an instruction's bytes to (axis, name); `ring` is the fraction of them each
  // rank sends per group member beyond itself (2 for all_reduce), 0 for send.
  auto add = [&](int64_t axis, const char* name, double ring, uint64_t bytes) {
    const int n = AxisSize(mesh, axis);
    const double factor = ring == 0 ? 1.0 : n > 1 ? ring * (n - 1) / n : 0.0;
    auto& entry = comm[{axis, name}];
    entry.first += bytes;
    entry.second += factor * static_cast<double>(bytes);
  };
  auto all = [&](const std::vector<uint32_t>& buffers) {
    uint64_t bytes = 0;
    for (uint32_t b : buffers) bytes += bytes_of(b);
    return bytes;
  };
  auto count = [&](const fb::Instr& in) {
    switch (in.op()) {
      case fb::Op_AllReduce:
      case fb::Op_BucketAllReduce: {  // the same operands
        const auto c = plan::Read<op::AllReduce<uint32_t>>(in);
        return add(c.axis, "all_reduce", 2.0, all(c.buffers));
      }
      case fb::Op_ReduceScatter:
      case fb::Op_BucketReduceScatter: {  // the same operands
        const auto c = plan::Read<op::ReduceScatter<uint32_t>>(in);
        return add(c.axis, "reduce_scatter", 1.0, all(c.buffers));
      }
      case fb::Op_AllGather: {
        const auto c = plan::Read<op::AllGather<uint32_t>>(in);
        return add(c.axis, "all_gather", 1.0, all(c.buffers));
      }
      case fb::Op_AllGatherInto: {  // the whole tensor is the gathered one
        const auto c = plan::Read<op::AllGatherInto<uint32_t>>(in);
        return add(c.axis, "all_gather", 1.0, bytes_of(c.dst));
      }
      case fb::Op_ReduceScatterInto: {
        const auto c = plan::Read<op::ReduceScatterInto<uint32_t>>(in);
        return add(c.axis, "reduce_scatter", 1.0, bytes_of(c.src));
      }
      case fb::Op_Send: {
        const auto c = plan::Read<op::Send<uint32_t>>(in);
        return add(c.axis, "send", 0.0, bytes_of(c.x));
      }
      case fb::Op_AllToAll: {  // a rank keeps its own block, sends the others
        const auto c = plan::Read<op::AllToAll<uint32_t>>(in);
        // Variable-size (MoE): only the rows in use travel, so the buffers bound it.
        return add(c.axis, c.variable ? "all_to_all rows" : "all_to_all", 1.0, bytes_of(c.src));
      }
      default:
        return;
    }
  };
  for (const ScheduledRun& r : ScheduleOf(p))
    for (const fb::Instr* in : *r.unit->instrs())
      if (!IsBucket(in->op()) || r.last) count(*in);
  out += "communication per step:\n";
  if (comm.empty()) out += "  none\n";
  for (const auto& [key, v] : comm) {
    const std::string bytes = FormatBytes(v.first), sent = FormatBytes(static_cast<uint64_t>(v.second));
    if (key.second == "all_to_all rows")  // the MoE exchange: its buffers bound it
      std::snprintf(line, sizeof line,
                    "  %s group of %d: all_to_all of at most %s, at most %s sent per rank (the "
                    "rows in use of each expert)\n",
                    AxisName(key.first), AxisSize(mesh, key.first), bytes.c_str(), sent.c_str());
    else
      std::snprintf(line, sizeof line, "  %s group of %d: %s of %s, %s sent per rank%s\n",
                    AxisName(key.first), AxisSize(mesh, key.first), key.second.c_str(),
                    bytes.c_str(), sent.c_str(),
                    key.second == "send" ? "" : key.second == "all_to_all" ? " (one block to each peer)" : " (ring)");
    out += line;
  }
  return out;
}

}  // namespace

std::string Explain(const std::vector<LoadedPlan>& programs,
                    const BackendMemory& backend_memory) {
  const fb::Plan& first = *programs.front().plan;
  const fb::Mesh& mesh = *first.mesh();
  char line[512];
  std::snprintf(line, sizeof line,
                "plan: model '%s', mesh dp=%d pp=%d tp=%d ep=%d (%lld rank%s), %zu program%s\n",
                first.model() ? first.model()->c_str() : "", mesh.dp(), mesh.pp(), mesh.tp(),
                mesh.ep(), static_cast<long long>(WorldSize(mesh)), WorldSize(mesh) == 1 ? "" : "s",
                programs.size(),
                programs.size() == 1 ? "" : "s");
  std::string out = line;
  // The model card (plan.fbs): what checkpoints carry for `sample` and `export`.
  int spec_lines = 0;
  if (first.spec())
    for (char c : first.spec()->string_view()) spec_lines += c == '\n';
  std::snprintf(line, sizeof line, "model card: tokenizer %s, spec %s (%d lines), %u facts\n",
                first.tokenizer() && first.tokenizer()->size() ? first.tokenizer()->c_str() : "none",
                first.spec_file() && first.spec_file()->size() ? first.spec_file()->c_str() : "none",
                spec_lines, first.config() ? first.config()->size() : 0u);
  out += line;
  for (const LoadedPlan& lp : programs) out += ExplainProgram(lp, backend_memory);
  if (programs.size() > 1) out += ExplainPipeline(programs);
  return out;
}

std::string ExplainMermaid(const std::vector<LoadedPlan>& programs) {
  Timeline t;
  if (auto err = SimulateTimeline(programs, 1, 2, &t)) return err->message + "\n";
  return TimelineMermaid(t);
}

}  // namespace heiretsu::plan
