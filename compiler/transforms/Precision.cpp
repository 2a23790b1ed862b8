//===- Precision.cpp - activations in 16 bits (mixed precision) -----------===//
//
// See Passes.td. A buffer is stored in 16 bits exactly when every one of its uses is
// an activation operand of a kernel a backend runs (plan::Takes16Bit, the one list
// the runtime's verifier and backends use too).
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"


using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_PRECISIONPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct PrecisionPass : impl::PrecisionPassBase<PrecisionPass> {
  using PrecisionPassBase::PrecisionPassBase;

  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    if (precision != "fp32" && precision != "bf16" && precision != "fp16") {
      program.emitError() << "precision must be fp32, bf16 or fp16, got '" << precision << "'";
      return signalPassFailure();
    }
    if (precision == "fp32")
      return;
    // A buffer's verdict: true while every use seen so far is an activation slot.
    DenseMap<Value, bool> narrow;
    program.walk([&](plan_ir::KernelOp k) {
      std::optional<plan::fb::Op> code = plan::OpFromName(k.getName().str());
      SmallVector<int64_t> ints(k.getInts());
      const plan::Signature sig =
          code ? plan::OpSignature(*code, std::vector<int64_t>(ints.begin(), ints.end()))
               : plan::Signature{};
      ArrayRef<int64_t> absent = k.getAbsent();
      size_t operand = 0;
      for (size_t slot = 0; operand < k.getBuffers().size(); ++slot) {
        const bool variadic = sig.variadic || slot >= sig.buffers.size();
        if (!variadic && llvm::is_contained(absent, static_cast<int64_t>(slot)))
          continue;
        Value b = k.getBuffers()[operand++];
        const bool ok = !variadic && code && plan::Takes16Bit(*code, sig.buffers[slot].name);
        auto [it, fresh] = narrow.try_emplace(b, ok);
        if (!fresh)
          it->second = it->second && ok;
      }
    });
    Type element = precision == "bf16" ? Type(BFloat16Type::get(&getContext()))
                                       : Type(Float16Type::get(&getContext()));
    for (auto buf : program.getBody().front().getOps<plan_ir::BufferOp>()) {
      auto it = narrow.find(buf.getBuffer());
      auto type = cast<MemRefType>(buf.getBuffer().getType());
      if (buf.getIo() || it == narrow.end() || !it->second || !type.getElementType().isF32())
        continue;
      buf.getBuffer().setType(MemRefType::get(type.getShape(), element));
    }
  }
};

} // namespace
} // namespace heiretsu
