//===- Autodiff.cpp - reverse-mode backward pass over plan kernels --------===//
//
// One gradient rule per forward opcode (see Passes.td), reading the forward
// kernel's operands and writing its gradient kernels' by name (plan::op). Gradients of activations
// live in buffers named "d<name>"; `written` tracks which have received their
// first contribution, which decides each gradient kernel's accumulate flag.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"
#include "runtime/plan/ops.h"

#include <tuple>

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
      allReduceOverTp(g, v.getLoc());
    return g;
  }

  /// Records, for each buffer, the first forward kernel that touches it: the one
  /// that computes it (buffers are defined before they are read).
  void noteWriter(plan_ir::KernelOp k) {
    for (Value v : k.getBuffers())
      writer.try_emplace(v, k);
  }

  static bool isParam(Value v) { return v && v.getDefiningOp<plan_ir::ParamOp>(); }

  /// The tp all_reduce of a gradient that is a partial sum on each tp rank.
  void allReduceOverTp(Value g, Location loc) {
    plan::op::AllReduce<Value> r;
    r.buffers = {g};
    r.axis = plan::kAxisTp;
    r.reduce = plan::kReduceSum;
    createKernel(b, loc, r);
  }

  LogicalResult rule(plan_ir::KernelOp k) {
    Location loc = k.getLoc();
    using namespace plan::op;
    if (auto f = kernelAs<CrossEntropy<Value>>(k)) {
      // Scalar losses have gradients known at compile time (the loss is their
      // sum); the kernel takes it as its dloss attribute.
      auto seed = constGrads.find(f->loss);
      if (seed == constGrads.end())
        return success();
      CrossEntropyGrad<Value> g;
      g.logits = f->logits;
      g.targets = f->targets;
      g.lse = f->lse;
      std::tie(g.dlogits, g.accumulate_dx) = sink(f->logits, loc);
      g.rows = f->rows;
      g.vocab = f->vocab;
      g.vocab_parallel = 0;
      g.valid = f->valid;
      g.dloss = seed->second;
      createKernel(b, loc, g);
      return success();
    }
    // Forward collectives are their own transposes' partners: the gradient of a
    // tp all_reduce's result is already the gradient of each rank's partial sum.
    // The vocabulary-parallel loss differentiates as one unit, at vocab_loss.
    if (kernelAs<AllReduce<Value>>(k) || kernelAs<VocabMax<Value>>(k) ||
        kernelAs<VocabSumExp<Value>>(k))
      return success();
    // all_gather_into and reduce_scatter_into are each other's transpose
    // (sequence parallelism).
    auto transpose = [&](auto f, auto g) -> LogicalResult {
      Value ddst = source(f.dst);
      if (!ddst)
        return success();
      g.src = ddst;
      std::tie(g.dst, g.accumulate_dx) = sink(f.src, loc);
      g.axis = f.axis;
      g.outer = f.outer;
      g.parts = f.parts;
      g.inner = f.inner;
      createKernel(b, loc, g);
      return success();
    };
    if (auto f = kernelAs<AllGatherInto<Value>>(k))
      return transpose(*f, ReduceScatterInto<Value>());
    if (auto f = kernelAs<ReduceScatterInto<Value>>(k))
      return transpose(*f, AllGatherInto<Value>());
    if (auto f = kernelAs<VocabLoss<Value>>(k)) {
      auto seed = constGrads.find(f->loss);
      if (seed == constGrads.end())
        return success();
      plan_ir::KernelOp maxOp = writer.lookup(f->max), sumOp = writer.lookup(f->sum);
      std::optional<VocabMax<Value>> max = maxOp ? kernelAs<VocabMax<Value>>(maxOp) : std::nullopt;
      std::optional<VocabSumExp<Value>> sumExp =
          sumOp ? kernelAs<VocabSumExp<Value>>(sumOp) : std::nullopt;
      if (!max || !sumExp)
        return k.emitError("vocab_loss must follow vocab_max and vocab_sum_exp");
      CrossEntropyGrad<Value> g;
      g.logits = max->logits;
      g.targets = sumExp->targets;
      g.lse = f->lse;
      std::tie(g.dlogits, g.accumulate_dx) = sink(max->logits, loc);
      g.rows = max->rows;
      g.vocab = max->vocab;
      g.vocab_parallel = 1;
      g.valid = max->valid;
      g.dloss = seed->second;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Moe<Value>>(k)) {
      Value dy = source(f->y);
      auto seed = constGrads.find(f->aux);
      double daux = seed == constGrads.end() ? 0.0 : seed->second;
      if (!dy)
        return k.emitError("a moe output without a gradient is not supported");
      for (Value w : {f->router, f->w_in, f->w_out, f->w_gate})
        if (w && !isParam(w))
          return k.emitError("moe router and expert weights must be parameters");
      MoeGrad<Value> g;
      g.dy = dy;
      g.x = f->x;
      g.router = f->router;
      g.w_in = f->w_in;
      g.w_out = f->w_out;
      g.w_gate = f->w_gate;
      g.probs = f->probs;
      g.lse = f->lse;
      g.slot_expert = f->slot_expert;
      g.slot_weight = f->slot_weight;
      g.pre = f->pre;
      g.gate_pre = f->gate_pre;
      g.act = f->act;
      g.dw_gate = f->w_gate ? sink(f->w_gate, loc).first : Value();
      g.drouter = sink(f->router, loc).first;
      g.dw_in = sink(f->w_in, loc).first;
      g.dw_out = sink(f->w_out, loc).first;
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.rows = f->rows;
      g.d = f->d;
      g.f = f->f;
      g.experts = f->experts;
      g.top_k = f->top_k;
      g.capacity = f->capacity;
      g.swiglu = f->swiglu;
      g.aux_coef = f->aux_coef;
      g.z_coef = f->z_coef;
      g.daux = daux;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Add<Value>>(k); f && numElements(f->y) == 1 && constGrads.count(f->y)) {
      // A sum of scalar losses: both terms get the same constant gradient.
      double g = constGrads[f->y];
      constGrads[f->a] += g;
      constGrads[f->b] += g;
      return success();
    }
    // Every other rule starts from the gradient of its (first) output.
    if (auto f = kernelAs<Embedding<Value>>(k)) {
      Value dout = source(f->out);
      if (!dout)
        return success();
      if (!isParam(f->table) || (f->positions && !isParam(f->positions)))
        return k.emitError("embedding tables must be parameters");
      EmbeddingGrad<Value> g;
      g.ids = f->ids;
      g.dout = dout;
      g.dtable = sink(f->table, loc).first;
      g.dpositions = f->positions ? sink(f->positions, loc).first : Value();
      g.rows = f->rows;
      g.seq = f->seq;
      g.vocab = f->vocab;
      g.c = f->c;
      g.context = f->context;
      g.vocab_parallel = f->vocab_parallel;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Linear<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      if (!isParam(f->w) || (f->bias && !isParam(f->bias)))
        return k.emitError("linear weights and biases must be parameters");
      LinearGrad<Value> g;
      g.dy = dy;
      g.x = f->x;
      g.w = f->w;
      g.dw = sink(f->w, loc).first;
      g.dbias = f->bias ? sink(f->bias, loc).first : Value();
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.rows = f->rows;
      g.in = f->in;
      g.out = f->out;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<LayerNorm<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      LayerNormGrad<Value> g;
      g.dy = dy;
      g.x = f->x;
      g.w = f->w;
      g.mean = f->mean;
      g.rstd = f->rstd;
      g.dw = sink(f->w, loc).first;
      g.db = sink(f->b, loc).first;
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.rows = f->rows;
      g.c = f->c;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<RMSNorm<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      RMSNormGrad<Value> g;
      g.dy = dy;
      g.x = f->x;
      g.w = f->w;
      g.rstd = f->rstd;
      g.dw = sink(f->w, loc).first;
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.rows = f->rows;
      g.c = f->c;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Gelu<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      GeluGrad<Value> g;
      g.dy = dy;
      g.x = f->x;
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.n = f->n;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Swiglu<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      SwigluGrad<Value> g;
      g.dy = dy;
      g.gate = f->gate;
      g.up = f->up;
      int64_t accUp;
      std::tie(g.dgate, g.accumulate_dx) = sink(f->gate, loc);
      std::tie(g.dup, accUp) = sink(f->up, loc);
      if (g.accumulate_dx != accUp)
        return k.emitError("swiglu inputs with different gradient histories are not supported");
      g.n = f->n;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Add<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      // d(b) gets a copy (or an accumulation); d(a) can simply *be* dy when it
      // has no gradient yet: dy is complete and is not read again after the b
      // copy, which comes first. This keeps the residual stream's gradient in one
      // buffer instead of copying it at every layer.
      auto accumulate = [&](Value into) {
        Accumulate<Value> g;
        g.src = dy;
        std::tie(g.dst, g.accumulate_dx) = sink(into, loc);
        g.n = f->n;
        createKernel(b, loc, g);
      };
      accumulate(f->b);
      if (!isParam(f->a) && !written.contains(f->a)) {
        grads[f->a] = dy;
        written.insert(f->a);
        return success();
      }
      accumulate(f->a);
      return success();
    }
    if (auto f = kernelAs<Rope<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      RopeGrad<Value> g;
      g.dy = dy;
      std::tie(g.dx, g.accumulate_dx) = sink(f->x, loc);
      g.batch = f->batch;
      g.seq = f->seq;
      g.heads = f->heads;
      g.head_dim = f->head_dim;
      g.theta = f->theta;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<Attention<Value>>(k)) {
      Value dout = source(f->out);
      if (!dout)
        return success();
      AttentionGrad<Value> g;
      g.dout = dout;
      g.q = f->q;
      g.k = f->k;
      g.v = f->v;
      g.out = f->out;
      g.lse = f->lse;
      int64_t accK, accV;
      std::tie(g.dq, g.accumulate_dx) = sink(f->q, loc);
      std::tie(g.dk, accK) = sink(f->k, loc);
      std::tie(g.dv, accV) = sink(f->v, loc);
      if (g.accumulate_dx != accK || accK != accV)
        return k.emitError("attention inputs with different gradient histories are not supported");
      g.batch = f->batch;
      g.seq = f->seq;
      g.heads = f->heads;
      g.kv_heads = f->kv_heads;
      g.head_dim = f->head_dim;
      createKernel(b, loc, g);
      return success();
    }
    return k.emitError("no gradient rule for kernel '") << k.getName() << "'";
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
    plan_ir::UnitOp fwd = requireUnit(program, plan_ir::UnitKind::forward, "heiretsu-autodiff");
    plan_ir::UnitOp bwd =
        fwd ? requireUnit(program, plan_ir::UnitKind::backward, "heiretsu-autodiff") : nullptr;
    if (!bwd)
      return signalPassFailure();
    if (!bwd.getBody().front().empty()) {
      bwd.emitError("the backward unit is not empty: autodiff already ran");
      return signalPassFailure();
    }
    SmallVector<plan_ir::KernelOp> forward;
    for (Operation &op : fwd.getBody().front())
      forward.push_back(cast<plan_ir::KernelOp>(op));
    if (llvm::none_of(forward, [](plan_ir::KernelOp k) {
          return k.getName() == "cross_entropy" || k.getName() == "vocab_loss";
        })) {
      program.emitError("autodiff needs a cross_entropy kernel producing the loss");
      return signalPassFailure();
    }
    Differentiator diff(program, OpBuilder::atBlockEnd(&bwd.getBody().front()));
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
