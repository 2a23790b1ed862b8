//===- StageCuts.cpp - the layer stack cut into pipeline stages ----------===//
//
// See Passes.td. Every op of @forward gets a stage: the block's ops their layer's
// (the frontend's graph.layer), ops without a layer the latest stage among their
// operands' producers (collectives inserted inside a layer follow it), and ops
// with no such operand the first stage before the block and the last after it.
// Parameters are cloned into every stage that uses them (a tied embedding and head
// into the first and the last). A value used on a later stage is sent at the end of
// its stage and received at the start of each stage up to its user, in one order
// per boundary. The scalar loss terms (cross-entropy, MoE auxiliary losses) stay
// where they are computed: each stage returns the sum of its own, and the runtime
// sums the stages' losses.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

#include <limits>
#include <string>

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_STAGECUTSPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

int64_t numel(Type t) { return cast<RankedTensorType>(t).getNumElements(); }

/// Forward-plus-backward FLOPs per token of `op` (the cost model of Passes.td): six
/// per weight element of a GEMM, the attention's score and value products, and a
/// few per element of the embedding and the loss.
double costPerToken(Operation *op) {
  if (auto l = dyn_cast<graph::LinearOp>(op))
    return 6.0 * static_cast<double>(numel(l.getWeight().getType()));
  if (auto a = dyn_cast<graph::AttentionOp>(op)) {
    auto q = cast<RankedTensorType>(a.getQuery().getType());
    return 6.0 * static_cast<double>(q.getShape()[1] * q.getShape()[2]);
  }
  if (auto m = dyn_cast<graph::MoEOp>(op)) {
    double expert = static_cast<double>(numel(m.getWIn().getType()) + numel(m.getWOut().getType()) +
                                        (m.getWGate() ? numel(m.getWGate().getType()) : 0)) /
                    static_cast<double>(m.getExperts());
    return 6.0 * (static_cast<double>(numel(m.getRouter().getType())) +
                  static_cast<double>(m.getTopK()) * expert);
  }
  if (auto e = dyn_cast<graph::EmbeddingOp>(op))
    return 6.0 * static_cast<double>(cast<RankedTensorType>(e.getResult().getType()).getShape().back());
  if (auto c = dyn_cast<graph::CrossEntropyOp>(op))
    return 6.0 * static_cast<double>(cast<RankedTensorType>(c.getLogits().getType()).getShape().back());
  return 0.0;
}

/// Layers per stage minimizing the most expensive stage: contiguous runs of at
/// least one layer, the first stage also paying `pre` (the embedding) and the last
/// `post` (the final norm, the head, the loss).
std::vector<int64_t> balance(ArrayRef<double> layerCost, double pre, double post, int64_t pp) {
  const int64_t n = static_cast<int64_t>(layerCost.size());
  std::vector<double> prefix(n + 1, 0.0);
  for (int64_t i = 0; i < n; ++i)
    prefix[i + 1] = prefix[i] + layerCost[i];
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][i]: the smallest maximum over stages 0..s-1 holding layers [0, i).
  std::vector<std::vector<double>> best(pp + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<int64_t>> cut(pp + 1, std::vector<int64_t>(n + 1, -1));
  best[0][0] = 0;
  for (int64_t s = 1; s <= pp; ++s)
    for (int64_t i = s; i <= n - (pp - s); ++i)
      for (int64_t j = s - 1; j < i; ++j) {
        double stage = prefix[i] - prefix[j] + (s == 1 ? pre : 0) + (s == pp ? post : 0);
        double worst = std::max(best[s - 1][j], stage);
        if (worst < best[s][i]) { // strict: the earliest cut wins ties
          best[s][i] = worst;
          cut[s][i] = j;
        }
      }
  std::vector<int64_t> layers(pp);
  for (int64_t s = pp, i = n; s >= 1; --s) {
    int64_t j = cut[s][i];
    layers[s - 1] = i - j;
    i = j;
  }
  return layers;
}

struct StageCutsPass : impl::StageCutsPassBase<StageCutsPass> {
  using StageCutsPassBase::StageCutsPassBase;

  /// The layers of each stage: `stage-layers` if given, else balanced.
  /// `pp` here is the number of model chunks: the stages times virtual-stages.
  FailureOr<std::vector<int64_t>> layersPerStage(func::FuncOp forward, int64_t pp,
                                                 int64_t layers) {
    std::vector<int64_t> given;
    if (!stageLayers.empty()) {
      StringRef rest = stageLayers;
      while (!rest.empty()) {
        auto [item, tail] = rest.split(',');
        int64_t n = 0;
        if (item.trim().getAsInteger(10, n) || n < 1) {
          forward.emitError() << "stage-layers '" << stageLayers << "': '" << item
                              << "' is not a layer count >= 1";
          return failure();
        }
        given.push_back(n);
        rest = tail;
      }
      int64_t sum = 0;
      for (int64_t n : given)
        sum += n;
      if (static_cast<int64_t>(given.size()) != pp || sum != layers) {
        forward.emitError() << "stage-layers '" << stageLayers << "' gives " << given.size()
                            << " stages of " << sum << " layers; the mesh has "
                            << (virtualStages > 1 ? "pp x virtual-stages = " : "pp = ") << pp
                            << " and the model " << layers << " layers";
        return failure();
      }
      return given;
    }
    std::vector<double> cost(layers, 0.0);
    double pre = 0, post = 0;
    bool seen = false;
    for (Operation &op : forward.getBody().front()) {
      if (auto l = op.getAttrOfType<IntegerAttr>(graph::kLayerAttrName)) {
        seen = true;
        cost[l.getInt()] += costPerToken(&op);
      } else {
        (seen ? post : pre) += costPerToken(&op);
      }
    }
    return balance(cost, pre, post, pp);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::optional<GraphInputs> in = requireGraphInputs(module, getArgument());
    if (!in)
      return signalPassFailure();
    auto [forward, mesh] = *in;
    const int64_t stages = static_cast<int64_t>(mesh.getPp());
    const int64_t chunksPerStage = virtualStages;
    if (chunksPerStage < 1 || (chunksPerStage > 1 && stages == 1)) {
      module.emitError() << "virtual-stages " << chunksPerStage
                         << " needs pp > 1 and is >= 1 (the model chunks of each stage)";
      return signalPassFailure();
    }
    // The model's chunks: chunk c runs on stage c mod pp (interleaved placement:
    // stage r holds chunks r, r + pp, ...), as local chunk c / pp.
    const int64_t pp = stages * chunksPerStage;
    auto stageOfChunk = [&](int64_t c) { return c % stages; };
    if (stages == 1) {
      if (!stageLayers.empty()) {
        module.emitError() << "stage-layers '" << stageLayers << "' needs pp > 1";
        return signalPassFailure();
      }
      return; // one stage: @forward is the program
    }
    auto model = module->getAttrOfType<DictionaryAttr>(graph::kModelAttrName);
    auto layersAttr = model ? model.getAs<IntegerAttr>("layers") : nullptr;
    if (!layersAttr || forward.getNumArguments() != 2) {
      module.emitError("expected a graph.model with 'layers' and @forward(tokens, targets)");
      return signalPassFailure();
    }
    const int64_t layers = layersAttr.getInt();
    if (pp > layers) {
      module.emitError() << (chunksPerStage > 1 ? "pp x virtual-stages = " : "pp = ") << pp
                         << " is more pipeline stages than the model's " << layers << " layers";
      return signalPassFailure();
    }
    FailureOr<std::vector<int64_t>> perStage = layersPerStage(forward, pp, layers);
    if (failed(perStage))
      return signalPassFailure();
    std::vector<int64_t> stageOfLayer;
    for (int64_t s = 0; s < pp; ++s)
      for (int64_t i = 0; i < (*perStage)[s]; ++i)
        stageOfLayer.push_back(s);

    Block &body = forward.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    // The loss: a sum of scalar terms; each stage keeps its own.
    SmallVector<Value> terms;
    llvm::SmallPtrSet<Operation *, 8> lossAdds;
    std::function<void(Value)> collect = [&](Value v) {
      auto add = v.getDefiningOp<graph::AddOp>();
      if (add && cast<RankedTensorType>(v.getType()).getRank() == 0) {
        lossAdds.insert(add);
        collect(add.getLhs());
        collect(add.getRhs());
        return;
      }
      terms.push_back(v);
    };
    if (ret.getNumOperands() != 1) {
      ret.emitError("@forward must return the scalar loss");
      return signalPassFailure();
    }
    collect(ret.getOperand(0));

    Value tokens = forward.getArgument(0), targets = forward.getArgument(1);
    DenseMap<Operation *, int64_t> stageOf;
    bool seenLayer = false;
    for (Operation &op : body) {
      if (isa<graph::ParamOp, func::ReturnOp>(op) || lossAdds.contains(&op))
        continue;
      int64_t s = -1;
      if (auto l = op.getAttrOfType<IntegerAttr>(graph::kLayerAttrName)) {
        s = stageOfLayer[l.getInt()];
        seenLayer = true;
      } else {
        for (Value v : op.getOperands())
          if (Operation *def = v.getDefiningOp(); def && stageOf.count(def))
            s = std::max(s, stageOf[def]);
        if (s < 0)
          s = seenLayer ? pp - 1 : 0;
      }
      stageOf[&op] = s;
    }
    auto stageOfValue = [&](Value v) -> int64_t {
      Operation *def = v.getDefiningOp();
      return def && stageOf.count(def) ? stageOf[def] : -1;
    };

    // What each stage reads: the inputs, and the values sent over each boundary
    // (boundary k: from stage k to k + 1), in first-use order.
    std::vector<bool> usesTokens(pp, false), usesTargets(pp, false);
    std::vector<llvm::SetVector<Value>> boundary(pp);
    for (Operation &op : body) {
      auto it = stageOf.find(&op);
      if (it == stageOf.end())
        continue;
      int64_t b = it->second;
      for (Value v : op.getOperands()) {
        if (v == tokens)
          usesTokens[b] = true;
        if (v == targets)
          usesTargets[b] = true;
        int64_t a = stageOfValue(v);
        if (a < 0 || a == b)
          continue;
        if (a > b) {
          op.emitError() << "stage cut: this op of " << (chunksPerStage > 1 ? "chunk " : "stage ") << b
                         << " reads a value of the later " << (chunksPerStage > 1 ? "chunk " : "stage ") << a
                         << " (a value may only flow to later stages)";
          return signalPassFailure();
        }
        for (int64_t k = a; k < b; ++k)
          boundary[k].insert(v);
      }
    }
    std::vector<SmallVector<Value>> lossOf(pp);
    for (Value t : terms) {
      int64_t s = stageOfValue(t);
      if (s < 0) {
        ret.emitError("a loss term that no op computes");
        return signalPassFailure();
      }
      lossOf[s].push_back(t);
    }

    MLIRContext *ctx = module.getContext();
    auto meshRef = FlatSymbolRefAttr::get(ctx, "world");
    auto ppAxis = dist::AxisAttr::get(ctx, dist::Axis::pp);
    OpBuilder mb = OpBuilder::atBlockEnd(module.getBody());
    for (int64_t s = 0; s < pp; ++s) {
      SmallVector<Type> args;
      SmallVector<StringRef> roles;
      if (usesTokens[s]) {
        args.push_back(tokens.getType());
        roles.push_back("tokens");
      }
      if (usesTargets[s]) {
        args.push_back(targets.getType());
        roles.push_back("targets");
      }
      SmallVector<Type> results;
      if (!lossOf[s].empty())
        results.push_back(ret.getOperand(0).getType());
      std::string name = "stage_" + std::to_string(stageOfChunk(s));
      if (chunksPerStage > 1)
        name += "_chunk_" + std::to_string(s / stages);
      auto fn = func::FuncOp::create(mb, forward.getLoc(), name,
                                     FunctionType::get(ctx, args, results));
      Block *entry = fn.addEntryBlock();
      IRMapping map;
      for (auto [i, role] : llvm::enumerate(roles)) {
        fn.setArgAttr(i, graph::kInputAttrName, mb.getStringAttr(role));
        map.map(role == "tokens" ? tokens : targets, entry->getArgument(i));
      }
      OpBuilder b = OpBuilder::atBlockEnd(entry);
      Location loc = forward.getLoc();
      if (s > 0)
        for (Value v : boundary[s - 1]) {
          auto recv = dist::RecvOp::create(b, v.getLoc(), v.getType(), meshRef, ppAxis,
                                           b.getI64IntegerAttr(stageOfChunk(s - 1) -
                                                               stageOfChunk(s)));
          if (Attribute sh = v.getDefiningOp()->getAttr(dist::kShardingAttrName))
            recv->setAttr(dist::kShardingAttrName, sh);
          map.map(v, recv.getResult());
        }
      for (Operation &op : body) {
        auto it = stageOf.find(&op);
        if (it == stageOf.end() || it->second != s)
          continue;
        for (Value v : op.getOperands())
          if (auto p = v.getDefiningOp<graph::ParamOp>(); p && !map.contains(v))
            b.clone(*p, map);
        b.clone(op, map);
      }
      if (s + 1 < pp)
        for (Value v : boundary[s])
          dist::SendOp::create(b, v.getLoc(), map.lookup(v), meshRef, ppAxis,
                               b.getI64IntegerAttr(stageOfChunk(s + 1) - stageOfChunk(s)));
      SmallVector<Value> loss;
      if (!lossOf[s].empty()) {
        Value sum = map.lookup(lossOf[s].front());
        for (Value t : ArrayRef(lossOf[s]).drop_front())
          sum = graph::AddOp::create(b, loc, sum, map.lookup(t));
        loss.push_back(sum);
      }
      func::ReturnOp::create(b, loc, loss);
    }
    forward.erase();
  }
};

} // namespace
} // namespace heiretsu
