// Plan loading and verification; see plan.h. The checks follow the schema's
// structure: FlatBuffers' own verifier first (every offset inside the file), then
// the header, the buffers against the arena, the parameters, and every instruction
// against its opcode signature (runtime/plan/ops.h).
#include "runtime/plan/plan.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "runtime/plan/layout.h"
#include "runtime/plan/ops.h"

namespace heiretsu::plan {
namespace {

// Largest arena a plan may ask for (1 TiB) and largest attribute value.
constexpr uint64_t kMaxArenaBytes = uint64_t{1} << 40;
constexpr int64_t kMaxAttribute = (int64_t{1} << 31) - 1;


class Checker {
 public:
  Checker(const std::string& path, const fb::Plan& plan) : path_(path), plan_(plan) {}

  std::optional<std::string> Run() {
    if (plan_.version() != kPlanVersion)
      return Fail("plan version " + std::to_string(plan_.version()) +
                  ", this runtime reads version " + std::to_string(kPlanVersion) +
                  " (recompile the spec)");
    const fb::Mesh* mesh = plan_.mesh();
    if (!mesh || mesh->dp() < 1 || mesh->pp() < 1 || mesh->tp() < 1 || mesh->ep() < 1 ||
        WorldSize(*mesh) > kMaxAttribute)
      return Fail("missing or invalid mesh");
    if (plan_.programs() != mesh->pp())
      return Fail("the plan says its directory holds " + std::to_string(plan_.programs()) +
                  " programs, its mesh has pp = " + std::to_string(mesh->pp()));
    if (plan_.stage() < 0 || plan_.stage() >= mesh->pp())
      return Fail("stage " + std::to_string(plan_.stage()) + " is outside [0, pp = " +
                  std::to_string(mesh->pp()) + ")");
    if (plan_.micro_batch_size() < 1 || plan_.microbatches() < 1 || plan_.seq() < 1 ||
        plan_.vocab() < 1)
      return Fail("micro_batch_size, microbatches, seq and vocab must be positive");
    if (plan_.micro_batch_size() > kMaxAttribute || plan_.seq() > kMaxAttribute ||
        plan_.vocab() > kMaxAttribute || plan_.micro_batch_size() * plan_.seq() > kMaxAttribute)
      return Fail("micro_batch_size " + std::to_string(plan_.micro_batch_size()) + " x seq " +
                  std::to_string(plan_.seq()) + " (or vocab " + std::to_string(plan_.vocab()) +
                  ") exceeds 2^31 - 1");
    if (plan_.microbatches() > kMaxMicrobatches)
      return Fail(std::to_string(plan_.microbatches()) + " microbatches per step; the limit is " +
                  std::to_string(kMaxMicrobatches));
    if (plan_.arena_bytes() > kMaxArenaBytes)
      return Fail("arena of " + std::to_string(plan_.arena_bytes()) + " bytes exceeds 1 TiB");
    // Activation slots: at least one, at most one per microbatch of the step.
    if (plan_.slots() < 1)
      return Fail("slots = 0; a program keeps at least one microbatch's activations");
    if (plan_.slots() > plan_.microbatches())
      return Fail("slots = " + std::to_string(plan_.slots()) + " exceeds the " +
                  std::to_string(plan_.microbatches()) +
                  " microbatches of a step (a slot holds one microbatch's activations)");
    if (plan_.slots() > 1 && plan_.slot_bytes() % 4 != 0)
      return Fail("slot_bytes = " + std::to_string(plan_.slot_bytes()) +
                  " is not a multiple of 4");
    if (!plan_.buffers() || !plan_.params() || !plan_.units() || !plan_.schedule())
      return Fail("missing buffers, params, units or schedule");
    if (auto err = CheckBuffers()) return err;
    // The arena is what the memory plan placed, no more: a corrupt size must not
    // make the runtime allocate (and clear) memory nobody uses.
    if (plan_.arena_bytes() > (max_end_ + 63) / 64 * 64)
      return Fail("arena of " + std::to_string(plan_.arena_bytes()) +
                  " bytes is larger than its buffers need (" + std::to_string(max_end_) + ")");
    if (auto err = CheckParams()) return err;
    if (auto err = CheckIo()) return err;
    for (uint32_t u = 0; u < plan_.units()->size(); ++u) {
      const fb::Unit* unit = plan_.units()->Get(u);
      if (unit->kind() > fb::UnitKind_MAX)
        return Fail("unit " + std::to_string(u) + " has unknown kind " +
                    std::to_string(unit->kind()));
      if (!unit->instrs()) return Fail("unit " + std::to_string(u) + " has no instruction list");
      if (auto err = CheckInstrs(*unit->instrs(), UnitName(u))) return err;
    }
    if (auto err = CheckDecode()) return err;
    if (mesh->pp() > 1) {
      // The gradient norm is summed over pp at each stage's first clip_adamw.
      bool updates = false;
      for (const fb::Unit* unit : *plan_.units())
        for (const fb::Instr* in : *unit->instrs()) updates |= in->op() == fb::Op_ClipAndAdamW;
      if (!updates)
        return Fail("a pipeline stage's program updates no parameter (every stage takes part "
                    "in the gradient norm at its first clip_adamw)");
    }
    return CheckSchedule();
  }

 private:
  std::optional<std::string> Fail(const std::string& message) const {
    return path_ + ": invalid plan: " + message;
  }

  std::string BufferName(uint32_t index) const {
    const fb::Buffer* b = plan_.buffers()->Get(index);
    return "#" + std::to_string(index) + (b->name() ? " '" + b->name()->str() + "'" : "");
  }

  std::optional<std::string> CheckBuffers() {
    for (uint32_t i = 0; i < plan_.buffers()->size(); ++i) {
      const fb::Buffer* b = plan_.buffers()->Get(i);
      if (!b->shape()) return Fail("buffer #" + std::to_string(i) + " has no shape");
      if (DTypeSize(b->dtype()) == 0)
        return Fail("buffer " + BufferName(i) + " has unknown dtype " +
                    std::to_string(b->dtype()));
      int64_t n = NumElements(*b);
      if (n < 0) return Fail("buffer " + BufferName(i) + " has an invalid shape");
      uint64_t bytes = static_cast<uint64_t>(n) * DTypeSize(b->dtype());
      if (b->offset() % DTypeSize(b->dtype()) != 0 || b->offset() > plan_.arena_bytes() ||
          bytes > plan_.arena_bytes() - b->offset())
        return Fail("buffer " + BufferName(i) + " [" + std::to_string(b->offset()) + ", +" +
                    std::to_string(bytes) + ") is not inside the arena of " +
                    std::to_string(plan_.arena_bytes()) + " bytes");
      // A slotted buffer has one copy per slot, slot_bytes apart: they must not
      // overlap, and the last one must fit as well.
      uint64_t last = b->offset();
      if (b->slotted() && plan_.slots() > 1) {
        const uint64_t k = plan_.slots() - 1;
        if (bytes > plan_.slot_bytes())
          return Fail("slotted buffer " + BufferName(i) + " of " + std::to_string(bytes) +
                      " bytes is larger than slot_bytes = " + std::to_string(plan_.slot_bytes()) +
                      ": its copies would overlap");
        uint64_t shift = 0;
        if (__builtin_mul_overflow(k, plan_.slot_bytes(), &shift) ||
            __builtin_add_overflow(last, shift, &last) || last > plan_.arena_bytes() ||
            bytes > plan_.arena_bytes() - last)
          return Fail("slotted buffer " + BufferName(i) + ": its copy for slot " +
                      std::to_string(k) + ", [" + std::to_string(b->offset()) + " + " +
                      std::to_string(k) + " x slot_bytes " + std::to_string(plan_.slot_bytes()) +
                      ", +" + std::to_string(bytes) + "), is not inside the arena of " +
                      std::to_string(plan_.arena_bytes()) + " bytes");
      }
      max_end_ = std::max(max_end_, last + bytes);
    }
    return std::nullopt;
  }

  std::optional<std::string> CheckBufferRef(uint32_t index, fb::DType dtype, int64_t numel,
                                            const std::string& what) {
    if (index >= plan_.buffers()->size())
      return Fail(what + " refers to buffer #" + std::to_string(index) + " of " +
                  std::to_string(plan_.buffers()->size()));
    const fb::Buffer* b = plan_.buffers()->Get(index);
    if (b->dtype() != dtype)
      return Fail(what + ": buffer " + BufferName(index) + " has dtype " +
                  fb::EnumNameDType(b->dtype()) + ", expected " + fb::EnumNameDType(dtype));
    if (numel >= 0 && NumElements(*b) != numel)
      return Fail(what + ": buffer " + BufferName(index) + " has " +
                  std::to_string(NumElements(*b)) + " elements, expected " +
                  std::to_string(numel));
    return std::nullopt;
  }

  std::optional<std::string> CheckParams() {
    std::set<std::string> names;
    for (uint32_t i = 0; i < plan_.params()->size(); ++i) {
      const fb::Param* p = plan_.params()->Get(i);
      if (!p->name() || !p->shape())
        return Fail("parameter #" + std::to_string(i) + " has no name or shape");
      int64_t numel = 1;
      for (int64_t d : *p->shape())
        if (d < 1 || d > kMaxAttribute || __builtin_mul_overflow(numel, d, &numel))
          return Fail("parameter '" + p->name()->str() + "' has an invalid shape");
      if (p->init() > fb::Init_MAX)
        return Fail("parameter '" + p->name()->str() + "' has unknown init");
      if (p->init() == fb::Init_Normal && !(p->std() > 0))
        return Fail("parameter '" + p->name()->str() + "' has std " + std::to_string(p->std()));
      const std::string what = "parameter '" + p->name()->str() + "'";
      if (!names.insert(p->name()->str()).second)
        return Fail(what + " appears twice (a checkpoint could hold only one of them)");
      // The buffers hold this rank's block of the logical tensor (layout.h).
      if (auto err = CheckSplits(*p, *plan_.mesh())) return Fail(what + ": " + *err);
      if (p->splits())
        for (const fb::Split* split : *p->splits())
          numel /= CoordinatesOf(*plan_.mesh(), 0).size[split->axis()];
      // ZeRO-1: the moments are this rank's shard over dp (or the data ranks),
      // ceil(numel / size) elements.
      if (p->shard_axis() != kAxisDp && p->shard_axis() != kAxisData)
        return Fail(what + " has its ZeRO-1 shard over axis " + std::to_string(p->shard_axis()) +
                    "; it must be dp or data");
      const int group = AxisSize(*plan_.mesh(), p->shard_axis());
      if (p->shard() != 0 && !(group > 1 && p->shard() == ShardSize(numel, group)))
        return Fail(what + " has a ZeRO-1 shard of " + std::to_string(p->shard()) +
                    " elements; with " + AxisName(p->shard_axis()) + " = " + std::to_string(group) +
                    " it must be 0 or " + std::to_string(ShardSize(numel, group)));
      const int64_t moments = p->shard() ? p->shard() : numel;
      for (uint32_t b : {p->value(), p->grad()})
        if (auto err = CheckBufferRef(b, fb::DType_F32, numel, what)) return err;
      for (uint32_t b : {p->exp_avg(), p->exp_avg_sq()})
        if (auto err = CheckBufferRef(b, fb::DType_F32, moments, what)) return err;
      // Parameters, gradients (accumulated over the microbatches) and moments are
      // the step's: one copy.
      for (uint32_t b : {p->value(), p->grad(), p->exp_avg(), p->exp_avg_sq()})
        if (plan_.buffers()->Get(b)->slotted())
          return Fail(what + ": its buffer " + BufferName(b) +
                      " is slotted; a parameter's buffers have one copy");
    }
    return std::nullopt;
  }

  // A program has tokens where it has the embedding, targets and a loss where it
  // has the cross-entropy, and a loss without targets where only auxiliary losses
  // (of MoE layers) add to it; targets need a loss. A decode program has tokens, a
  // position and logits, and neither targets nor a loss.
  std::optional<std::string> CheckIo() {
    if (Has(plan_.position()) || Has(plan_.logits())) {
      if (!Has(plan_.position()) || !Has(plan_.logits()) || !Has(plan_.tokens()) ||
          Has(plan_.targets()) || Has(plan_.loss()))
        return Fail("a decode program has tokens, a position and logits, and no targets or "
                    "loss");
      const int64_t rows = plan_.micro_batch_size() * plan_.seq();
      if (auto err = CheckBufferRef(plan_.tokens(), fb::DType_I32, rows, "tokens")) return err;
      if (auto err = CheckBufferRef(plan_.position(), fb::DType_I32, 1, "position")) return err;
      if (auto err = CheckBufferRef(plan_.logits(), fb::DType_F32, -1, "logits")) return err;
      // [rows, padded vocabulary]: the classes first, then any padding columns.
      const int64_t logits = NumElements(*plan_.buffers()->Get(plan_.logits()));
      if (logits % rows != 0 || logits / rows < plan_.vocab())
        return Fail("logits: buffer " + BufferName(plan_.logits()) + " has " +
                    std::to_string(logits) + " elements, not " + std::to_string(rows) +
                    " rows of at least vocab " + std::to_string(plan_.vocab()));
      return std::nullopt;
    }
    const int64_t tokens = plan_.micro_batch_size() * plan_.seq();
    if (Has(plan_.tokens()))
      if (auto err = CheckBufferRef(plan_.tokens(), fb::DType_I32, tokens, "tokens")) return err;
    if (Has(plan_.targets()))
      if (auto err = CheckBufferRef(plan_.targets(), fb::DType_I32, tokens, "targets")) return err;
    if (Has(plan_.targets()) && !Has(plan_.loss()))
      return Fail("a program with targets must have a loss");
    if (Has(plan_.loss())) return CheckBufferRef(plan_.loss(), fb::DType_F32, 1, "loss");
    return std::nullopt;
  }

  // A decode program (Plan.position) runs forward instructions only, and every
  // position it reads (cached_attention's, the embedding's and rope's offsets) is
  // Plan.position; a training program has none of them. (Instructions verified.)
  std::optional<std::string> CheckDecode() {
    const bool decode = Has(plan_.position());
    for (uint32_t u = 0; u < plan_.units()->size(); ++u) {
      const fb::Unit* unit = plan_.units()->Get(u);
      if (decode && unit->kind() != fb::UnitKind_Forward && unit->instrs()->size() > 0)
        return Fail(UnitName(u) + ": a decode program runs forward instructions only");
      for (uint32_t i = 0; i < unit->instrs()->size(); ++i) {
        const fb::Instr& in = *unit->instrs()->Get(i);
        uint32_t position = kNoBuffer;
        if (in.op() == fb::Op_CachedAttention)
          position = plan::Read<op::CachedAttention<uint32_t>>(in).position;
        else if (in.op() == fb::Op_Embedding)
          position = plan::Read<op::Embedding<uint32_t>>(in).offset;
        else if (in.op() == fb::Op_Rope)
          position = plan::Read<op::Rope<uint32_t>>(in).offset;
        if (Has(position) && position != plan_.position())
          return Fail(UnitName(u) + " instruction " + std::to_string(i) + " (" +
                      OpName(in.op()) + ") reads a position from buffer " +
                      BufferName(position) + (decode ? ", not the program's position "
                                                     : " in a program without one") +
                      (decode ? BufferName(plan_.position()) : ""));
      }
    }
    return std::nullopt;
  }

  // A ZeRO-1 shard of a tensor of n elements: none (0), or this rank's ceil(n / dp)
  // of dp > 1 pieces, which is what prepare.h and checkpoints cut.
  std::string UnitName(uint32_t u) const {
    const fb::Unit* unit = plan_.units()->Get(u);
    return "unit " + std::to_string(u) + (unit->name() ? " '" + unit->name()->str() + "'" : "");
  }

  // The schedule the executor runs as it stands: every microbatch unit runs exactly
  // once for every microbatch, on its own chunk, a backward kind after that
  // microbatch's forward of the same chunk, all of them before the first unit of
  // the step (comm, update), and those at most once, the update exactly once.
  // Activation slots (each chunk has its own): a microbatch run's slot is below
  // slots, a step unit's is 0; a microbatch holds the slot of its first run of the
  // chunk, every run of it uses that slot, and no other microbatch of the chunk
  // starts on the slot until the holder has run every microbatch unit of the chunk
  // (its slotted buffers are free only then).
  std::optional<std::string> CheckSchedule() {
    const auto& schedule = *plan_.schedule();
    const uint32_t units = plan_.units()->size();
    const int64_t m = plan_.microbatches();
    if (schedule.size() > static_cast<uint64_t>(units) * static_cast<uint64_t>(m + 1))
      return Fail("a schedule of " + std::to_string(schedule.size()) + " runs for " +
                  std::to_string(units) + " units of " + std::to_string(m) + " microbatches");
    // ran[u][mb]: unit u ran for microbatch mb (step units: slot 0).
    std::vector<std::vector<bool>> ran(units);
    using Key = std::pair<int64_t, int64_t>;  // (chunk, microbatch) or (chunk, slot)
    std::map<Key, bool> forward_done;
    int updates = 0;
    bool step_started = false;
    const int64_t slots = plan_.slots();
    std::map<int64_t, int64_t> chunk_units;  // per chunk: its microbatch units
    for (const fb::Unit* unit : *plan_.units()) {
      if (unit->chunk() < 0) return Fail("a unit of chunk " + std::to_string(unit->chunk()));
      if (PerMicrobatch(unit->kind())) ++chunk_units[unit->chunk()];
    }
    // slot_of[(chunk, mb)]: the slot the microbatch holds; per (chunk, slot) the
    // microbatch holding it and how many of its units have not run.
    std::map<Key, int64_t> slot_of, holder, left;
    for (uint32_t i = 0; i < schedule.size(); ++i) {
      const fb::Run* r = schedule.Get(i);
      const std::string what = "schedule entry " + std::to_string(i);
      if (r->unit() >= units)
        return Fail(what + " runs unit " + std::to_string(r->unit()) + " of " +
                    std::to_string(units));
      const fb::Unit* unit = plan_.units()->Get(r->unit());
      const std::string name = UnitName(r->unit());
      if (r->chunk() != unit->chunk())
        return Fail(what + " (" + name + ") runs chunk " + std::to_string(r->chunk()) +
                    "; the unit is chunk " + std::to_string(unit->chunk()) + "'s");
      std::vector<bool>& seen = ran[r->unit()];
      if (PerMicrobatch(unit->kind())) {
        if (r->microbatch() < 0 || r->microbatch() >= m)
          return Fail(what + " (" + name + ") runs microbatch " +
                      std::to_string(r->microbatch()) + " of " + std::to_string(m));
        if (step_started)
          return Fail(what + " runs " + name + " after the step's own units began");
        const size_t mb = static_cast<size_t>(r->microbatch());
        const Key key{r->chunk(), r->microbatch()};
        seen.resize(static_cast<size_t>(m), false);
        if (seen[mb])
          return Fail(what + " runs " + name + " for microbatch " + std::to_string(mb) +
                      " a second time");
        seen[mb] = true;
        if (unit->kind() == fb::UnitKind_Forward)
          forward_done[key] = true;
        else if (!forward_done[key])
          return Fail(what + " runs " + name + " of microbatch " + std::to_string(mb) +
                      " before its forward");
        const int64_t slot = r->slot();
        const std::string on = " of microbatch " + std::to_string(mb) + " on slot " +
                               std::to_string(slot);
        if (slot < 0 || slot >= slots)
          return Fail(what + " runs " + name + on + "; the program has " +
                      std::to_string(slots) + " slots");
        const Key held{r->chunk(), slot};
        if (!slot_of.count(key)) {  // the microbatch's first run takes its slot
          if (auto h = holder.find(held); h != holder.end())
            return Fail(what + " runs " + name + on + ", which microbatch " +
                        std::to_string(h->second) + " still holds (" +
                        std::to_string(left[held]) + " of its " +
                        std::to_string(chunk_units[r->chunk()]) +
                        " microbatch units have not run)");
          slot_of[key] = slot;
          holder[held] = static_cast<int64_t>(mb);
          left[held] = chunk_units[r->chunk()];
        } else if (slot_of[key] != slot) {
          return Fail(what + " runs " + name + on + "; its earlier runs used slot " +
                      std::to_string(slot_of[key]));
        }
        if (--left[held] == 0) holder.erase(held);
      } else {
        if (r->microbatch() != -1)
          return Fail(what + " (" + name + ") is a unit of the step, not of microbatch " +
                      std::to_string(r->microbatch()));
        if (!seen.empty()) return Fail(what + " runs " + name + " a second time");
        if (r->slot() != 0)
          return Fail(what + " (" + name + ") is a unit of the step and runs on slot " +
                      std::to_string(r->slot()) + "; the step's units use slot 0");
        seen.push_back(true);
        step_started = true;
        if (unit->kind() == fb::UnitKind_Update) ++updates;
      }
    }
    for (uint32_t u = 0; u < units; ++u)
      if (PerMicrobatch(plan_.units()->Get(u)->kind()) &&
          std::count(ran[u].begin(), ran[u].end(), true) != m)
        return Fail("the schedule never runs " + UnitName(u) + " (it must run once per "
                    "microbatch)");
    if (updates != 1)
      return Fail("the schedule runs " + std::to_string(updates) +
                  " update units; a step has exactly one");
    return std::nullopt;
  }

  std::optional<std::string> CheckInstrs(const flatbuffers::Vector<flatbuffers::Offset<fb::Instr>>& list,
                                         const std::string& unit) {
    const MeshCoordinates mesh = CoordinatesOf(*plan_.mesh(), 0);
    for (uint32_t i = 0; i < list.size(); ++i) {
      const fb::Instr* in = list.Get(i);
      std::string what = unit + " instruction " + std::to_string(i);
      if (in->op() > fb::Op_MAX) return Fail(what + " has unknown opcode " + std::to_string(in->op()));
      std::vector<int64_t> ints;
      if (in->ints()) ints.assign(in->ints()->begin(), in->ints()->end());
      Signature sig = OpSignature(in->op(), ints);
      what += " (" + std::string(sig.name) + ")";
      if (ints.size() != sig.ints.size())
        return Fail(what + " has " + std::to_string(ints.size()) + " integer attributes, expected " +
                    std::to_string(sig.ints.size()));
      for (size_t k = 0; k < ints.size(); ++k) {
        if (ints[k] < 0 || ints[k] > MaxValue(sig.ints[k].kind))
          return Fail(what + ": " + sig.ints[k].name + " = " + std::to_string(ints[k]) +
                      " is out of range [0, " + std::to_string(MaxValue(sig.ints[k].kind)) + "]");
      }
      for (auto [lo, hi] : sig.at_most)
        if (ints[lo] > ints[hi])
          return Fail(what + ": " + sig.ints[lo].name + " = " + std::to_string(ints[lo]) +
                      " exceeds " + sig.ints[hi].name + " = " + std::to_string(ints[hi]));
      size_t floats = in->floats() ? in->floats()->size() : 0;
      if (floats != sig.floats.size())
        return Fail(what + " has " + std::to_string(floats) + " float attributes, expected " +
                    std::to_string(sig.floats.size()));
      if (auto err = CheckAgainstMesh(*in, ints, mesh, what)) return err;
      size_t nbuf = in->buffers() ? in->buffers()->size() : 0;
      if (sig.variadic) {
        if (nbuf == 0) return Fail(what + " has no buffers");
        for (uint32_t b : *in->buffers())
          if (auto err = CheckBufferRef(b, sig.variadic_dtype, -1, what)) return err;
        continue;
      }
      if (nbuf != sig.buffers.size())
        return Fail(what + " has " + std::to_string(nbuf) + " buffers, expected " +
                    std::to_string(sig.buffers.size()));
      for (auto [slot, flag] : sig.present_iff)
        if ((in->buffers()->Get(slot) != kNoBuffer) != (ints[flag] == 1))
          return Fail(what + ": buffer '" + sig.buffers[slot].name + "' must be present exactly when " +
                      sig.ints[flag].name + " = 1");
      // An activation operand (Takes16Bit) takes 16-bit storage too (BF16, F16: the
      // backend computes in float32, backend.h); every other operand, the executor's
      // own instructions' (communication) among them, takes float32 only.
      for (size_t k = 0; k < nbuf; ++k) {
        const BufferSlot& slot = sig.buffers[k];
        uint32_t b = in->buffers()->Get(k);
        if (b == kNoBuffer) {
          if (!slot.optional()) return Fail(what + ": required buffer '" + slot.name + "' is absent");
          continue;
        }
        fb::DType dtype = slot.dtype;
        if (dtype == fb::DType_F32 && b < plan_.buffers()->size() &&
            IsHalf(plan_.buffers()->Get(b)->dtype()) && Takes16Bit(in->op(), slot.name))
          dtype = plan_.buffers()->Get(b)->dtype();
        if (auto err = CheckBufferRef(b, dtype, slot.numel, what + " '" + slot.name + "'"))
          return err;
      }
    }
    return std::nullopt;
  }

  // What an instruction asks of the mesh: a collective or send/recv runs over a
  // group of more than one rank (the executor has no communicator for an axis of
  // size 1), a send or recv names another member of it, a block collective's parts
  // is the group's size, a ZeRO-1 update covers a dp shard prepare.h can cut.
  std::optional<std::string> CheckAgainstMesh(const fb::Instr& in, const std::vector<int64_t>& ints,
                                              const MeshCoordinates& mesh,
                                              const std::string& what) const {
    const std::optional<int64_t> axis = CommAxis(in.op(), ints);
    if (axis && mesh.size[*axis] < 2)
      return Fail(what + " runs over " + AxisName(*axis) + ", which has one rank in this mesh");
    switch (in.op()) {
      case fb::Op_Send:
      case fb::Op_Recv: {
        const auto p2p = plan::Read<op::Send<uint32_t>>(in);  // send and recv: the same operands
        if (p2p.peer >= mesh.size[p2p.axis] ||
            (p2p.axis == kAxisPp && p2p.peer == plan_.stage()))
          return Fail(what + ": peer " + std::to_string(p2p.peer) + " on " +
                      AxisName(p2p.axis) + " (size " + std::to_string(mesh.size[p2p.axis]) +
                      ") is not another rank of the group");
        break;
      }
      case fb::Op_AllGatherInto:
      case fb::Op_ReduceScatterInto: {  // the same operands
        const auto bc = plan::Read<op::AllGatherInto<uint32_t>>(in);
        if (bc.parts != mesh.size[bc.axis])
          return Fail(what + ": parts = " + std::to_string(bc.parts) + ", but its group over " +
                      AxisName(bc.axis) + " has " + std::to_string(mesh.size[bc.axis]) + " ranks");
        break;
      }
      case fb::Op_ClipAndAdamW: {
        const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(in);
        const int axis = u.shard_data ? kAxisData : kAxisDp, group = mesh.size[axis];
        if (u.shard != 0 && !(group > 1 && u.shard == ShardSize(u.n, group)))
          return Fail(what + ": shard = " + std::to_string(u.shard) + " of n = " +
                      std::to_string(u.n) + "; with " + AxisName(axis) + " = " +
                      std::to_string(group) + " it must be 0 or " +
                      std::to_string(ShardSize(u.n, group)));
        break;
      }
      case fb::Op_AllToAll: {
        const auto a = plan::Read<op::AllToAll<uint32_t>>(in);
        if (a.parts != mesh.size[a.axis])
          return Fail(what + ": parts = " + std::to_string(a.parts) + ", but its group over " +
                      AxisName(a.axis) + " has " + std::to_string(mesh.size[a.axis]) + " ranks");
        if (a.variable && (a.row == 0 || a.inner % a.row != 0))
          return Fail(what + ": rows of " + std::to_string(a.row) + " elements do not tile its " +
                      "blocks of " + std::to_string(a.inner));
        break;
      }
      default:
        break;
    }
    return std::nullopt;
  }

  const std::string& path_;
  const fb::Plan& plan_;
  uint64_t max_end_ = 0;  // the end of the last byte any buffer uses
};

}  // namespace

std::optional<std::string> ConfigValue(const fb::Plan& plan, const std::string& key) {
  if (plan.config())
    for (const fb::KeyValue* kv : *plan.config())
      if (kv->key() && kv->key()->str() == key) return kv->value() ? kv->value()->str() : "";
  return std::nullopt;
}

std::string ProgramFileName(int stage) {
  return "program-" + std::to_string(stage) + ".hplan";
}

const char* DTypeName(fb::DType dtype) {
  switch (dtype) {
    case fb::DType_F32: return "f32";
    case fb::DType_I32: return "i32";
    case fb::DType_BF16: return "bf16";
    case fb::DType_F16: return "f16";
  }
  return "?";
}

int64_t DTypeSize(fb::DType dtype) {
  switch (dtype) {
    case fb::DType_F32:
    case fb::DType_I32:
      return 4;
    case fb::DType_BF16:
    case fb::DType_F16:
      return 2;
  }
  return 0;
}

const char* StoragePrecision(const fb::Plan& plan) {
  bool bf16 = false;
  for (const fb::Buffer* b : *plan.buffers()) {
    if (b->dtype() == fb::DType_F16) return "fp16";
    bf16 = bf16 || b->dtype() == fb::DType_BF16;
  }
  return bf16 ? "bf16" : "fp32";
}

int64_t NumElements(const fb::Buffer& buffer) {
  int64_t n = 1;
  if (!buffer.shape()) return -1;
  for (int64_t d : *buffer.shape())
    if (d < 0 || d > kMaxAttribute || __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}

std::vector<uint64_t> SlotOffsets(const fb::Plan& plan, uint32_t slot) {
  std::vector<uint64_t> out;
  out.reserve(plan.buffers()->size());
  for (const fb::Buffer* b : *plan.buffers())
    out.push_back(b->offset() + (b->slotted() ? uint64_t{slot} * plan.slot_bytes() : 0));
  return out;
}

uint64_t Fnv1a64(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

void SealPlan(std::vector<uint8_t>* bytes) {
  const uint64_t sum = Fnv1a64(bytes->data(), bytes->size());
  for (size_t k = 0; k < kPlanTrailerBytes; ++k) bytes->push_back(static_cast<uint8_t>(sum >> (8 * k)));
}

namespace {

std::optional<std::string> VerifyBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  // Layout: a 4-byte little-endian length, then the FlatBuffer, whose identifier
  // "HRPL" (the magic) sits at byte 8, then the 8-byte checksum trailer.
  if (bytes.size() < 12) return path + ": not a heiretsu plan (only " + std::to_string(bytes.size()) + " bytes)";
  if (!flatbuffers::BufferHasIdentifier(bytes.data(), fb::PlanIdentifier(), true))
    return path + ": not a heiretsu plan (bad magic; expected \"HRPL\" at byte 8)";
  const uint64_t length = flatbuffers::ReadScalar<uint32_t>(bytes.data());
  if (length + 4 == bytes.size())
    return path + ": plan without a checksum trailer (written by a heiretsu that did not "
                  "checksum plan files): recompile the spec";
  if (length + 4 + kPlanTrailerBytes != bytes.size())
    return path + ": truncated or padded plan: it declares " +
           std::to_string(length + 4 + kPlanTrailerBytes) + " bytes (with its checksum), the file has " +
           std::to_string(bytes.size());
  const size_t body = bytes.size() - kPlanTrailerBytes;
  uint64_t stated = 0;
  for (size_t k = 0; k < kPlanTrailerBytes; ++k) stated |= uint64_t{bytes[body + k]} << (8 * k);
  const uint64_t computed = Fnv1a64(bytes.data(), body);
  if (computed != stated) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "checksum %016llx of its bytes does not match %016llx in its trailer",
                  static_cast<unsigned long long>(computed), static_cast<unsigned long long>(stated));
    return path + ": corrupt plan: " + buf + " (recompile the spec, or copy the file again)";
  }
  flatbuffers::Verifier verifier(bytes.data(), body);
  if (!fb::VerifySizePrefixedPlanBuffer(verifier))
    return path + ": corrupt plan (the FlatBuffers structure does not verify)";
  return Checker(path, *fb::GetSizePrefixedPlan(bytes.data())).Run();
}

}  // namespace

Status VerifyPlan(const std::string& path, const std::vector<uint8_t>& bytes) {
  if (auto err = VerifyBytes(path, bytes)) return Error::BadInput(*err);
  return std::nullopt;
}

Status LoadPlan(const std::string& path, LoadedPlan* out) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Error::BadInput(path + ": cannot open plan: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Error::BadInput(path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) >= (uint64_t{1} << 31))
    return Error::BadInput(path + ": plan file of " + std::to_string(st.st_size) + " bytes is too large");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::BadInput(path + ": cannot open plan: " + std::strerror(errno));
  out->bytes.resize(static_cast<size_t>(st.st_size));
  in.read(reinterpret_cast<char*>(out->bytes.data()), st.st_size);
  if (in.gcount() != st.st_size) return Error::BadInput(path + ": short read");
  if (auto err = VerifyPlan(path, out->bytes)) return err;
  out->path = path;
  out->plan = fb::GetSizePrefixedPlan(out->bytes.data());
  return std::nullopt;
}

std::vector<ScheduledRun> ScheduleOf(const fb::Plan& plan) {
  std::vector<ScheduledRun> out;
  std::vector<size_t> last(plan.units()->size(), 0);
  std::vector<bool> seen(plan.units()->size(), false);
  for (const fb::Run* r : *plan.schedule()) {
    last[r->unit()] = out.size();
    out.push_back({r, plan.units()->Get(r->unit()), !seen[r->unit()], false});
    seen[r->unit()] = true;
  }
  for (size_t u = 0; u < last.size(); ++u)
    if (!out.empty() && out[last[u]].run->unit() == u) out[last[u]].last = true;
  return out;
}

bool PerMicrobatch(fb::UnitKind kind) {
  return kind == fb::UnitKind_Forward || kind == fb::UnitKind_Backward ||
         kind == fb::UnitKind_BackwardInput || kind == fb::UnitKind_BackwardWeight;
}

int64_t WorldSize(const fb::Mesh& mesh) {
  return int64_t{mesh.dp()} * mesh.pp() * mesh.tp() * mesh.ep();
}

Status LoadPlanDirectory(const std::string& dir, std::vector<LoadedPlan>* out) {
  out->clear();
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return Error::BadInput(dir + ": cannot open plan directory: " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return Error::BadInput(dir + ": not a directory (give the plan directory that 'heiretsu compile SPEC -o "
                 "PLAN_DIR' wrote)");
  // Moved-from LoadedPlans keep their bytes' heap buffer, so plan pointers stay valid.
  out->emplace_back();
  if (auto err = LoadPlan(dir + "/" + ProgramFileName(0), &out->back())) return err;
  const int programs = out->back().plan->programs();
  for (int s = 0; s < programs; ++s) {
    if (s > 0) {
      out->emplace_back();
      if (auto err = LoadPlan(dir + "/" + ProgramFileName(s), &out->back())) return err;
    }
    const LoadedPlan& lp = (*out)[static_cast<size_t>(s)];
    const fb::Plan& first = *(*out)[0].plan;
    const fb::Plan& p = *lp.plan;
    auto differs = [&](const std::string& what) {
      return Error::BadInput(lp.path + ": does not belong with " + (*out)[0].path + ": its " + what + " differs");
    };
    if (p.stage() != s)
      return Error::BadInput(lp.path + ": holds the program of stage " + std::to_string(p.stage()) +
             ", expected stage " + std::to_string(s));
    const fb::Mesh &a = *p.mesh(), &b = *first.mesh();
    if (a.dp() != b.dp() || a.pp() != b.pp() || a.tp() != b.tp() || a.ep() != b.ep())
      return differs("mesh");
    if ((p.model() ? p.model()->str() : "") != (first.model() ? first.model()->str() : ""))
      return differs("model");
    if (p.micro_batch_size() != first.micro_batch_size() ||
        p.microbatches() != first.microbatches() || p.seq() != first.seq() ||
        p.vocab() != first.vocab())
      return differs("batch geometry or vocabulary");
  }
  // Every send of stage a to stage b has its recv on b, in the same order and of the
  // same size, or the job would abort or hang in its first step.
  std::map<std::pair<int, int>, std::vector<int64_t>> sends, recvs;
  for (int s = 0; s < programs; ++s) {
    const fb::Plan& p = *(*out)[static_cast<size_t>(s)].plan;
    for (const ScheduledRun& run : ScheduleOf(p))
      for (const fb::Instr* in : *run.unit->instrs()) {
        if (in->op() != fb::Op_Send && in->op() != fb::Op_Recv) continue;
        const auto p2p = plan::Read<op::Send<uint32_t>>(*in);  // send and recv alike
        if (p2p.axis != kAxisPp) continue;
        const int64_t n = NumElements(*p.buffers()->Get(p2p.x));
        const int peer = static_cast<int>(p2p.peer);
        if (in->op() == fb::Op_Send)
          sends[{s, peer}].push_back(n);
        else
          recvs[{peer, s}].push_back(n);
      }
  }
  for (auto* side : {&sends, &recvs})
    for (const auto& [key, unused] : *side) {
      const std::vector<int64_t>& sent = sends[key];
      const std::vector<int64_t>& got = recvs[key];
      if (sent == got) continue;
      const std::string from = (*out)[static_cast<size_t>(key.first)].path;
      const std::string to = (*out)[static_cast<size_t>(key.second)].path;
      size_t i = 0;
      while (i < sent.size() && i < got.size() && sent[i] == got[i]) ++i;
      if (i < sent.size() && i < got.size())
        return Error::BadInput(from + ": its send #" + std::to_string(i + 1) + " to stage " +
                               std::to_string(key.second) + " has " + std::to_string(sent[i]) +
                               " elements, the matching recv of " + to + " has " +
                               std::to_string(got[i]));
      return Error::BadInput(from + " sends " + std::to_string(sent.size()) +
                             " tensors per step to stage " + std::to_string(key.second) + ", " +
                             to + " receives " + std::to_string(got.size()) + " from it");
    }
  // Exactly one program takes the tokens and one the targets. A loss may be in
  // several (a stage whose MoE layers add auxiliary losses has one without
  // targets): the step's loss is their sum over the stages.
  int targets = 0, tokens = 0;
  for (const LoadedPlan& lp : *out) {
    targets += Has(lp.plan->targets());
    tokens += Has(lp.plan->tokens());
  }
  if (targets != 1 || tokens != 1)
    return Error::BadInput(dir + ": " + std::to_string(tokens) + " programs take tokens and " +
           std::to_string(targets) + " take targets; a plan needs exactly one of each");
  return std::nullopt;
}

MeshCoordinates CoordinatesOf(const fb::Mesh& mesh, int rank) {
  MeshCoordinates c;
  c.size[kAxisDp] = std::max(1, mesh.dp());
  c.size[kAxisPp] = std::max(1, mesh.pp());
  c.size[kAxisTp] = std::max(1, mesh.tp());
  c.size[kAxisEp] = std::max(1, mesh.ep());
  for (int axis : {kAxisTp, kAxisEp, kAxisDp, kAxisPp}) {
    c.coord[axis] = rank % c.size[axis];
    rank /= c.size[axis];
  }
  c.size[kAxisData] = c.size[kAxisDp] * c.size[kAxisEp];
  c.coord[kAxisData] = c.coord[kAxisDp] * c.size[kAxisEp] + c.coord[kAxisEp];
  return c;
}

int AxisSize(const fb::Mesh& mesh, int64_t axis) {
  return axis >= 0 && axis < kNumAxes ? CoordinatesOf(mesh, 0).size[axis] : 0;
}

int RankAt(const MeshCoordinates& c) {
  return ((c.coord[kAxisPp] * c.size[kAxisDp] + c.coord[kAxisDp]) * c.size[kAxisEp] +
          c.coord[kAxisEp]) * c.size[kAxisTp] + c.coord[kAxisTp];
}

std::vector<int> GroupOf(const fb::Mesh& mesh, int rank, int axis) {
  MeshCoordinates c = CoordinatesOf(mesh, rank);
  std::vector<int> group;
  for (int i = 0; i < c.size[axis]; ++i) {
    if (axis == kAxisData) {
      c.coord[kAxisDp] = i / c.size[kAxisEp];
      c.coord[kAxisEp] = i % c.size[kAxisEp];
    } else {
      c.coord[axis] = i;
    }
    group.push_back(RankAt(c));
  }
  return group;
}

}  // namespace heiretsu::plan
