//===- DataParallel.cpp - bucketed data-parallel gradient averaging -------===//
//
// See Passes.td. A gradient is final once the last kernel of the backward unit
// that touches it has run; buckets gather gradients in that order and each
// is reduced right after its last gradient is final. The bucketing is shared with
// heiretsu-zero1, whose buckets reduce-scatter (insertGradientBuckets).
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_DATAPARALLELPASS
#include "compiler/transforms/Passes.h.inc"

LogicalResult
insertGradientBuckets(plan_ir::ProgramOp program, ArrayRef<plan_ir::ParamOp> params,
                      int64_t bucketBytes,
                      function_ref<std::optional<int64_t>(plan_ir::ParamOp)> axisOf,
                      function_ref<void(OpBuilder &, ArrayRef<Value>, int64_t)> emit,
                      StringRef pass) {
  // The backward unit, or a split backward's input unit.
  plan_ir::UnitOp backward = findUnit(program, plan_ir::UnitKind::backward_input);
  if (!backward && !(backward = requireUnit(program, plan_ir::UnitKind::backward, pass)))
    return failure();
  if (bucketBytes < 1)
    return program.emitError() << "bucket-bytes must be >= 1, got " << bucketBytes;
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
  struct Grad {
    int64_t position; // unused gradients last
    Value grad;
    int64_t axis;
  };
  SmallVector<Grad> order;
  for (plan_ir::ParamOp p : params)
    if (std::optional<int64_t> axis = axisOf(p)) {
      Operation *last = lastUse.lookup(p.getGrad());
      order.push_back({last ? position[last] : index, p.getGrad(), *axis});
    }
  llvm::stable_sort(order, [](const Grad &a, const Grad &b) { return a.position < b.position; });
  // Buckets of at most bucket-bytes (a larger gradient is a bucket of its own) over
  // one axis, each with the position of the kernel that finishes its last gradient.
  struct Bucket {
    SmallVector<Value> grads;
    int64_t position, axis;
  };
  SmallVector<Bucket> buckets;
  int64_t bytes = 0;
  // A bucket's gradients are all finished in one unit: it runs in that unit's last
  // run, and another unit's (a virtual chunk's) last run may come later.
  auto unitOf = [&](int64_t pos) { return pos < index ? kernels[pos]->getBlock() : &lastBody; };
  for (const Grad &g : order) {
    int64_t size = 4 * numElements(g.grad);
    if (buckets.empty() || bytes + size > bucketBytes || buckets.back().axis != g.axis ||
        unitOf(buckets.back().position) != unitOf(g.position)) {
      buckets.push_back({{}, g.position, g.axis});
      bytes = 0;
    }
    buckets.back().grads.push_back(g.grad);
    buckets.back().position = g.position;
    bytes += size;
  }
  // In bucket order, each right after its kernel (or after the bucket before it,
  // when both wait for the same kernel).
  OpBuilder b(program.getContext());
  std::optional<int64_t> at;
  for (const Bucket &bucket : buckets) {
    if (bucket.position != at) {
      if (bucket.position >= index)
        b.setInsertionPointToEnd(&lastBody);
      else
        b.setInsertionPointAfter(kernels[bucket.position]);
      at = bucket.position;
    }
    emit(b, bucket.grads, bucket.axis);
  }
  return success();
}

namespace {

struct DataParallelPass : impl::DataParallelPassBase<DataParallelPass> {
  using DataParallelPassBase::DataParallelPassBase;

  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    std::optional<ProgramInputs> in =
        requireProgramInputs(program, getArgument(), {plan_ir::UnitKind::update});
    if (!in)
      return signalPassFailure();
    if (in->update.getBody().front().empty()) {
      program.emitError("the update unit is empty: run heiretsu-optimizer first");
      return signalPassFailure();
    }
    if (in->mesh.getDp() == 1)
      return; // one data rank: its gradients are already the step's
    auto allOverDp = [](plan_ir::ParamOp) -> std::optional<int64_t> { return plan::kAxisDp; };
    auto average = [&](OpBuilder &b, ArrayRef<Value> grads, int64_t axis) {
      createKernel(b, program.getLoc(),
                   plan::op::BucketAllReduce<Value>{.buffers = {grads.begin(), grads.end()},
                                                    .axis = axis,
                                                    .reduce = plan::kReduceAvg});
    };
    if (failed(insertGradientBuckets(program, paramsOf(program), bucketBytes, allOverDp, average,
                                     getArgument())))
      return signalPassFailure();
  }
};

} // namespace
} // namespace heiretsu
