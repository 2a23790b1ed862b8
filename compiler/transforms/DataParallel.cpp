//===- DataParallel.cpp - bucketed data-parallel gradient averaging -------===//
//
// See Passes.td. A gradient is final once the last kernel of the backward unit
// that touches it has run; buckets gather gradients in that order and each
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
    std::optional<ProgramInputs> in =
        requireProgramInputs(program, getArgument(), {plan_ir::UnitKind::update});
    if (!in)
      return signalPassFailure();
    // The backward unit, or a split backward's input unit.
    plan_ir::UnitOp backward = findUnit(program, plan_ir::UnitKind::backward_input);
    if (!backward && !(backward = requireUnit(program, plan_ir::UnitKind::backward, getArgument())))
      return signalPassFailure();
    if (in->update.getBody().front().empty()) {
      program.emitError("the update unit is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    if (bucketBytes < 1) {
      program.emitError() << "bucket-bytes must be >= 1, got " << static_cast<int64_t>(bucketBytes);
      return signalPassFailure();
    }
    if (in->mesh.getDp() == 1)
      return; // one data rank: its gradients are already the step's
    // Where each gradient becomes final: the last backward kernel touching it,
    // over the backward units in program order (a split backward's weight unit
    // runs after its input unit, so it finishes the weight gradients).
    SmallVector<Operation *> kernels;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      if (unit.isPerMicrobatch() && unit.getKind() != plan_ir::UnitKind::forward)
        for (Operation &op : unit.getBody().front())
          kernels.push_back(&op);
    Block &body = backward.getBody().front();
    Block &lastBody = kernels.empty() ? body : *kernels.back()->getBlock();
    DenseMap<Value, Operation *> lastUse;
    DenseMap<Operation *, int64_t> position;
    int64_t index = 0;
    for (Operation *op : kernels) {
      position[op] = index++;
      for (Value v : op->getOperands())
        lastUse[v] = op;
    }
    SmallVector<std::pair<int64_t, Value>> order; // (position, grad); unused grads last
    for (plan_ir::ParamOp p : paramsOf(program)) {
      Operation *last = lastUse.lookup(p.getGrad());
      order.push_back({last ? position[last] : index, p.getGrad()});
    }
    llvm::stable_sort(order, [](auto &a, auto &b) { return a.first < b.first; });
    // Buckets of at most bucket-bytes (a larger gradient is a bucket of its own),
    // each with the position of the kernel that finishes its last gradient.
    SmallVector<std::pair<SmallVector<Value>, int64_t>> buckets;
    int64_t bytes = 0;
    // A bucket's gradients are all finished in one unit: it runs in that unit's last
    // run, and another unit's (a virtual chunk's) last run may come later.
    auto unitOf = [&](int64_t pos) { return pos < index ? kernels[pos]->getBlock() : &lastBody; };
    for (auto [pos, grad] : order) {
      int64_t size = 4 * numElements(grad);
      if (buckets.empty() || bytes + size > bucketBytes ||
          unitOf(buckets.back().second) != unitOf(pos)) {
        buckets.push_back({{}, pos});
        bytes = 0;
      }
      buckets.back().first.push_back(grad);
      buckets.back().second = pos;
      bytes += size;
    }
    // Inserted from the back, so the positions of earlier kernels stay valid.
    for (auto &[grads, pos] : llvm::reverse(buckets)) {
      OpBuilder b(program.getContext());
      if (pos >= index)
        b.setInsertionPointToEnd(&lastBody);
      else
        b.setInsertionPointAfter(kernels[pos]);
      createKernel(b, program.getLoc(),
                   plan::op::BucketAllReduce<Value>{.buffers = {grads.begin(), grads.end()},
                                                    .axis = plan::kAxisDp,
                                                    .reduce = plan::kReduceAvg});
    }
  }
};

} // namespace
} // namespace heiretsu
