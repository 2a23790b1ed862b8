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
#include "dialects/dist/DistDialect.h"
#include "runtime/plan/ops.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_AUTODIFFPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

class Differentiator {
public:
  /// `weights`, when given, is where the weight gradients of linear kernels go (a
  /// backward split into an input-gradient and a weight-gradient unit).
  Differentiator(plan_ir::ProgramOp program, OpBuilder b, std::optional<OpBuilder> weights)
      : program(program), b(b), weights(weights) {}

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
    createKernel(b, loc,
                 plan::op::AllReduce<Value>{
                     .buffers = {g}, .axis = plan::kAxisTp, .reduce = plan::kReduceSum});
  }

  /// The gradient kernel of cross-entropy `f`, whose loss has the constant
  /// gradient `dloss` (vocabParallel: its logits are this tp rank's block).
  void crossEntropyGrad(const plan::op::CrossEntropy<Value> &f, int64_t vocabParallel,
                        double dloss, Location loc) {
    auto [dlogits, accumulate] = sink(f.logits, loc);
    createKernel(b, loc,
                 plan::op::CrossEntropyGrad<Value>{.logits = f.logits,
                                                   .targets = f.targets,
                                                   .lse = f.lse,
                                                   .dlogits = dlogits,
                                                   .rows = f.rows,
                                                   .vocab = f.vocab,
                                                   .accumulate_dx = accumulate,
                                                   .vocab_parallel = vocabParallel,
                                                   .valid = f.valid,
                                                   .dloss = dloss});
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
      crossEntropyGrad(*f, /*vocabParallel=*/0, seed->second, loc);
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
      auto [dsrc, accumulate] = sink(f.src, loc);
      createKernel(b, loc,
                   decltype(g){.src = ddst,
                               .dst = dsrc,
                               .axis = f.axis,
                               .outer = f.outer,
                               .parts = f.parts,
                               .inner = f.inner,
                               .accumulate_dx = accumulate});
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
      // The cross-entropy the three kernels compute together.
      CrossEntropy<Value> whole{.logits = max->logits,
                                .targets = sumExp->targets,
                                .loss = f->loss,
                                .lse = f->lse,
                                .rows = max->rows,
                                .vocab = max->vocab,
                                .valid = max->valid};
      crossEntropyGrad(whole, /*vocabParallel=*/1, seed->second, loc);
      return success();
    }
    // MoE, in the reverse of its steps: combine, (the exchange back), experts,
    // (the exchange), dispatch, route.
    if (auto f = kernelAs<MoeCombine<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      auto [dbuf, bufAccumulate] = sink(f->buf, loc);
      if (bufAccumulate)
        return k.emitError("a moe_combine input with other uses is not supported");
      auto [dweight, accumulate] = sink(f->weight, loc);
      createKernel(b, loc,
                   MoeCombineGrad<Value>{.dy = dy,
                                         .buf = f->buf,
                                         .choice = f->choice,
                                         .pos = f->pos,
                                         .weight = f->weight,
                                         .dbuf = dbuf,
                                         .dweight = dweight,
                                         .rows = f->rows,
                                         .d = f->d,
                                         .experts = f->experts,
                                         .top_k = f->top_k,
                                         .slots = f->slots,
                                         .accumulate_dx = accumulate});
      return success();
    }
    if (auto f = kernelAs<AllToAll<Value>>(k)) {
      // Its transpose is the inverse exchange.
      Value ddst = source(f->dst);
      if (!ddst)
        return success();
      auto [dsrc, accumulate] = sink(f->src, loc);
      AllToAll<Value> g = *f;
      g.src = ddst;
      g.dst = dsrc;
      // The rows that came travel back (the exchange rewrites the other side's).
      std::swap(g.src_rows, g.dst_rows);
      g.back = 1 - f->back;
      g.accumulate_dx = accumulate;
      createKernel(b, loc, g);
      return success();
    }
    if (auto f = kernelAs<MoeExperts<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      for (Value w : {f->w_in, f->w_out, f->w_gate})
        if (w && !isParam(w))
          return k.emitError("moe expert weights must be parameters");
      // Split over ep, an expert's tokens come from the ep ranks of its replica,
      // whose losses are averaged (the dense gradients are averaged over ep).
      double scale = 1.0;
      if (f->w_in.getDefiningOp<plan_ir::ParamOp>().isSplitOver(plan::kAxisEp)) {
        dist::MeshOp mesh = requireMesh(program, "heiretsu-autodiff");
        if (!mesh)
          return failure();
        scale = 1.0 / static_cast<double>(mesh.getEp());
      }
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   MoeExpertsGrad<Value>{.rows = f->rows,
                                         .dy = dy,
                                         .x = f->x,
                                         .w_in = f->w_in,
                                         .w_gate = f->w_gate,
                                         .w_out = f->w_out,
                                         .pre = f->pre,
                                         .gate_pre = f->gate_pre,
                                         .act = f->act,
                                         .dx = dx,
                                         .dw_in = sink(f->w_in, loc).first,
                                         .dw_gate = f->w_gate ? sink(f->w_gate, loc).first : Value(),
                                         .dw_out = sink(f->w_out, loc).first,
                                         .experts = f->experts,
                                         .tokens = f->tokens,
                                         .d = f->d,
                                         .f = f->f,
                                         .swiglu = f->swiglu,
                                         .accumulate_dx = accumulate,
                                         .sources = f->sources,
                                         .dw_scale = scale});
      return success();
    }
    if (auto f = kernelAs<MoeDispatch<Value>>(k)) {
      Value dbuf = source(f->buf);
      if (!dbuf)
        return success();
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   MoeDispatchGrad<Value>{.dbuf = dbuf,
                                          .choice = f->choice,
                                          .pos = f->pos,
                                          .dx = dx,
                                          .rows = f->rows,
                                          .d = f->d,
                                          .experts = f->experts,
                                          .top_k = f->top_k,
                                          .slots = f->slots,
                                          .accumulate_dx = accumulate});
      return success();
    }
    if (auto f = kernelAs<MoeRoute<Value>>(k)) {
      Value dweight = source(f->weight);
      auto seed = constGrads.find(f->aux);
      // Repeated on tp_parts ranks whose gradients are summed, each takes its share.
      double daux = seed == constGrads.end()
                        ? 0.0
                        : seed->second / static_cast<double>(std::max<int64_t>(1, f->tp_parts));
      if (!dweight)
        return k.emitError("a moe whose output has no gradient is not supported");
      if (!isParam(f->router))
        return k.emitError("the moe router must be a parameter");
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   MoeRouteGrad<Value>{.dweight = dweight,
                                       .x = f->x,
                                       .router = f->router,
                                       .probs = f->probs,
                                       .lse = f->lse,
                                       .choice = f->choice,
                                       .dx = dx,
                                       .drouter = sink(f->router, loc).first,
                                       .rows = f->rows,
                                       .d = f->d,
                                       .experts = f->experts,
                                       .top_k = f->top_k,
                                       .seq = f->seq,
                                       .accumulate_dx = accumulate,
                                       .aux_coef = f->aux_coef,
                                       .z_coef = f->z_coef,
                                       .daux = daux});
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
      createKernel(b, loc,
                   EmbeddingGrad<Value>{
                       .ids = f->ids,
                       .dout = dout,
                       .dtable = sink(f->table, loc).first,
                       .dpositions = f->positions ? sink(f->positions, loc).first : Value(),
                       .rows = f->rows,
                       .seq = f->seq,
                       .vocab = f->vocab,
                       .c = f->c,
                       .context = f->context,
                       .vocab_parallel = f->vocab_parallel});
      return success();
    }
    if (auto f = kernelAs<Linear<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      if (!isParam(f->w) || (f->bias && !isParam(f->bias)))
        return k.emitError("linear weights and biases must be parameters");
      // The weights are parameters (checked above): their sinks are their grads.
      auto [dx, accumulate] = sink(f->x, loc);
      LinearGrad<Value> grad{.dy = dy,
                             .x = f->x,
                             .w = f->w,
                             .dx = dx,
                             .dw = sink(f->w, loc).first,
                             .dbias = f->bias ? sink(f->bias, loc).first : Value(),
                             .rows = f->rows,
                             .in = f->in,
                             .out = f->out,
                             .accumulate_dx = accumulate};
      if (!weights) {
        createKernel(b, loc, grad);
        return success();
      }
      // Split: the input gradient now, the weight gradients in the weight unit
      // (which reads dy and x later: neither is written again, see Add).
      LinearGrad<Value> input = grad, weight = grad;
      input.dw = input.dbias = Value();
      weight.dx = Value();
      weight.accumulate_dx = 0;
      createKernel(b, loc, input);
      createKernel(*weights, loc, weight);
      return success();
    }
    if (auto f = kernelAs<LayerNorm<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      Value dw = sink(f->w, loc).first, db = sink(f->b, loc).first;
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   LayerNormGrad<Value>{.dy = dy,
                                        .x = f->x,
                                        .w = f->w,
                                        .mean = f->mean,
                                        .rstd = f->rstd,
                                        .dx = dx,
                                        .dw = dw,
                                        .db = db,
                                        .rows = f->rows,
                                        .c = f->c,
                                        .accumulate_dx = accumulate});
      return success();
    }
    if (auto f = kernelAs<RMSNorm<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      Value dw = sink(f->w, loc).first;
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   RMSNormGrad<Value>{.dy = dy,
                                      .x = f->x,
                                      .w = f->w,
                                      .rstd = f->rstd,
                                      .dx = dx,
                                      .dw = dw,
                                      .rows = f->rows,
                                      .c = f->c,
                                      .accumulate_dx = accumulate});
      return success();
    }
    if (auto f = kernelAs<Gelu<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   GeluGrad<Value>{
                       .dy = dy, .x = f->x, .dx = dx, .n = f->n, .accumulate_dx = accumulate});
      return success();
    }
    if (auto f = kernelAs<Swiglu<Value>>(k)) {
      Value dy = source(f->y);
      if (!dy)
        return success();
      auto [dgate, accumulate] = sink(f->gate, loc);
      auto [dup, accUp] = sink(f->up, loc);
      if (accumulate != accUp)
        return k.emitError("swiglu inputs with different gradient histories are not supported");
      createKernel(b, loc,
                   SwigluGrad<Value>{.dy = dy,
                                     .gate = f->gate,
                                     .up = f->up,
                                     .dgate = dgate,
                                     .dup = dup,
                                     .n = f->n,
                                     .accumulate_dx = accumulate});
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
        auto [dst, add] = sink(into, loc);
        createKernel(b, loc,
                     Accumulate<Value>{.src = dy, .dst = dst, .n = f->n, .accumulate_dx = add});
      };
      accumulate(f->b);
      // (Not with a split backward: the weight unit still reads dy after this.)
      if (!weights && !isParam(f->a) && !written.contains(f->a)) {
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
      auto [dx, accumulate] = sink(f->x, loc);
      createKernel(b, loc,
                   RopeGrad<Value>{.dy = dy,
                                   .dx = dx,
                                   .batch = f->batch,
                                   .seq = f->seq,
                                   .heads = f->heads,
                                   .head_dim = f->head_dim,
                                   .accumulate_dx = accumulate,
                                   .theta = f->theta});
      return success();
    }
    if (auto f = kernelAs<Attention<Value>>(k)) {
      Value dout = source(f->out);
      if (!dout)
        return success();
      auto [dq, accumulate] = sink(f->q, loc);
      auto [dk, accK] = sink(f->k, loc);
      auto [dv, accV] = sink(f->v, loc);
      if (accumulate != accK || accK != accV)
        return k.emitError("attention inputs with different gradient histories are not supported");
      createKernel(b, loc,
                   AttentionGrad<Value>{.dout = dout,
                                        .q = f->q,
                                        .k = f->k,
                                        .v = f->v,
                                        .out = f->out,
                                        .lse = f->lse,
                                        .dq = dq,
                                        .dk = dk,
                                        .dv = dv,
                                        .batch = f->batch,
                                        .seq = f->seq,
                                        .heads = f->heads,
                                        .kv_heads = f->kv_heads,
                                        .head_dim = f->head_dim,
                                        .accumulate_dx = accumulate});
      return success();
    }
    // Pipeline stages: the gradient of a value sent to the next stage comes back
    // from it; that of a value received from the previous stage goes back to it.
    if (auto f = kernelAs<Send<Value>>(k)) {
      auto [dx, accumulate] = sink(f->x, loc);
      Value into = accumulate ? createBuffer(program, loc, "d" + bufferName(f->x) + ".recv",
                                             cast<MemRefType>(f->x.getType()))
                              : dx;
      createKernel(b, loc, Recv<Value>{.x = into, .axis = f->axis, .peer = f->peer});
      if (accumulate)
        createKernel(b, loc,
                     Accumulate<Value>{
                         .src = into, .dst = dx, .n = numElements(dx), .accumulate_dx = 1});
      return success();
    }
    if (auto f = kernelAs<Recv<Value>>(k)) {
      Value dx = source(f->x);
      if (!dx) { // nothing reached it: the peer still waits for a gradient
        dx = createBuffer(program, loc, "d" + bufferName(f->x), cast<MemRefType>(f->x.getType()));
        createKernel(b, loc, Zero<Value>{.buffer = dx});
      }
      createKernel(b, loc, Send<Value>{.x = dx, .axis = f->axis, .peer = f->peer});
      return success();
    }
    return k.emitError("no gradient rule for kernel '") << k.getName() << "'";
  }

private:
  plan_ir::ProgramOp program;
  OpBuilder b;
  std::optional<OpBuilder> weights;
  DenseMap<Value, Value> grads;
  DenseSet<Value> written;
  DenseMap<Value, double> constGrads; // scalar losses: gradient known statically
  DenseSet<Value> reduced;             // grad_reduce values whose gradient is reduced
  DenseMap<Value, plan_ir::KernelOp> writer;
};

struct AutodiffPass : impl::AutodiffPassBase<AutodiffPass> {
  using AutodiffPassBase::AutodiffPassBase;
  void runOnOperation() override {
    plan_ir::ProgramOp program = getOperation();
    if (!requireUnit(program, plan_ir::UnitKind::forward, "heiretsu-autodiff"))
      return signalPassFailure();
    // Each forward unit (one per virtual chunk) with the backward unit of its chunk.
    SmallVector<plan_ir::UnitOp> forwards;
    for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
      if (unit.getKind() == plan_ir::UnitKind::forward)
        forwards.push_back(unit);
    for (plan_ir::UnitOp fwd : forwards) {
      plan_ir::UnitOp bwd;
      for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
        if (unit.getKind() == plan_ir::UnitKind::backward && unit.chunkIndex() == fwd.chunkIndex())
          bwd = unit;
      if (!bwd) {
        requireUnit(program, plan_ir::UnitKind::backward, "heiretsu-autodiff");
        return signalPassFailure();
      }
      if (failed(differentiate(program, fwd, bwd)))
        return signalPassFailure();
    }
  }

  /// Fills `bwd` (and, split, the weight unit after it) with the backward pass
  /// of `fwd`.
  LogicalResult differentiate(plan_ir::ProgramOp program, plan_ir::UnitOp fwd,
                              plan_ir::UnitOp bwd) {
    if (!bwd.getBody().front().empty())
      return bwd.emitError("the backward unit is not empty: autodiff already ran");
    SmallVector<plan_ir::KernelOp> forward;
    for (Operation &op : fwd.getBody().front())
      forward.push_back(cast<plan_ir::KernelOp>(op));
    // What the backward pass starts from: the loss, or (a pipeline stage before
    // the last) the gradients of what the forward sends on.
    if (llvm::none_of(forward, [](plan_ir::KernelOp k) {
          return k.getName() == "cross_entropy" || k.getName() == "vocab_loss" ||
                 k.getName() == plan::op::Send<Value>::kName;
        }))
      return program.emitError("autodiff needs a cross_entropy kernel producing the loss (or, on "
                               "a pipeline stage before the last, a send of the forward's result)");
    // Split: the backward unit becomes the input-gradient unit, and a weight-
    // gradient unit of the same chunk follows it.
    std::optional<OpBuilder> weights;
    if (splitBackward) {
      std::string suffix = bwd.getName().str().substr(std::string("backward").size());
      bwd.setKind(plan_ir::UnitKind::backward_input);
      bwd.setName("backward_input" + suffix);
      OpBuilder ub(bwd->getContext());
      ub.setInsertionPointAfter(bwd);
      auto w = plan_ir::UnitOp::create(
          ub, bwd.getLoc(), ub.getStringAttr("backward_weight" + suffix),
          plan_ir::UnitKindAttr::get(ub.getContext(), plan_ir::UnitKind::backward_weight),
          bwd.getChunkAttr());
      w.getBody().push_back(new Block());
      weights = OpBuilder::atBlockEnd(&w.getBody().front());
    }
    Differentiator diff(program, OpBuilder::atBlockEnd(&bwd.getBody().front()), weights);
    // Gradients are of the mean loss over the step's microbatches.
    double lossScale = 1.0 / static_cast<double>(program.getMicrobatches());
    for (Operation &op : program.getBody().front())
      if (auto buf = dyn_cast<plan_ir::BufferOp>(op); buf && buf.getIo() == "loss")
        diff.seedLoss(buf.getBuffer(), lossScale);
    for (plan_ir::KernelOp k : forward)
      diff.noteWriter(k);
    for (plan_ir::KernelOp k : llvm::reverse(forward))
      if (failed(diff.rule(k)))
        return failure();
    return success();
  }
};

} // namespace
} // namespace heiretsu
