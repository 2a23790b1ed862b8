//===- LowerToPlan.cpp - graph forward -> plan.program kernels ------------===//
//
// One lowering rule per graph op; see Passes.td for the contract. Buffers keep the
// graph tensor's shape (kernels only check element counts); a kernel's `rows` is
// the number of vectors of its last dimension.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"
#include "runtime/plan/ops.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <cmath>

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_LOWERTOPLANPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

struct Lowering {
  plan_ir::ProgramOp program;
  OpBuilder b; // inside the "forward" unit
  DenseMap<Value, Value> buffers{}; // graph tensor -> plan buffer
  int64_t temps = 0;
  int64_t tp = 1, ep = 1; // the mesh's sizes (dist.sharding attributes refer to them)
  int64_t stage = 0; // the pipeline stage this program runs
  bool needsLoss = true; // @forward returns the loss; a stage may return nothing

  /// The dimension of `v` split over tp (-1: none), from its producer's sharding.
  static int64_t splitDim(Value v) {
    for (auto [d, axis] : llvm::enumerate(splitAxes(v)))
      if (axis == plan::kAxisTp)
        return static_cast<int64_t>(d);
    return -1;
  }
  /// This rank's shape of graph value `v`: each split dimension divided by its
  /// axis's size (tp; ep for the expert weights).
  SmallVector<int64_t> localShape(Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> shape(t.getShape());
    for (auto [d, axis] : llvm::enumerate(splitAxes(v)))
      if (axis >= 0)
        shape[d] /= axis == plan::kAxisEp ? ep : tp;
    return shape;
  }
  /// The axis each dimension of `v` is split over (-1: none), from its producer's
  /// sharding.
  static SmallVector<int64_t> splitAxes(Value v) {
    SmallVector<int64_t> axes(cast<RankedTensorType>(v.getType()).getRank(), -1);
    Operation *def = v.getDefiningOp();
    if (auto s = def ? def->getAttrOfType<dist::ShardingAttr>(dist::kShardingAttrName) : nullptr)
      for (auto [d, axis] : llvm::enumerate(s.getDims()))
        axes[d] = axis;
    return axes;
  }
  MemRefType memref(Value tensor) {
    auto t = cast<RankedTensorType>(tensor.getType());
    return MemRefType::get(localShape(tensor), t.getElementType());
  }
  MemRefType memref(ArrayRef<int64_t> shape) {
    return MemRefType::get(shape, b.getF32Type());
  }
  /// A fresh buffer for graph value `v`, named after its position in the graph.
  Value define(Value v, Location loc, StringRef hint) {
    Value buf = createBuffer(program, loc, (hint + "." + std::to_string(temps++)).str(), memref(v));
    buffers[v] = buf;
    return buf;
  }
  Value temp(Location loc, StringRef hint, ArrayRef<int64_t> shape) {
    return createBuffer(program, loc, (hint + "." + std::to_string(temps++)).str(), memref(shape));
  }
  Value get(Value v) { return v ? buffers.lookup(v) : Value(); }
  /// MoE: for an expert-major graph value, the i32 buffer of the rows in use of each
  /// expert's region, and how many counts each expert has there (its sources).
  DenseMap<Value, std::pair<Value, int64_t>> rowsOf{};
  Value intTemp(Location loc, StringRef hint, ArrayRef<int64_t> shape) {
    return createBuffer(program, loc, (hint + "." + std::to_string(temps++)).str(),
                        MemRefType::get(shape, b.getI32Type()));
  }

  /// A norm over this rank's tokens only (sequence parallelism): each tp rank's
  /// gradient of its whole weights is a partial sum, all-reduced in the update.
  void markPartialGrads(Value input, std::initializer_list<Value> weights) {
    if (splitDim(input) != 1)
      return;
    for (Value w : weights)
      if (auto p = get(w).getDefiningOp<plan_ir::ParamOp>())
        p.setGradReduceAttr(b.getStringAttr("tp"));
  }

  static plan::op::AllReduce<Value> tpAllReduce(std::vector<Value> buffers, int64_t reduce) {
    return {.buffers = std::move(buffers), .axis = plan::kAxisTp, .reduce = reduce};
  }

  int64_t lastDim(Value v) { return localShape(v).back(); }
  int64_t numel(Value v) {
    int64_t n = 1;
    for (int64_t d : localShape(v))
      n *= d;
    return n;
  }

  LogicalResult lower(Operation &op, int64_t microbatches) {
    Location loc = op.getLoc();
    if (auto p = dyn_cast<graph::ParamOp>(op)) {
      OpBuilder pb(program.getContext());
      pb.setInsertionPoint(&*llvm::find_if(program.getBody().front(), [](Operation &o) {
        return isa<plan_ir::UnitOp>(o);
      }));
      MemRefType type = memref(p.getResult());
      FloatAttr std;
      if (p.getStd())
        std = pb.getF64FloatAttr(p.getStd()->convertToDouble());
      // Matrices and embeddings are decayed; norms and biases (rank 1) are not.
      bool decay = type.getRank() >= 2;
      auto global = cast<RankedTensorType>(p.getType()).getShape();
      SmallVector<int64_t> axes = splitAxes(p.getResult());
      bool split = llvm::any_of(axes, [](int64_t a) { return a >= 0; });
      auto param = plan_ir::ParamOp::create(
          pb, loc, type, type, type, type, p.getNameAttr(),
          plan_ir::InitKindAttr::get(pb.getContext(),
                                     static_cast<plan_ir::InitKind>(p.getInit())),
          std, decay ? pb.getUnitAttr() : UnitAttr(), DenseI64ArrayAttr(),
          split ? pb.getDenseI64ArrayAttr(axes) : DenseI64ArrayAttr(),
          split ? pb.getDenseI64ArrayAttr(global) : DenseI64ArrayAttr(), StringAttr(),
          IntegerAttr());
      buffers[p.getResult()] = param.getValue();
      return success();
    }
    if (auto e = dyn_cast<graph::EmbeddingOp>(op)) {
      int64_t rows = numel(e.getIds()), c = lastDim(e.getResult());
      int64_t seq = cast<RankedTensorType>(e.getIds().getType()).getShape().back();
      int64_t vocab = localShape(e.getTable())[0];
      Value out = define(e.getResult(), loc, "embed");
      int64_t context = e.getPositions()
                            ? cast<RankedTensorType>(e.getPositions().getType()).getShape()[0]
                            : seq;
      createKernel(b, loc,
                   plan::op::Embedding<Value>{.ids = get(e.getIds()),
                                              .table = get(e.getTable()),
                                              .positions = get(e.getPositions()),
                                              .out = out,
                                              .offset = get(e.getOffset()),
                                              .rows = rows,
                                              .seq = seq,
                                              .vocab = vocab,
                                              .c = c,
                                              .context = context,
                                              .vocab_parallel = splitDim(e.getTable()) == 0});
      return success();
    }
    if (auto l = dyn_cast<graph::LinearOp>(op)) {
      int64_t in = lastDim(l.getInput()), out = lastDim(l.getResult());
      int64_t rows = numel(l.getInput()) / in;
      Value y = define(l.getResult(), loc, "linear");
      createKernel(b, loc,
                   plan::op::Linear<Value>{.x = get(l.getInput()),
                                           .w = get(l.getWeight()),
                                           .bias = get(l.getBias()),
                                           .y = y,
                                           .rows = rows,
                                           .in = in,
                                           .out = out,
                                           .row_parallel = splitDim(l.getWeight()) == 1});
      return success();
    }
    if (auto n = dyn_cast<graph::LayerNormOp>(op)) {
      int64_t c = lastDim(n.getInput()), rows = numel(n.getInput()) / c;
      markPartialGrads(n.getInput(), {n.getWeight(), n.getBias()});
      Value y = define(n.getResult(), loc, "layernorm");
      Value mean = temp(loc, "layernorm.mean", {rows}), rstd = temp(loc, "layernorm.rstd", {rows});
      createKernel(b, loc,
                   plan::op::LayerNorm<Value>{.x = get(n.getInput()),
                                              .w = get(n.getWeight()),
                                              .b = get(n.getBias()),
                                              .y = y,
                                              .mean = mean,
                                              .rstd = rstd,
                                              .rows = rows,
                                              .c = c,
                                              .eps = n.getEps().convertToDouble()});
      return success();
    }
    if (auto n = dyn_cast<graph::RMSNormOp>(op)) {
      int64_t c = lastDim(n.getInput()), rows = numel(n.getInput()) / c;
      markPartialGrads(n.getInput(), {n.getWeight()});
      Value y = define(n.getResult(), loc, "rmsnorm");
      Value rstd = temp(loc, "rmsnorm.rstd", {rows});
      createKernel(b, loc,
                   plan::op::RMSNorm<Value>{.x = get(n.getInput()),
                                            .w = get(n.getWeight()),
                                            .y = y,
                                            .rstd = rstd,
                                            .rows = rows,
                                            .c = c,
                                            .eps = n.getEps().convertToDouble()});
      return success();
    }
    if (auto a = dyn_cast<graph::AttentionOp>(op)) {
      auto qt = cast<RankedTensorType>(a.getQuery().getType());
      int64_t batch = qt.getShape()[0], seq = qt.getShape()[1];
      // Split over tp, each rank has its block of heads and kv heads.
      int64_t parts = splitDim(a.getQuery()) >= 0 ? tp : 1;
      int64_t heads = a.getHeads() / parts, kv = a.getKvHeads() / parts;
      int64_t hd = qt.getShape()[2] / a.getHeads();
      Value q = get(a.getQuery()), k = get(a.getKey());
      Value position = get(a.getPosition()); // a decode program's (with a cache)
      if (std::optional<APFloat> theta = a.getRope()) {
        double th = theta->convertToDouble();
        Value qr = temp(loc, "rope.q", localShape(a.getQuery()));
        Value kr = temp(loc, "rope.k", localShape(a.getKey()));
        auto rope = [&](Value x, Value y, int64_t h) {
          createKernel(b, loc,
                       plan::op::Rope<Value>{.x = x,
                                             .y = y,
                                             .offset = position,
                                             .batch = batch,
                                             .seq = seq,
                                             .heads = h,
                                             .head_dim = hd,
                                             .theta = th});
        };
        rope(q, qr, heads);
        rope(k, kr, kv);
        q = qr;
        k = kr;
      }
      Value out = define(a.getResult(), loc, "attention");
      if (std::optional<uint64_t> context = a.getCache()) {
        // The caches persist from one run of the program to the next: io "cache"
        // keeps them live over the whole program, so nothing else shares them.
        auto cache = [&](StringRef hint) {
          int64_t c = static_cast<int64_t>(*context);
          return createBuffer(program, loc, (hint + "." + std::to_string(temps++)).str(),
                              memref({batch, c, kv, hd}), "cache");
        };
        Value kCache = cache("kv_cache.k"), vCache = cache("kv_cache.v");
        createKernel(b, loc,
                     plan::op::CachedAttention<Value>{.q = q,
                                                      .k = k,
                                                      .v = get(a.getValue()),
                                                      .k_cache = kCache,
                                                      .v_cache = vCache,
                                                      .position = position,
                                                      .out = out,
                                                      .batch = batch,
                                                      .seq = seq,
                                                      .heads = heads,
                                                      .kv_heads = kv,
                                                      .head_dim = hd,
                                                      .context = static_cast<int64_t>(*context)});
        return success();
      }
      Value lse = temp(loc, "attention.lse", {batch, heads, seq});
      createKernel(b, loc,
                   plan::op::Attention<Value>{.q = q,
                                              .k = k,
                                              .v = get(a.getValue()),
                                              .out = out,
                                              .lse = lse,
                                              .batch = batch,
                                              .seq = seq,
                                              .heads = heads,
                                              .kv_heads = kv,
                                              .head_dim = hd});
      return success();
    }
    if (auto g = dyn_cast<graph::GeluOp>(op)) {
      Value y = define(g.getResult(), loc, "gelu");
      createKernel(b, loc,
                   plan::op::Gelu<Value>{.x = get(g.getInput()), .y = y, .n = numel(g.getInput())});
      return success();
    }
    if (auto s = dyn_cast<graph::SwigluOp>(op)) {
      Value y = define(s.getResult(), loc, "swiglu");
      createKernel(b, loc,
                   plan::op::Swiglu<Value>{
                       .gate = get(s.getGate()), .up = get(s.getUp()), .y = y, .n = numel(s.getGate())});
      return success();
    }
    if (auto a = dyn_cast<graph::AddOp>(op)) {
      Value y = define(a.getResult(), loc, "add");
      createKernel(b, loc,
                   plan::op::Add<Value>{
                       .a = get(a.getLhs()), .b = get(a.getRhs()), .y = y, .n = numel(a.getLhs())});
      return success();
    }
    if (auto ce = dyn_cast<graph::CrossEntropyOp>(op)) {
      int64_t vocab = lastDim(ce.getLogits()), rows = numel(ce.getLogits()) / vocab;
      // The logical columns that are classes (the rest: vocabulary padding).
      int64_t valid = ce.getValid() ? static_cast<int64_t>(*ce.getValid())
                                    : cast<RankedTensorType>(ce.getLogits().getType()).getShape().back();
      Value loss = define(ce.getLoss(), loc, "cross_entropy.loss");
      Value lse = temp(loc, "cross_entropy.lse", {rows});
      if (splitDim(ce.getLogits()) >= 0) {
        // Vocabulary-parallel: no rank holds a row's logits whole. The row max, then
        // the sum of exponentials and the target's logit, are reduced over tp.
        Value logits = get(ce.getLogits()), targets = get(ce.getTargets());
        Value max = temp(loc, "cross_entropy.max", {rows});
        Value sum = temp(loc, "cross_entropy.sum_exp", {rows});
        Value target = temp(loc, "cross_entropy.target_logit", {rows});
        createKernel(b, loc,
                     plan::op::VocabMax<Value>{
                         .logits = logits, .max = max, .rows = rows, .vocab = vocab, .valid = valid});
        createKernel(b, loc, tpAllReduce({max}, plan::kReduceMax));
        createKernel(b, loc,
                     plan::op::VocabSumExp<Value>{.logits = logits,
                                                  .targets = targets,
                                                  .max = max,
                                                  .sum = sum,
                                                  .target = target,
                                                  .rows = rows,
                                                  .vocab = vocab,
                                                  .valid = valid});
        createKernel(b, loc, tpAllReduce({sum, target}, plan::kReduceSum));
        createKernel(b, loc,
                     plan::op::VocabLoss<Value>{.max = max,
                                                .sum = sum,
                                                .target = target,
                                                .loss = loss,
                                                .lse = lse,
                                                .rows = rows});
        return success();
      }
      createKernel(b, loc,
                   plan::op::CrossEntropy<Value>{.logits = get(ce.getLogits()),
                                                 .targets = get(ce.getTargets()),
                                                 .loss = loss,
                                                 .lse = lse,
                                                 .rows = rows,
                                                 .vocab = vocab,
                                                 .valid = valid});
      return success();
    }
    if (isa<graph::MoEOp>(op))
      return op.emitError("graph.moe is lowered in steps: run heiretsu-moe-dispatch first");
    if (auto r = dyn_cast<graph::MoERouteOp>(op)) {
      int64_t d = lastDim(r.getInput()), rows = numel(r.getInput()) / d;
      int64_t experts = r.getExperts(), k = r.getTopK();
      Value choice = define(r.getChoice(), loc, "moe.choice");
      Value pos = define(r.getPos(), loc, "moe.pos");
      Value weight = define(r.getWeight(), loc, "moe.weight");
      Value aux = define(r.getAuxLoss(), loc, "moe.aux");
      Value counts = intTemp(loc, "moe.counts", {experts});
      rowsOf[r.getChoice()] = {counts, 1};
      // Under tp the route runs on every tp rank of the moe's region (its input is
      // the region's copy, or all_gather, whose gradient sums over tp).
      auto region = r.getInput().getDefiningOp();
      bool inTp = region && isa<dist::CopyOp, dist::AllGatherOp>(region);
      // Each tp rank's router gradient is then a partial sum, all-reduced in the update.
      if (auto router = get(r.getRouter()).getDefiningOp<plan_ir::ParamOp>(); router && inTp)
        router.setGradReduceAttr(b.getStringAttr("tp"));
      createKernel(b, loc,
                   plan::op::MoeRoute<Value>{
                       .x = get(r.getInput()),
                       .router = get(r.getRouter()),
                       .probs = temp(loc, "moe.probs", {rows, experts}),
                       .lse = temp(loc, "moe.lse", {rows}),
                       .choice = choice,
                       .pos = pos,
                       .weight = weight,
                       .counts = counts,
                       .aux = aux,
                       .load = temp(loc, "moe.load", {2, experts}),
                       .rows = rows,
                       .d = d,
                       .experts = experts,
                       .top_k = k,
                       .seq = cast<RankedTensorType>(r.getInput().getType()).getDimSize(1),
                       .capacity = static_cast<int64_t>(r.getCapacity()),
                       .tp_parts = inTp ? tp : 1,
                       .aux_coef = r.getAuxCoef().convertToDouble(),
                       .z_coef = r.getZCoef().convertToDouble()});
      return success();
    }
    if (isa<graph::MoEDispatchOp, graph::MoECombineOp>(op)) {
      bool dispatch = isa<graph::MoEDispatchOp>(op);
      Value tokens = dispatch ? op.getOperand(0) : op.getResult(0);
      Value expertMajor = dispatch ? op.getResult(0) : op.getOperand(0);
      auto buf = cast<RankedTensorType>(expertMajor.getType());
      int64_t d = lastDim(tokens), rows = numel(tokens) / d;
      int64_t k = cast<RankedTensorType>(op.getOperand(1).getType()).getDimSize(2);
      if (dispatch) {
        Value out = define(op.getResult(0), loc, "moe.dispatch");
        rowsOf[op.getResult(0)] = rowsOf.lookup(op.getOperand(1)); // the route's counts
        createKernel(b, loc,
                     plan::op::MoeDispatch<Value>{.x = get(op.getOperand(0)),
                                                  .choice = get(op.getOperand(1)),
                                                  .pos = get(op.getOperand(2)),
                                                  .buf = out,
                                                  .rows = rows,
                                                  .d = d,
                                                  .experts = buf.getDimSize(0),
                                                  .top_k = k,
                                                  .slots = buf.getDimSize(1)});
        return success();
      }
      Value y = define(op.getResult(0), loc, "moe.combine");
      createKernel(b, loc,
                   plan::op::MoeCombine<Value>{.buf = get(op.getOperand(0)),
                                               .choice = get(op.getOperand(1)),
                                               .pos = get(op.getOperand(2)),
                                               .weight = get(op.getOperand(3)),
                                               .y = y,
                                               .rows = rows,
                                               .d = d,
                                               .experts = buf.getDimSize(0),
                                               .top_k = k,
                                               .slots = buf.getDimSize(1)});
      return success();
    }
    if (auto m = dyn_cast<graph::MoEExpertsOp>(op)) {
      SmallVector<int64_t> in = localShape(m.getInput());
      int64_t experts = in[0], tokens = in[1], d = in[2];
      int64_t f = localShape(m.getWIn())[1];
      if (localShape(m.getWIn())[0] != experts)
        return op.emitError() << "this rank holds " << localShape(m.getWIn())[0]
                              << " experts' weights but the expert-major input has " << experts
                              << " experts (split the weights over ep: heiretsu-moe-dispatch)";
      bool swiglu = m.getAct() == graph::Activation::swiglu;
      auto [rows, sources] = rowsOf.lookup(m.getInput());
      if (!rows)
        return op.emitError("moe_experts needs its input from moe_dispatch (or its all_to_all)");
      rowsOf[m.getResult()] = {rows, sources};
      Value y = define(m.getResult(), loc, "moe.experts");
      createKernel(b, loc,
                   plan::op::MoeExperts<Value>{
                       .rows = rows,
                       .x = get(m.getInput()),
                       .w_in = get(m.getWIn()),
                       .w_gate = get(m.getWGate()),
                       .w_out = get(m.getWOut()),
                       .pre = temp(loc, "moe.pre", {experts, tokens, f}),
                       .gate_pre = swiglu ? temp(loc, "moe.gate_pre", {experts, tokens, f}) : Value(),
                       .act = temp(loc, "moe.act", {experts, tokens, f}),
                       .y = y,
                       .experts = experts,
                       .tokens = tokens,
                       .d = d,
                       .f = f,
                       .swiglu = swiglu,
                       .sources = sources});
      return success();
    }
    if (auto a = dyn_cast<dist::AllToAllOp>(op)) {
      // The MoE exchange: [parts, outer, inner] <-> [outer, parts, inner].
      bool back = a.getSplitDim() == 1 && a.getConcatDim() == 0;
      if (!back && !(a.getSplitDim() == 0 && a.getConcatDim() == 1))
        return op.emitError() << "dist.all_to_all split " << a.getSplitDim() << " concat "
                              << a.getConcatDim()
                              << " has no plan lowering (split 0 concat 1 and its inverse do)";
      SmallVector<int64_t> src = localShape(a.getInput());
      if (src.size() < 2)
        return op.emitError("dist.all_to_all needs a tensor of rank >= 2");
      int64_t parts = a.getAxis() == dist::Axis::ep ? ep : tp;
      int64_t inner = 1;
      for (size_t d = 2; d < src.size(); ++d)
        inner *= src[d];
      int64_t outer = back ? src[0] : src[0] / parts;
      inner *= back ? src[1] / parts : src[1];
      Value dst = define(a.getResult(), loc, "all_to_all");
      // MoE's expert-major buffers: only the rows in use travel.
      auto [srcRows, sources] = rowsOf.lookup(a.getInput());
      Value dstRows;
      if (srcRows) {
        dstRows = intTemp(loc, "all_to_all.rows",
                          back ? SmallVector<int64_t>{parts, outer} : SmallVector<int64_t>{outer, parts});
        rowsOf[a.getResult()] = {dstRows, back ? 1 : parts};
      }
      createKernel(b, loc,
                   plan::op::AllToAll<Value>{.src = get(a.getInput()),
                                             .dst = dst,
                                             .src_rows = srcRows,
                                             .dst_rows = dstRows,
                                             .axis = static_cast<int64_t>(a.getAxis()),
                                             .outer = outer,
                                             .parts = parts,
                                             .inner = inner,
                                             .back = back ? 1 : 0,
                                             .variable = srcRows ? 1 : 0,
                                             .row = src.back()});
      return success();
    }
    if (auto r = dyn_cast<dist::AllReduceOp>(op)) {
      // In place: the partial sums' buffer becomes the reduced value's.
      Value buf = get(r.getInput());
      buffers[r.getResult()] = buf;
      createKernel(b, loc,
                   plan::op::AllReduce<Value>{.buffers = {buf},
                                              .axis = static_cast<int64_t>(r.getAxis()),
                                              .reduce = static_cast<int64_t>(r.getReduce())});
      return success();
    }
    if (isa<dist::AllGatherOp, dist::ReduceScatterOp>(op)) {
      // Sequence parallelism (global view): between a tensor split along `dim`
      // and the whole one. Runs of `inner` elements, `outer` of them per rank.
      bool gather = isa<dist::AllGatherOp>(op);
      int64_t dim = gather ? cast<dist::AllGatherOp>(op).getDim()
                           : cast<dist::ReduceScatterOp>(op).getDim();
      Value split = gather ? op.getOperand(0) : op.getResult(0);
      if (splitDim(split) != dim)
        return op.emitError("expected the split side's dist.sharding to split dimension ") << dim;
      SmallVector<int64_t> local = localShape(split);
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < static_cast<int64_t>(local.size()); ++d)
        (d < dim ? outer : inner) *= local[d];
      Value src = get(op.getOperand(0));
      Value dst = define(op.getResult(0), loc, gather ? "all_gather" : "reduce_scatter");
      auto create = [&](auto op) { // the two have the same operands
        createKernel(b, loc,
                     decltype(op){.src = src,
                                  .dst = dst,
                                  .axis = plan::kAxisTp,
                                  .outer = outer,
                                  .parts = tp,
                                  .inner = inner});
      };
      if (gather)
        create(plan::op::AllGatherInto<Value>());
      else
        create(plan::op::ReduceScatterInto<Value>());
      return success();
    }
    if (auto c = dyn_cast<dist::CopyOp>(op)) {
      // The identity: the result is the input's buffer, marked so that autodiff
      // all-reduces its gradient. That gradient must be the copy's alone.
      Value buf = get(c.getInput());
      auto def = buf.getDefiningOp<plan_ir::BufferOp>();
      if (!def || !c.getInput().hasOneUse())
        return op.emitError("dist.copy of a value with other uses is not supported");
      def.setGradReduceAttr(b.getStringAttr(dist::stringifyAxis(c.getAxis())));
      buffers[c.getResult()] = buf;
      return success();
    }
    if (auto send = dyn_cast<dist::SendOp>(op)) {
      createKernel(b, loc,
                   plan::op::Send<Value>{.x = get(send.getInput()),
                                         .axis = static_cast<int64_t>(send.getAxis()),
                                         .peer = stage + send.getOffsetAttr().getInt()});
      return success();
    }
    if (auto recv = dyn_cast<dist::RecvOp>(op)) {
      Value x = define(recv.getResult(), loc, "recv");
      createKernel(b, loc,
                   plan::op::Recv<Value>{.x = x,
                                         .axis = static_cast<int64_t>(recv.getAxis()),
                                         .peer = stage + recv.getOffsetAttr().getInt()});
      return success();
    }
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      if (ret.getNumOperands() == 0 && !needsLoss)
        return success(); // a stage without loss terms
      // The returned scalar (cross-entropy plus any MoE auxiliary losses) is the
      // buffer the runtime reads as the step's (this stage's part of the) loss.
      Value loss = ret.getNumOperands() == 1 ? get(ret.getOperand(0)) : Value();
      auto def = loss ? loss.getDefiningOp<plan_ir::BufferOp>() : nullptr;
      // A decode program (graph inputs tokens and position) returns its logits.
      if (def && cast<RankedTensorType>(ret.getOperand(0).getType()).getRank() == 3) {
        def.setIoAttr(b.getStringAttr("logits"));
        return success();
      }
      if (!def || numElements(loss) != 1)
        return op.emitError("the forward function must return the scalar loss");
      def.setIoAttr(b.getStringAttr("loss"));
      return success();
    }
    return op.emitError("no plan lowering for '") << op.getName() << "'";
  }
};

struct LowerToPlanPass : impl::LowerToPlanPassBase<LowerToPlanPass> {
  using LowerToPlanPassBase::LowerToPlanPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto model = module->getAttrOfType<DictionaryAttr>(graph::kModelAttrName);
    auto vocab = model ? model.getAs<IntegerAttr>("vocab") : nullptr;
    if (!model || !vocab) {
      module.emitError("expected a graph.model module (with 'vocab')");
      return signalPassFailure();
    }
    dist::MeshOp mesh = requireMesh(module, getArgument());
    if (!mesh)
      return signalPassFailure();
    if (microbatches < 1) {
      module.emitError() << "microbatches must be >= 1, got " << static_cast<int64_t>(microbatches);
      return signalPassFailure();
    }
    // The functions to lower, by stage (and virtual chunk): @forward, or each
    // stage's @stage_S, or with several chunks per stage @stage_S_chunk_K.
    const int64_t pp = static_cast<int64_t>(mesh.getPp());
    SmallVector<SmallVector<func::FuncOp>> stages;
    if (auto forward = module.lookupSymbol<func::FuncOp>("forward")) {
      if (pp != 1 || forward.getNumArguments() != 2) {
        module.emitError() << (pp != 1 ? "the mesh has pp = " + std::to_string(pp) +
                                             ": run heiretsu-stage-cuts first"
                                       : std::string("expected func.func @forward(tokens, "
                                                     "targets)"));
        return signalPassFailure();
      }
      stages.push_back({forward});
    } else {
      for (int64_t s = 0; s < pp; ++s) {
        SmallVector<func::FuncOp> chunks;
        if (auto fn = module.lookupSymbol<func::FuncOp>("stage_" + std::to_string(s)))
          chunks.push_back(fn);
        for (int64_t c = 0;; ++c) {
          auto fn = module.lookupSymbol<func::FuncOp>("stage_" + std::to_string(s) + "_chunk_" +
                                                      std::to_string(c));
          if (!fn)
            break;
          chunks.push_back(fn);
        }
        if (chunks.empty()) {
          module.emitError() << "expected func.func @forward, or @stage_0 .. @stage_"
                             << pp - 1 << " (heiretsu-stage-cuts); @stage_" << s << " is missing";
          return signalPassFailure();
        }
        stages.push_back(chunks);
      }
    }
    // Parameter name -> (stage, plan.param) of each program holding it.
    llvm::StringMap<SmallVector<std::pair<int64_t, plan_ir::ParamOp>, 2>> holders;
    for (auto [s, chunks] : llvm::enumerate(stages)) {
      FailureOr<plan_ir::ProgramOp> program =
          lowerStage(module, chunks, static_cast<int64_t>(s), mesh, vocab, pp > 1);
      if (failed(program))
        return signalPassFailure();
      for (plan_ir::ParamOp p : paramsOf(*program))
        holders[p.getName()].push_back({static_cast<int64_t>(s), p});
    }
    for (auto &[name, held] : holders) {
      if (held.size() > 2) {
        module.emitError() << "parameter '" << name.str() << "' is used on " << held.size()
                           << " pipeline stages; a parameter may be shared by two (a tied "
                              "embedding and head)";
        return signalPassFailure();
      }
      if (held.size() == 2) {
        Builder b(module.getContext());
        held[0].second.setTiedStageAttr(b.getI64IntegerAttr(held[1].first));
        held[1].second.setTiedStageAttr(b.getI64IntegerAttr(held[0].first));
      }
    }
    for (auto &chunks : stages)
      for (func::FuncOp fn : chunks)
        fn.erase();
  }

  /// The plan.program of stage `stage` from its functions, one per virtual chunk
  /// (see Passes.td).
  FailureOr<plan_ir::ProgramOp> lowerStage(ModuleOp module, ArrayRef<func::FuncOp> chunks,
                                           int64_t stage, dist::MeshOp mesh, IntegerAttr vocab,
                                           bool isStage) {
    func::FuncOp fn = chunks.front();
    auto model = module->getAttrOfType<DictionaryAttr>(graph::kModelAttrName);
    // The batch geometry: the model's, else (hand-written IR) the inputs' shape.
    auto batch = model.getAs<IntegerAttr>("batch"), seq = model.getAs<IntegerAttr>("seq");
    if ((!batch || !seq) && fn.getNumArguments() > 0) {
      auto ids = cast<RankedTensorType>(fn.getArgument(0).getType());
      OpBuilder b(module.getContext());
      batch = b.getI64IntegerAttr(ids.getShape()[0]);
      seq = b.getI64IntegerAttr(ids.getShape()[1]);
    }
    if (!batch || !seq) {
      module.emitError("graph.model has no 'batch' or 'seq'");
      return failure();
    }
    OpBuilder mb(module.getBodyRegion());
    mb.setInsertionPointToEnd(module.getBody());
    auto program = plan_ir::ProgramOp::create(
        mb, fn.getLoc(), model.getAs<StringAttr>("name"), mb.getI64IntegerAttr(stage), batch,
        mb.getI64IntegerAttr(microbatches), seq, vocab, IntegerAttr(), IntegerAttr(),
        IntegerAttr(), IntegerAttr(), IntegerAttr(), IntegerAttr());
    Block *body = new Block();
    program.getBody().push_back(body);
    OpBuilder pb = OpBuilder::atBlockEnd(body);
    auto unit = [&](StringRef name, plan_ir::UnitKind kind, IntegerAttr chunk) {
      auto u = plan_ir::UnitOp::create(pb, fn.getLoc(), pb.getStringAttr(name),
                                       plan_ir::UnitKindAttr::get(pb.getContext(), kind), chunk);
      u.getBody().push_back(new Block());
      return u;
    };
    // One forward and one backward unit per chunk ("forward", or "forward.K").
    SmallVector<plan_ir::UnitOp> fwds;
    for (size_t c = 0; c < chunks.size(); ++c) {
      std::string suffix = chunks.size() == 1 ? "" : "." + std::to_string(c);
      IntegerAttr chunk = chunks.size() == 1 ? IntegerAttr() : pb.getI64IntegerAttr(c);
      fwds.push_back(unit("forward" + suffix, plan_ir::UnitKind::forward, chunk));
      unit("backward" + suffix, plan_ir::UnitKind::backward, chunk);
    }
    unit("update", plan_ir::UnitKind::update, IntegerAttr());

    int64_t temps = 0, losses = 0;
    for (auto [c, chunkOp] : llvm::enumerate(chunks)) {
      func::FuncOp chunkFn = chunkOp;
      Lowering lowering{.program = program,
                        .b = OpBuilder::atBlockEnd(&fwds[c].getBody().front()),
                        .temps = temps,
                        .tp = static_cast<int64_t>(mesh.getTp()),
                        .ep = static_cast<int64_t>(mesh.getEp()),
                        .stage = stage,
                        .needsLoss = !isStage};
      for (auto [i, arg] : llvm::enumerate(chunkFn.getArguments())) {
        // @forward's are (tokens, targets); a stage's say which they are.
        auto role = chunkFn.getArgAttrOfType<StringAttr>(i, graph::kInputAttrName);
        StringRef io = role ? role.getValue() : (i == 0 ? "tokens" : "targets");
        auto type = cast<RankedTensorType>(arg.getType());
        lowering.buffers[arg] = createBuffer(program, chunkFn.getLoc(), io,
                                             MemRefType::get(type.getShape(), type.getElementType()),
                                             io);
      }
      for (Operation &op : chunkFn.getBody().front())
        if (failed(lowering.lower(op, microbatches)))
          return failure();
      temps = lowering.temps;
      losses += chunkFn.getNumResults();
    }
    if (losses > 1)
      return module.emitError() << "stage " << stage << " computes loss terms in " << losses
                                << " of its virtual chunks; one chunk per stage may (several "
                                   "chunks with MoE auxiliary losses are not supported)";
    return program;
  }
};

} // namespace
} // namespace heiretsu
