// Preparing instructions for a rank; see prepare.h. Each case writes the RES
// values op_table.h declares for its opcode, in table order.
#include "runtime/plan/prepare.h"

namespace heiretsu::plan {

Instruction Prepare(const fb::Plan& plan, const fb::Instr& instr, const MeshCoordinates& c) {
  Instruction out;
  out.op = instr.op();
  if (instr.buffers()) out.buffers.assign(instr.buffers()->begin(), instr.buffers()->end());
  if (instr.ints()) out.ints.assign(instr.ints()->begin(), instr.ints()->end());
  if (instr.floats()) out.floats.assign(instr.floats()->begin(), instr.floats()->end());
  const int64_t tp = c.coord[kAxisTp], tp_size = c.size[kAxisTp];
  // ZeRO-1 shards: over dp, or (shard_data) over the data ranks.
  auto shard_of = [&](int64_t n, bool data) {
    const int axis = data ? kAxisData : kAxisDp;
    return ShardOf(n, c.coord[axis], c.size[axis]);
  };
  out.axis = CommAxis(instr.op(), out.ints);
  // An instruction's buffers after this rank dropped some: written back by name.
  auto buffers_of = [](const auto& operands) {
    InstrSink sink;
    operands.Write(sink);
    return sink.buffers;
  };
  switch (instr.op()) {
    case fb::Op_Embedding: {
      auto e = plan::Read<op::Embedding<uint32_t>>(instr);
      const bool vp = e.vocab_parallel != 0;
      out.resolved = {vp ? e.vocab * tp : 0, vp ? e.vocab * tp_size : e.vocab};
      if (vp && tp != 0) e.positions = kNoBuffer;
      out.buffers = buffers_of(e);
      break;
    }
    case fb::Op_EmbeddingGrad: {
      const auto e = plan::Read<op::EmbeddingGrad<uint32_t>>(instr);
      const bool vp = e.vocab_parallel != 0;
      // The table's rows are ids [vocab_begin, vocab_begin + vocab): ids outside it
      // (another rank's block) contribute nothing here.
      out.resolved = {vp ? e.vocab * tp : 0, e.vocab};
      break;
    }
    case fb::Op_Linear: {
      auto l = plan::Read<op::Linear<uint32_t>>(instr);
      if (l.row_parallel && tp != 0) l.bias = kNoBuffer;
      out.buffers = buffers_of(l);
      break;
    }
    case fb::Op_CrossEntropyGrad: {
      const auto ce = plan::Read<op::CrossEntropyGrad<uint32_t>>(instr);
      out.resolved = {ce.vocab_parallel ? ce.vocab * tp : 0};
      break;
    }
    case fb::Op_VocabMax:
      out.resolved = {plan::Read<op::VocabMax<uint32_t>>(instr).vocab * tp};
      break;
    case fb::Op_VocabSumExp: {
      const int64_t vocab = plan::Read<op::VocabSumExp<uint32_t>>(instr).vocab;
      out.resolved = {vocab * tp, vocab * tp_size};
      break;
    }
    case fb::Op_ClipAndAdamW: {
      const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(instr);
      const Shard s = u.shard ? shard_of(u.n, u.shard_data != 0) : Shard{0, u.n};
      out.resolved = {s.begin, s.size};
      break;
    }
    case fb::Op_GradNormSq: {
      const auto norm = plan::Read<op::GradNormSq<uint32_t>>(instr);
      for (uint32_t b : out.buffers) {
        const int64_t n = NumElements(*plan.buffers()->Get(b));
        out.ranges.push_back(norm.sharded ? shard_of(n, norm.shard_data != 0) : Shard{0, n});
      }
      break;
    }
    default:
      break;
  }
  if (OpSignature(instr.op(), out.ints).variadic && out.ranges.empty())
    for (uint32_t b : out.buffers) out.ranges.push_back({0, NumElements(*plan.buffers()->Get(b))});
  return out;
}

std::vector<uint32_t> WeightGradientsOf(const Instruction& instr) {
  std::vector<uint32_t> out;
  auto add = [&](uint32_t b) {
    if (Has(b)) out.push_back(b);
  };
  switch (instr.op) {
    case fb::Op_LinearGrad: {
      const auto l = Read<op::LinearGrad<uint32_t>>(instr);
      add(l.dw);
      add(l.dbias);
      break;
    }
    case fb::Op_LayerNormGrad: {
      const auto n = Read<op::LayerNormGrad<uint32_t>>(instr);
      add(n.dw);
      add(n.db);
      break;
    }
    case fb::Op_RMSNormGrad:
      add(Read<op::RMSNormGrad<uint32_t>>(instr).dw);
      break;
    default:
      break;
  }
  return out;
}

std::vector<std::vector<Instruction>> PrepareUnits(const fb::Plan& plan,
                                                   const MeshCoordinates& coords) {
  std::vector<std::vector<Instruction>> units;
  for (const fb::Unit* unit : *plan.units()) {
    units.emplace_back();
    for (const fb::Instr* in : *unit->instrs()) units.back().push_back(Prepare(plan, *in, coords));
  }
  return units;
}

}  // namespace heiretsu::plan
