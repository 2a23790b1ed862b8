//===- ShardPropagation.cpp - Megatron-style tp shardings on the graph ----===//
//
// One forward walk over @forward (see Passes.td). Each value's layout over tp is
// one of: whole (every tp rank holds all of it), split on its last dimension, or
// a partial sum. Parameters get theirs from their uses.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_SHARDPROPAGATIONPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

constexpr int32_t kTp = static_cast<int32_t>(dist::Axis::tp);

// SplitSeq: split along the sequence (dimension 1 of [batch, seq, ...]); only
// with sequence parallelism.
enum class Layout { Whole, SplitLast, Partial, SplitSeq };

struct Propagation {
  int64_t tp;
  bool sequenceParallel;
  MLIRContext *ctx;
  DenseMap<Value, Layout> layouts{};
  // Parameters: which dimension is split (-1: none), as their first use asked.
  DenseMap<Value, int64_t> paramDims{};

  Layout layout(Value v) { return layouts.lookup(v); } // block arguments: Whole
  /// The layout a consumer sees: partial sums are reduced first (collective
  /// insertion), to whole values or, with sequence parallelism, split ones.
  Layout seen(Value v) {
    Layout l = layout(v);
    if (l == Layout::Partial)
      return sequenceParallel ? Layout::SplitSeq : Layout::Whole;
    return l;
  }

  static int64_t rank(Value v) { return cast<RankedTensorType>(v.getType()).getRank(); }
  static int64_t dimSize(Value v, int64_t d) {
    return cast<RankedTensorType>(v.getType()).getShape()[d];
  }

  dist::ShardingAttr attr(int64_t rank, int64_t splitDim, bool partial) {
    SmallVector<int32_t> dims(rank, -1);
    if (splitDim >= 0)
      dims[splitDim] = kTp;
    SmallVector<int32_t> parts;
    if (partial)
      parts.push_back(kTp);
    return dist::ShardingAttr::get(ctx, dims, parts);
  }

  /// Asks parameter `p` to be split along `dim` (-1: whole) by `user`.
  LogicalResult requireParam(Value p, int64_t dim, Operation *user, StringRef what) {
    auto param = p.getDefiningOp<graph::ParamOp>();
    if (!param)
      return user->emitError() << what << " must be a graph.param under tensor parallelism";
    if (dim >= 0 && dimSize(p, dim) % tp != 0)
      return user->emitError() << what << " '" << param.getName() << "' has "
                               << dimSize(p, dim) << " rows along its split dimension " << dim
                               << ", not divisible by tp = " << tp;
    auto [it, fresh] = paramDims.try_emplace(p, dim);
    if (!fresh && it->second != dim)
      return user->emitError() << "parameter '" << param.getName()
                               << "' is asked to be split along dimension " << dim
                               << " here but along " << it->second << " by an earlier use";
    return success();
  }

  /// Norms and residual adds work token by token: on whole values, or on the
  /// sequence-split ones of sequence parallelism.
  LogicalResult needTokens(Operation *op, Value v, StringRef what) {
    if (layout(v) == Layout::SplitLast)
      return op->emitError() << what << " is split over tp here but '" << op->getName()
                             << "' needs it whole (no all_gather is inserted for it)";
    return success();
  }

  LogicalResult visit(Operation &op) {
    Layout result = Layout::Whole;
    if (isa<graph::ParamOp, func::ReturnOp>(op)) {
      return success(); // parameters are annotated once their uses are known
    } else if (auto e = dyn_cast<graph::EmbeddingOp>(op)) {
      if (dimSize(e.getTable(), 0) % tp != 0)
        return op.emitError() << "the vocabulary (" << dimSize(e.getTable(), 0)
                              << " rows of the token table) is not divisible by tp = " << tp
                              << "; pad it in the spec with padded_vocab = "
                              << (dimSize(e.getTable(), 0) + 128 * tp - 1) / (128 * tp) * (128 * tp)
                              << " (a multiple of 128 x tp; padding rows are not classes)";
      if (failed(requireParam(e.getTable(), 0, &op, "the embedding table")))
        return failure();
      if (e.getPositions() && failed(requireParam(e.getPositions(), -1, &op, "positions")))
        return failure();
      result = Layout::Partial; // vocabulary-parallel: each rank adds its block's rows
      if (sequenceParallel && dimSize(e.getResult(), 1) % tp != 0)
        return op.emitError() << "seq = " << dimSize(e.getResult(), 1)
                              << " is not divisible by tp = " << tp
                              << " (sequence parallelism splits the sequence)";
    } else if (auto l = dyn_cast<graph::LinearOp>(op)) {
      bool row = layout(l.getInput()) == Layout::SplitLast;
      if (failed(requireParam(l.getWeight(), row ? 1 : 0, &op, "the linear weight")))
        return failure();
      if (l.getBias() && failed(requireParam(l.getBias(), row ? -1 : 0, &op, "the linear bias")))
        return failure();
      result = row ? Layout::Partial : Layout::SplitLast;
    } else if (auto n = dyn_cast<graph::LayerNormOp>(op)) {
      if (failed(needTokens(&op, n.getInput(), "the norm's input")) ||
          failed(requireParam(n.getWeight(), -1, &op, "the norm weight")) ||
          failed(requireParam(n.getBias(), -1, &op, "the norm bias")))
        return failure();
      result = seen(n.getInput());
    } else if (auto n = dyn_cast<graph::RMSNormOp>(op)) {
      if (failed(needTokens(&op, n.getInput(), "the norm's input")) ||
          failed(requireParam(n.getWeight(), -1, &op, "the norm weight")))
        return failure();
      result = seen(n.getInput());
    } else if (auto a = dyn_cast<graph::AttentionOp>(op)) {
      for (Value v : {a.getQuery(), a.getKey(), a.getValue()})
        if (layout(v) != Layout::SplitLast)
          return op.emitError("attention under tensor parallelism needs q, k and v from "
                              "column-parallel projections (split over heads)");
      if (a.getHeads() % tp != 0)
        return op.emitError() << "heads = " << a.getHeads() << " is not divisible by tp = " << tp;
      if (a.getKvHeads() % tp != 0)
        return op.emitError() << "kv_heads = " << a.getKvHeads()
                              << " is not divisible by tp = " << tp;
      result = Layout::SplitLast;
    } else if (auto g = dyn_cast<graph::GeluOp>(op)) {
      result = layout(g.getInput()) == Layout::SplitLast ? Layout::SplitLast : Layout::Whole;
    } else if (isa<graph::SwigluOp, graph::AddOp>(op)) {
      Layout lhs = seen(op.getOperand(0)), rhs = seen(op.getOperand(1));
      if (lhs != rhs)
        return op.emitError() << "'" << op.getName()
                              << "' of operands with different layouts over tp";
      result = lhs;
    } else if (auto ce = dyn_cast<graph::CrossEntropyOp>(op)) {
      if (seen(ce.getLogits()) == Layout::SplitSeq)
        return op.emitError("cross_entropy of logits split along the sequence");
      if (layout(ce.getLogits()) == Layout::SplitLast &&
          dimSize(ce.getLogits(), rank(ce.getLogits()) - 1) % tp != 0)
        return op.emitError() << "the vocabulary (" << dimSize(ce.getLogits(), rank(ce.getLogits()) - 1)
                              << ") is not divisible by tp = " << tp;
    } else if (auto m = dyn_cast<graph::MoEOp>(op)) {
      // Expert tensor parallelism: like a dense MLP, each tp rank holds a block of
      // every expert's hidden units (w_in, w_gate by rows, w_out by columns) and
      // its output is a partial sum; the router is whole, the routing repeated on
      // every tp rank.
      if (failed(needTokens(&op, m.getInput(), "the moe's input")) ||
          failed(requireParam(m.getRouter(), -1, &op, "the moe router")) ||
          failed(requireParam(m.getWIn(), 1, &op, "the expert weight w_in")) ||
          failed(requireParam(m.getWOut(), 2, &op, "the expert weight w_out")) ||
          (m.getWGate() && failed(requireParam(m.getWGate(), 1, &op, "the expert weight w_gate"))))
        return failure();
      result = Layout::Partial;
    } else {
      return op.emitError("no sharding rule for '") << op.getName() << "'";
    }
    Value v = op.getResult(0);
    layouts[v] = result;
    int64_t split = result == Layout::SplitLast ? rank(v) - 1
                    : result == Layout::SplitSeq ? 1
                                                 : -1;
    op.setAttr(dist::kShardingAttrName, attr(rank(v), split, result == Layout::Partial));
    return success();
  }
};

struct ShardPropagationPass : impl::ShardPropagationPassBase<ShardPropagationPass> {
  using ShardPropagationPassBase::ShardPropagationPassBase;

  void runOnOperation() override {
    std::optional<GraphInputs> in = requireGraphInputs(getOperation(), getArgument());
    if (!in)
      return signalPassFailure();
    const int64_t tp = in->mesh.getTp();
    if (tp == 1)
      return; // nothing to split
    Block &body = in->forward.getBody().front();
    for (Operation &op : body)
      if (op.hasAttr(dist::kShardingAttrName)) {
        op.emitError("already has a dist.sharding: shardings were already propagated");
        return signalPassFailure();
      }
    Propagation prop{.tp = tp, .sequenceParallel = sequenceParallel, .ctx = &getContext()};
    for (Operation &op : body)
      if (failed(prop.visit(op)))
        return signalPassFailure();
    for (auto param : body.getOps<graph::ParamOp>()) {
      auto it = prop.paramDims.find(param.getResult());
      int64_t dim = it == prop.paramDims.end() ? -1 : it->second;
      param->setAttr(dist::kShardingAttrName,
                     prop.attr(Propagation::rank(param.getResult()), dim, false));
    }
  }
};

} // namespace
} // namespace heiretsu
