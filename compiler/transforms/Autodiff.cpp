//===- Autodiff.cpp - reverse-mode backward pass over plan kernels --------===//
//
// One gradient rule per forward opcode (see Passes.td). Gradients of activations
// live in buffers named "d<name>"; `written` tracks which have received their
// first contribution, which decides each gradient kernel's accumulate flag.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"
#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_AUTODIFFPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

class Differentiator {
public:
  Differentiator(plan_ir::ProgramOp program, OpBuilder b) : program(program), b(b) {}

  /// The gradient buffer of `v` and whether a contribution must accumulate (1)
  /// or write (0). For a parameter value: its grad buffer, always accumulated.
  std::pair<Value, int64_t> sink(Value v, Location loc) {
    if (auto param = v.getDefiningOp<plan_ir::ParamOp>())
      return {param.getGrad(), 1};
    Value &g = grads[v];
    if (!g)
      g = createBuffer(program, loc, "d" + bufferName(v), cast<MemRefType>(v.getType()));
    bool first = written.insert(v).second;
    return {g, first ? 0 : 1};
  }

  /// Seeds the loss: its gradient is the constant `scale`.
  void seedLoss(Value loss, double scale) { constGrads[loss] = scale; }

  /// The finished gradient of forward output `v`, or null if nothing reached it.
  /// A value that entered a tensor-parallel region (grad_reduce) has a partial
  /// gradient on each tp rank: it is all-reduced here, once, before first use.
  Value source(Value v) {
    if (!written.contains(v))
      return Value();
    Value g = grads.lookup(v);
    auto def = v.getDefiningOp<plan_ir::BufferOp>();
    if (def && def.getGradReduce() && reduced.insert(v).second)
      createKernel(b, v.getLoc(), "all_reduce", {g}, {plan::kAxisTp, plan::kReduceSum});
    return g;
  }

  /// Records, for each buffer, the first forward kernel that touches it: the one
  /// that computes it (buffers are defined before they are read).
  void noteWriter(plan_ir::KernelOp k) {
    for (Value v : k.getBuffers())
      writer.try_emplace(v, k);
  }

  static bool isParam(Value v) { return v && v.getDefiningOp<plan_ir::ParamOp>(); }

  LogicalResult rule(plan_ir::KernelOp k) {
    Location loc = k.getLoc();
    StringRef name = k.getName();
    ArrayRef<int64_t> ints = k.getInts();
    // Buffers by signature slot (absent optional ones are null).
    SmallVector<Value> s;
    {
      ArrayRef<int64_t> absent = k.getAbsent();
      auto it = k.getBuffers().begin();
      size_t slots = k.getBuffers().size() + absent.size();
      for (size_t i = 0; i < slots; ++i)
        s.push_back(llvm::is_contained(absent, static_cast<int64_t>(i)) ? Value() : *it++);
    }
    if (name == "cross_entropy") {
      // Scalar losses have gradients known at compile time (the loss is their
      // sum); the kernel takes it as its dloss attribute.
      auto seed = constGrads.find(s[2]);
      if (seed == constGrads.end())
        return success();
      auto [dlogits, acc] = sink(s[0], loc);
      createKernel(b, loc, "cross_entropy_grad", {s[0], s[1], s[3], dlogits},
                   {ints[0], ints[1], acc, 0, ints[2]}, {seed->second});
      return success();
    }
    // Forward collectives are their own transposes' partners: the gradient of a
    // tp all_reduce's result is already the gradient of each rank's partial sum.
    // The vocabulary-parallel loss differentiates as one unit, at vocab_loss.
    if (name == "all_reduce" || name == "vocab_max" || name == "vocab_sum_exp")
      return success();
    if (name == "all_gather_into" || name == "reduce_scatter_into") {
      // Each is the other's transpose (sequence parallelism).
      Value ddst = source(s[1]);
      if (!ddst)
        return success();
      auto [dsrc, acc] = sink(s[0], loc);
      createKernel(b, loc, name == "all_gather_into" ? "reduce_scatter_into" : "all_gather_into",
                   {ddst, dsrc}, {ints[0], ints[1], ints[2], ints[3], acc});
      return success();
    }
    if (name == "vocab_loss") {
      auto seed = constGrads.find(s[3]);
      if (seed == constGrads.end())
        return success();
      plan_ir::KernelOp max = writer.lookup(s[0]), sumExp = writer.lookup(s[1]);
      if (!max || max.getName() != "vocab_max" || !sumExp || sumExp.getName() != "vocab_sum_exp")
        return k.emitError("vocab_loss must follow vocab_max and vocab_sum_exp");
      Value logits = max.getBuffers()[0], targets = sumExp.getBuffers()[1];
      auto [dlogits, acc] = sink(logits, loc);
      createKernel(b, loc, "cross_entropy_grad", {logits, targets, s[4], dlogits},
                   {max.getInts()[0], max.getInts()[1], acc, 1, max.getInts()[2]},
                   {seed->second});
      return success();
    }
    if (name == "moe") {
      Value dy = source(s[5]);
      auto seed = constGrads.find(s[6]);
      double daux = seed == constGrads.end() ? 0.0 : seed->second;
      if (!dy)
        return k.emitError("a moe output without a gradient is not supported");
      for (int slot : {1, 2, 3, 4})
        if (s[slot] && !isParam(s[slot]))
          return k.emitError("moe router and expert weights must be parameters");
      Value dgate = s[4] ? sink(s[4], loc).first : Value();
      Value drouter = sink(s[1], loc).first, dwIn = sink(s[2], loc).first;
      Value dwOut = sink(s[3], loc).first;
      auto [dx, acc] = sink(s[0], loc);
      SmallVector<int64_t> gradInts(ints.begin(), ints.end());
      gradInts.push_back(acc);
      createKernel(b, loc, "moe_grad",
                   {dy, s[0], s[1], s[2], s[3], s[4], s[7], s[8], s[9], s[10], s[11], s[12], s[13],
                    dx, drouter, dwIn, dwOut, dgate},
                   gradInts, {k.getFloats()[0], k.getFloats()[1], daux});
      return success();
    }
    if (name == "add" && numElements(s[2]) == 1 && constGrads.count(s[2])) {
      // A sum of scalar losses: both terms get the same constant gradient.
      double g = constGrads[s[2]];
      constGrads[s[0]] += g;
      constGrads[s[1]] += g;
      return success();
    }
    // Every other rule starts from the gradient of its (first) output.
    if (name == "embedding") {
      Value dout = source(s[3]);
      if (!dout)
        return success();
      if (!isParam(s[1]) || (s[2] && !isParam(s[2])))
        return k.emitError("embedding tables must be parameters");
      Value dtable = sink(s[1], loc).first;
      Value dpos = s[2] ? sink(s[2], loc).first : Value();
      createKernel(b, loc, "embedding_grad", {s[0], dout, dtable, dpos}, ints);
      return success();
    }
    if (name == "linear") {
      Value dy = source(s[3]);
      if (!dy)
        return success();
      if (!isParam(s[1]) || (s[2] && !isParam(s[2])))
        return k.emitError("linear weights and biases must be parameters");
      Value dw = sink(s[1], loc).first;
      Value db = s[2] ? sink(s[2], loc).first : Value();
      auto [dx, acc] = sink(s[0], loc);
      createKernel(b, loc, "linear_grad", {dy, s[0], s[1], dx, dw, db},
                   {ints[0], ints[1], ints[2], acc});
      return success();
    }
    if (name == "layernorm") {
      Value dy = source(s[3]);
      if (!dy)
        return success();
      Value dw = sink(s[1], loc).first, db = sink(s[2], loc).first;
      auto [dx, acc] = sink(s[0], loc);
      createKernel(b, loc, "layernorm_grad", {dy, s[0], s[1], s[4], s[5], dx, dw, db},
                   {ints[0], ints[1], acc});
      return success();
    }
    if (name == "rmsnorm") {
      Value dy = source(s[2]);
      if (!dy)
        return success();
      Value dw = sink(s[1], loc).first;
      auto [dx, acc] = sink(s[0], loc);
      createKernel(b, loc, "rmsnorm_grad", {dy, s[0], s[1], s[3], dx, dw},
                   {ints[0], ints[1], acc});
      return success();
    }
    if (name == "gelu") {
      Value dy = source(s[1]);
      if (!dy)
        return success();
      auto [dx, acc] = sink(s[0], loc);
      createKernel(b, loc, "gelu_grad", {dy, s[0], dx}, {ints[0], acc});
      return success();
    }
    if (name == "swiglu") {
      Value dy = source(s[2]);
      if (!dy)
        return success();
      auto [dgate, accGate] = sink(s[0], loc);
      auto [dup, accUp] = sink(s[1], loc);
      if (accGate != accUp)
        return k.emitError("swiglu inputs with different gradient histories are not supported");
      createKernel(b, loc, "swiglu_grad", {dy, s[0], s[1], dgate, dup}, {ints[0], accGate});
      return success();
    }
    if (name == "add") {
      Value dy = source(s[2]);
      if (!dy)
        return success();
      // d(rhs) gets a copy (or an accumulation); d(lhs) can simply *be* dy when it
      // has no gradient yet: dy is complete and is not read again after the rhs
      // copy, which comes first. This keeps the residual stream's gradient in one
      // buffer instead of copying it at every layer.
      auto [drhs, accRhs] = sink(s[1], loc);
      createKernel(b, loc, "accumulate", {dy, drhs}, {ints[0], accRhs});
      if (!isParam(s[0]) && !written.contains(s[0])) {
        grads[s[0]] = dy;
        written.insert(s[0]);
        return success();
      }
      auto [dlhs, accLhs] = sink(s[0], loc);
      createKernel(b, loc, "accumulate", {dy, dlhs}, {ints[0], accLhs});
      return success();
    }
    if (name == "rope") {
      Value dy = source(s[1]);
      if (!dy)
        return success();
      auto [dx, acc] = sink(s[0], loc);
      createKernel(b, loc, "rope_grad", {dy, dx}, {ints[0], ints[1], ints[2], ints[3], acc},
                   {k.getFloats()[0]});
      return success();
    }
    if (name == "attention") {
      Value dout = source(s[3]);
      if (!dout)
        return success();
      auto [dq, accQ] = sink(s[0], loc);
      auto [dk, accK] = sink(s[1], loc);
      auto [dv, accV] = sink(s[2], loc);
      if (accQ != accK || accK != accV)
        return k.emitError("attention inputs with different gradient histories are not supported");
      createKernel(b, loc, "attention_grad", {dout, s[0], s[1], s[2], s[3], s[4], dq, dk, dv},
                   {ints[0], ints[1], ints[2], ints[3], ints[4], accQ});
      return success();
    }
    return k.emitError("no gradient rule for kernel '") << name << "'";
  }

private:
  plan_ir::ProgramOp program;
  OpBuilder b;
  DenseMap<Value, Value> grads;
  DenseSet<Value> written;
  DenseMap<Value, double> constGrads; // scalar losses: gradient known statically
  DenseSet<Value> reduced;             // grad_reduce values whose gradient is reduced
  DenseMap<Value, plan_ir::KernelOp> writer;
};

struct AutodiffPass : impl::AutodiffPassBase<AutodiffPass> {
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    plan_ir::MicrobatchOp micro;
    for (Operation &op : program.getBody().front())
      if (auto m = dyn_cast<plan_ir::MicrobatchOp>(op))
        micro = m;
    Block &body = micro.getBody().front();
    SmallVector<plan_ir::KernelOp> forward;
    for (Operation &op : body)
      forward.push_back(cast<plan_ir::KernelOp>(op));
    if (llvm::none_of(forward, [](plan_ir::KernelOp k) {
          return k.getName() == "cross_entropy" || k.getName() == "vocab_loss";
        })) {
      program.emitError("autodiff needs a cross_entropy kernel producing the loss");
      return signalPassFailure();
    }
    Differentiator diff(program, OpBuilder::atBlockEnd(&body));
    // Gradients are of the mean loss over the step's microbatches.
    double lossScale = 1.0 / static_cast<double>(program.getMicrobatches());
    for (Operation &op : program.getBody().front())
      if (auto buf = dyn_cast<plan_ir::BufferOp>(op); buf && buf.getIo() == "loss")
        diff.seedLoss(buf.getBuffer(), lossScale);
    for (plan_ir::KernelOp k : forward)
      diff.noteWriter(k);
    for (plan_ir::KernelOp k : llvm::reverse(forward))
      if (failed(diff.rule(k)))
        return signalPassFailure();
  }
};

} // namespace
} // namespace heiretsu
