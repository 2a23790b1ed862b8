//===- PlanMemory.cpp - arena offsets by liveness --------------------------===//
//
// Parameters (value, grad, moments) first, contiguous; then every other buffer by
// greedy first-fit, largest first, against the buffers whose live ranges overlap
// its own. Live ranges are in instruction positions over the units in program
// order (forward, backward, update). That is the step's liveness as long as a
// microbatch's backward runs before the next microbatch's forward (the one-stage
// schedule of heiretsu-schedule): every run reuses the same buffers. The
// microbatch inputs and the loss are live throughout (the runtime writes and
// reads them around the units).
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include <algorithm>

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
  int64_t first = INT64_MAX, last = -1;
  int64_t offset = -1;
};

struct PlanMemoryPass : impl::PlanMemoryPassBase<PlanMemoryPass> {
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    Builder b(program.getContext());
    int64_t cursor = 0;
    SmallVector<Interval> intervals;
    DenseMap<Value, size_t> index;
    for (Operation &op : program.getBody().front()) {
      if (auto p = dyn_cast<plan_ir::ParamOp>(op)) {
        int64_t bytes = alignUp(numElements(p.getValue()) * 4);
        SmallVector<int64_t> offsets;
        for (int i = 0; i < 4; ++i, cursor += bytes)
          offsets.push_back(cursor);
        p.setOffsetsAttr(b.getDenseI64ArrayAttr(offsets));
      } else if (auto buf = dyn_cast<plan_ir::BufferOp>(op)) {
        index[buf.getBuffer()] = intervals.size();
        intervals.push_back({buf, alignUp(numElements(buf.getBuffer()) * 4)});
      }
    }
    const int64_t paramBytes = cursor;

    int64_t position = 0;
    program.walk([&](plan_ir::KernelOp k) {
      for (Value v : k.getBuffers()) {
        auto it = index.find(v);
        if (it == index.end())
          continue;
        Interval &iv = intervals[it->second];
        iv.first = std::min(iv.first, position);
        iv.last = std::max(iv.last, position);
      }
      ++position;
    });
    for (Interval &iv : intervals) {
      if (iv.op.getIo()) { // written before and read after the stream
        iv.first = 0;
        iv.last = position;
      } else if (iv.last < 0) {
        iv.first = iv.last = 0; // unused: still gets a (harmless) slot
      }
    }

    // Largest first; ties by first use for a stable, readable layout.
    SmallVector<Interval *> order;
    for (Interval &iv : intervals)
      order.push_back(&iv);
    std::stable_sort(order.begin(), order.end(), [](Interval *a, Interval *c) {
      return a->bytes != c->bytes ? a->bytes > c->bytes : a->first < c->first;
    });
    SmallVector<Interval *> placed;
    int64_t peak = paramBytes;
    for (Interval *iv : order) {
      // Gather the address ranges taken by overlapping live buffers, sorted.
      SmallVector<std::pair<int64_t, int64_t>> taken;
      for (Interval *other : placed)
        if (other->first <= iv->last && iv->first <= other->last)
          taken.push_back({other->offset, other->offset + other->bytes});
      llvm::sort(taken);
      int64_t offset = paramBytes;
      for (auto [lo, hi] : taken) {
        if (offset + iv->bytes <= lo)
          break;
        offset = std::max(offset, hi);
      }
      iv->offset = offset;
      iv->op.setOffsetAttr(b.getI64IntegerAttr(offset));
      peak = std::max(peak, offset + iv->bytes);
      placed.push_back(iv);
    }
    program.setArenaBytesAttr(b.getI64IntegerAttr(peak));
    program.setParamBytesAttr(b.getI64IntegerAttr(paramBytes));
    program.setActivationBytesAttr(b.getI64IntegerAttr(peak - paramBytes));
  }
};

} // namespace
} // namespace heiretsu
