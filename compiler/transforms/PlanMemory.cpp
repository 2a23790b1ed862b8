//===- PlanMemory.cpp - arena offsets by liveness, per activation slot ----===//
//
// See Passes.td. Parameters (value, grad, moments) first, contiguous; then the
// buffers live within one run (and, with one slot, every other), then `slots`
// copies of the slotted region (one part per virtual chunk). Within a region: greedy first-fit, largest
// first, against the buffers whose live ranges overlap its own, live ranges in
// instruction positions over the units in program order.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include <algorithm>
#include <map>
#include <set>

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

constexpr int64_t kAlign = 64;

int64_t alignUp(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Interval {
  plan_ir::BufferOp op;
  int64_t bytes;
  int64_t bytesF32; // the same buffer's size were it float32 (16-bit ones: twice)
  int64_t first = INT64_MAX, last = -1;
  int64_t offset = -1;
  SmallVector<Operation *, 2> microbatchUnits; // the per-microbatch units touching it
  bool sent = false;
};

/// Places `intervals` from `base` (largest first, lowest fitting offset); returns
/// the end of the highest.
int64_t place(ArrayRef<Interval *> intervals, int64_t base) {
  SmallVector<Interval *> order(intervals.begin(), intervals.end());
  // Ties by first use for a stable, readable layout.
  std::stable_sort(order.begin(), order.end(), [](Interval *a, Interval *c) {
    return a->bytes != c->bytes ? a->bytes > c->bytes : a->first < c->first;
  });
  SmallVector<Interval *> placed;
  int64_t end = base;
  for (Interval *iv : order) {
    // The address ranges taken by overlapping live buffers, sorted.
    SmallVector<std::pair<int64_t, int64_t>> taken;
    for (Interval *other : placed)
      if (other->first <= iv->last && iv->first <= other->last)
        taken.push_back({other->offset, other->offset + other->bytes});
    llvm::sort(taken);
    int64_t offset = base;
    for (auto [lo, hi] : taken) {
      if (offset + iv->bytes <= lo)
        break;
      offset = std::max(offset, hi);
    }
    iv->offset = offset;
    end = std::max(end, offset + iv->bytes);
    placed.push_back(iv);
  }
  return end;
}

struct PlanMemoryPass : impl::PlanMemoryPassBase<PlanMemoryPass> {
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    Builder b(program.getContext());
    int64_t cursor = 0;
    SmallVector<Interval> intervals;
    DenseMap<Value, size_t> index;
    // A program without backward or update instructions (a decode program) never
    // reads a gradient or a moment: all of them share one block the size of the
    // largest parameter after the values (zeroed at initialization, never read).
    bool forwardOnly = true;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      if (unit.getKind() != plan_ir::UnitKind::forward && !unit.getBody().front().empty())
        forwardOnly = false;
    SmallVector<plan_ir::ParamOp> scratchUsers;
    int64_t scratchBytes = 0;
    for (Operation &op : program.getBody().front()) {
      if (auto p = dyn_cast<plan_ir::ParamOp>(op)) {
        int64_t bytes = alignUp(plan_ir::bufferBytes(p.getValue()));
        if (forwardOnly) {
          p.setOffsetsAttr(b.getDenseI64ArrayAttr({cursor, -1, -1, -1}));
          scratchUsers.push_back(p);
          scratchBytes = std::max(scratchBytes, bytes);
          cursor += bytes;
          continue;
        }
        SmallVector<int64_t> offsets;
        for (int i = 0; i < 4; ++i, cursor += bytes)
          offsets.push_back(cursor);
        p.setOffsetsAttr(b.getDenseI64ArrayAttr(offsets));
      } else if (auto buf = dyn_cast<plan_ir::BufferOp>(op)) {
        index[buf.getBuffer()] = intervals.size();
        auto type = cast<MemRefType>(buf.getBuffer().getType());
        const int64_t bytes = alignUp(plan_ir::bufferBytes(buf.getBuffer()));
        const int64_t f32 = type.getElementType().getIntOrFloatBitWidth() == 16
                                ? alignUp(type.getNumElements() * 4)
                                : bytes;
        intervals.push_back({buf, bytes, f32});
      }
    }
    for (plan_ir::ParamOp p : scratchUsers) {
      SmallVector<int64_t> offsets(p.getOffsets()->begin(), p.getOffsets()->end());
      offsets[1] = offsets[2] = offsets[3] = cursor;
      p.setOffsetsAttr(b.getDenseI64ArrayAttr(offsets));
    }
    cursor += scratchBytes;
    const int64_t paramBytes = cursor;

    // Live ranges; where each unit ends; the end of the per-microbatch units.
    int64_t position = 0, microbatchEnd = -1;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>()) {
      SmallVector<Interval *> sentHere;
      for (auto k : unit.getBody().front().getOps<plan_ir::KernelOp>()) {
        const bool send = k.getName() == plan::op::Send<Value>::kName;
        for (Value v : k.getBuffers()) {
          auto it = index.find(v);
          if (it == index.end())
            continue;
          Interval &iv = intervals[it->second];
          iv.first = std::min(iv.first, position);
          iv.last = std::max(iv.last, position);
          if (unit.isPerMicrobatch() && !llvm::is_contained(iv.microbatchUnits, unit))
            iv.microbatchUnits.push_back(unit);
          if (send) {
            iv.sent = true;
            sentHere.push_back(&iv);
          }
        }
        ++position;
      }
      // A send completes in the background: by the end of its unit of the step;
      // a microbatch's, by the end of the microbatch's units (below).
      if (unit.isPerMicrobatch())
        microbatchEnd = std::max(microbatchEnd, position - 1);
      else
        for (Interval *iv : sentHere)
          iv->last = std::max(iv->last, position - 1);
    }
    for (Interval &iv : intervals) {
      if (iv.op.getIo()) { // written before and read after the stream
        iv.first = 0;
        iv.last = position;
      } else if (iv.last < 0) {
        iv.first = iv.last = 0; // unused: still gets a (harmless) slot
      }
      if (iv.sent && !iv.microbatchUnits.empty())
        iv.last = std::max(iv.last, microbatchEnd);
    }

    // The schedule's slots: the most microbatches it keeps at once.
    int64_t slots = 1;
    for (auto schedule : program.getBody().front().getOps<plan_ir::ScheduleOp>())
      for (auto run : schedule.getBody().front().getOps<plan_ir::RunOp>())
        slots = std::max<int64_t>(slots, static_cast<int64_t>(run.getSlot().value_or(0)) + 1);

    // Several virtual chunks have microbatches in flight at once even on one slot:
    // their carried buffers must not share memory.
    std::set<int64_t> chunks;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      chunks.insert(unit.chunkIndex());
    const bool slotting = slots > 1 || chunks.size() > 1;
    SmallVector<Interval *> shared, slotted;
    for (Interval &iv : intervals) {
      const bool carried =
          iv.microbatchUnits.size() >= 2 || (iv.sent && !iv.microbatchUnits.empty());
      (slotting && carried ? slotted : shared).push_back(&iv);
    }
    // Each virtual chunk's slotted buffers get a part of the slot region of their
    // own: microbatches of different chunks are in flight at once on the same slot
    // numbers.
    std::map<int64_t, SmallVector<Interval *>> byChunk;
    for (Interval *iv : slotted)
      byChunk[cast<plan_ir::UnitOp>(iv->microbatchUnits.front()).chunkIndex()].push_back(iv);
    int64_t sharedEnd = 0, slotBytes = 0;
    auto layout = [&] {
      sharedEnd = place(shared, paramBytes);
      int64_t slotEnd = 0;
      for (auto &[chunk, ivs] : byChunk)
        slotEnd = alignUp(place(ivs, slotEnd));
      slotBytes = slotEnd;
      return sharedEnd + (slotted.empty() ? 0 : slots * slotBytes);
    };
    // With 16-bit buffers, first the same plan at float32 sizes (for explain's
    // saving), then the real one.
    if (llvm::any_of(intervals, [](const Interval &iv) { return iv.bytesF32 != iv.bytes; })) {
      for (Interval &iv : intervals)
        std::swap(iv.bytes, iv.bytesF32);
      program.setActivationBytesF32Attr(b.getI64IntegerAttr(layout() - paramBytes));
      for (Interval &iv : intervals)
        std::swap(iv.bytes, iv.bytesF32);
    }
    const int64_t peak = layout();
    for (Interval *iv : shared)
      iv->op.setOffsetAttr(b.getI64IntegerAttr(iv->offset));
    for (Interval *iv : slotted) {
      iv->op.setOffsetAttr(b.getI64IntegerAttr(sharedEnd + iv->offset));
      iv->op.setSlottedAttr(b.getUnitAttr());
    }
    program.setArenaBytesAttr(b.getI64IntegerAttr(peak));
    program.setParamBytesAttr(b.getI64IntegerAttr(paramBytes));
    program.setActivationBytesAttr(b.getI64IntegerAttr(peak - paramBytes));
    if (slotting) {
      program.setSlotsAttr(b.getI64IntegerAttr(slots));
      program.setSlotBytesAttr(b.getI64IntegerAttr(slotBytes));
    }
  }
};

} // namespace
} // namespace heiretsu
