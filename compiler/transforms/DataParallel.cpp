//===- DataParallel.cpp - bucketed data-parallel gradient averaging -------===//
//
// See Passes.td. A gradient is final once the last kernel of the microbatch
// stream that touches it has run; buckets gather gradients in that order and each
// is reduced right after its last gradient is final.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_DATAPARALLELPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct DataParallelPass : impl::DataParallelPassBase<DataParallelPass> {
  using DataParallelPassBase::DataParallelPassBase;

  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    auto [params, update] = paramsAndUpdate(program);
    Block &body = update.getBody().front();
    if (body.empty()) {
      program.emitError("plan.update is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    if (bucketBytes < 1) {
      program.emitError() << "bucket-bytes must be >= 1, got " << static_cast<int64_t>(bucketBytes);
      return signalPassFailure();
    }
    plan_ir::MicrobatchOp micro;
    for (Operation &op : program.getBody().front())
      if (auto m = dyn_cast<plan_ir::MicrobatchOp>(op))
        micro = m;
    // Where each gradient becomes final: the last microbatch kernel touching it.
    DenseMap<Value, Operation *> lastUse;
    DenseMap<Operation *, int64_t> position;
    int64_t index = 0;
    for (Operation &op : micro.getBody().front()) {
      position[&op] = index++;
      for (Value v : op.getOperands())
        lastUse[v] = &op;
    }
    SmallVector<std::pair<int64_t, Value>> order; // (position, grad); unused grads last
    for (plan_ir::ParamOp p : params) {
      Operation *last = lastUse.lookup(p.getGrad());
      order.push_back({last ? position[last] : index, p.getGrad()});
    }
    llvm::stable_sort(order, [](auto &a, auto &b) { return a.first < b.first; });
    // Buckets of at most bucket-bytes (a larger gradient is a bucket of its own),
    // each with the position of the kernel that finishes its last gradient.
    SmallVector<std::pair<SmallVector<Value>, int64_t>> buckets;
    int64_t bytes = 0;
    for (auto [pos, grad] : order) {
      int64_t size = 4 * numElements(grad);
      if (buckets.empty() || bytes + size > bucketBytes) {
        buckets.push_back({{}, pos});
        bytes = 0;
      }
      buckets.back().first.push_back(grad);
      buckets.back().second = pos;
      bytes += size;
    }
    // Inserted from the back, so the positions of earlier kernels stay valid.
    Block &microBody = micro.getBody().front();
    for (auto &[grads, pos] : llvm::reverse(buckets)) {
      OpBuilder b(program.getContext());
      if (pos >= index)
        b.setInsertionPointToEnd(&microBody);
      else
        b.setInsertionPointAfter(&*std::next(microBody.begin(), pos));
      createKernel(b, program.getLoc(), "bucket_all_reduce", grads,
                   {plan::kAxisDp, plan::kReduceAvg});
    }
  }
};

} // namespace
} // namespace heiretsu
