//===- MoeDispatch.cpp - graph.moe in steps, with the ep exchange ---------===//
//
// See Passes.td. Each graph.moe becomes route -> dispatch -> (all_to_all over ep)
// -> experts -> (all_to_all back) -> combine; the expert weights' dimension 0 is
// split over ep. Under tensor parallelism the experts' hidden dimension is split
// over tp (heiretsu-shard-propagation), so the experts' output, and everything
// after it up to the moe's all_reduce, is a partial sum over tp.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Passes.h"
#include "compiler/transforms/PlanUtils.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;

namespace heiretsu {
#define GEN_PASS_DEF_MOEDISPATCHPASS
#include "compiler/transforms/Passes.h.inc"

namespace {

constexpr int32_t kEp = static_cast<int32_t>(dist::Axis::ep);
constexpr int32_t kTp = static_cast<int32_t>(dist::Axis::tp);

/// Splits dimension 0 of parameter `p` over ep, keeping its other dimensions' axes.
void splitOverEp(Value p) {
  Operation *def = p.getDefiningOp();
  auto rank = cast<RankedTensorType>(p.getType()).getRank();
  SmallVector<int32_t> dims(rank, -1);
  SmallVector<int32_t> partial;
  if (auto s = def->getAttrOfType<dist::ShardingAttr>(dist::kShardingAttrName)) {
    dims.assign(s.getDims().begin(), s.getDims().end());
    partial.assign(s.getPartial().begin(), s.getPartial().end());
  }
  dims[0] = kEp;
  def->setAttr(dist::kShardingAttrName, dist::ShardingAttr::get(p.getContext(), dims, partial));
}

LogicalResult lowerMoe(graph::MoEOp moe, int64_t ep, int64_t tp) {
  MLIRContext *ctx = moe.getContext();
  Location loc = moe.getLoc();
  auto x = cast<RankedTensorType>(moe.getInput().getType());
  const int64_t experts = moe.getExperts(), k = moe.getTopK();
  const int64_t batch = x.getDimSize(0), seq = x.getDimSize(1), d = x.getDimSize(2);
  if (experts % ep != 0)
    return moe.emitError() << "experts = " << experts << " is not divisible by ep = " << ep
                           << " (each ep rank holds experts / ep of them): choose ep among the "
                              "divisors of "
                           << experts;
  for (Value w : {moe.getWIn(), moe.getWOut(), moe.getWGate()})
    if (w && !w.getDefiningOp<graph::ParamOp>())
      return moe.emitError("the expert weights must be graph.param values to be split over ep");
  const int64_t capacity = moe.slotsPerSequence();
  OpBuilder b(moe);
  auto copyLayer = [&](Operation *op) {
    if (Attribute layer = moe->getAttr(graph::kLayerAttrName))
      op->setAttr(graph::kLayerAttrName, layer);
    return op;
  };
  // Past the experts, values are partial sums over tp when the hidden size is split.
  auto partial = [&](Operation *op) {
    if (tp > 1) {
      auto rank = cast<RankedTensorType>(op->getResult(0).getType()).getRank();
      op->setAttr(dist::kShardingAttrName,
                  dist::ShardingAttr::get(ctx, SmallVector<int32_t>(rank, -1), {kTp}));
    }
    return op;
  };
  auto slotsType = [&](Type element) {
    return RankedTensorType::get({batch, seq, k}, element);
  };
  auto route = graph::MoERouteOp::create(
      b, loc, slotsType(b.getI32Type()), slotsType(b.getI32Type()), slotsType(b.getF32Type()),
      RankedTensorType::get({}, b.getF32Type()), moe.getInput(), moe.getRouter(),
      moe.getExpertsAttr(), moe.getTopKAttr(), b.getI64IntegerAttr(capacity),
      moe.getAuxCoefAttr(), moe.getZCoefAttr());
  copyLayer(route);
  auto bufType = RankedTensorType::get({experts, batch * capacity, d}, b.getF32Type());
  Value buf = copyLayer(graph::MoEDispatchOp::create(b, loc, bufType, moe.getInput(),
                                                     route.getChoice(), route.getPos()))
                  ->getResult(0);
  auto meshRef = FlatSymbolRefAttr::get(ctx, "world");
  auto epAttr = dist::AxisAttr::get(ctx, dist::Axis::ep);
  if (ep > 1) {
    auto recvType =
        RankedTensorType::get({experts / ep, ep * batch * capacity, d}, b.getF32Type());
    buf = copyLayer(dist::AllToAllOp::create(b, loc, recvType, buf, meshRef, epAttr,
                                             b.getI64IntegerAttr(0), b.getI64IntegerAttr(1)))
              ->getResult(0);
  }
  Value out = partial(copyLayer(graph::MoEExpertsOp::create(b, loc, buf.getType(), buf,
                                                            moe.getWIn(), moe.getWOut(),
                                                            moe.getWGate(), moe.getActAttr())))
                  ->getResult(0);
  if (ep > 1)
    out = partial(copyLayer(dist::AllToAllOp::create(b, loc, bufType, out, meshRef, epAttr,
                                                     b.getI64IntegerAttr(1),
                                                     b.getI64IntegerAttr(0))))
              ->getResult(0);
  Operation *combine = copyLayer(graph::MoECombineOp::create(
      b, loc, moe.getResult().getType(), out, route.getChoice(), route.getPos(),
      route.getWeight()));
  if (Attribute s = moe->getAttr(dist::kShardingAttrName))
    combine->setAttr(dist::kShardingAttrName, s);
  if (ep > 1)
    for (Value w : {moe.getWIn(), moe.getWOut(), moe.getWGate()})
      if (w)
        splitOverEp(w);
  moe.getResult().replaceAllUsesWith(combine->getResult(0));
  moe.getAuxLoss().replaceAllUsesWith(route.getAuxLoss());
  moe.erase();
  return success();
}

struct MoeDispatchPass : impl::MoeDispatchPassBase<MoeDispatchPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    dist::MeshOp mesh = requireMesh(module, getArgument());
    if (!mesh)
      return signalPassFailure();
    const int64_t ep = mesh.getEp(), tp = mesh.getTp();
    SmallVector<graph::MoEOp> moes;
    module.walk([&](graph::MoEOp op) { moes.push_back(op); });
    if (moes.empty() && ep > 1) {
      module.emitError() << "the mesh has ep = " << ep
                         << ", but the model has no moe layer: expert parallelism splits "
                            "experts (use --dp for data parallelism)";
      return signalPassFailure();
    }
    for (graph::MoEOp op : moes)
      if (failed(lowerMoe(op, ep, tp)))
        return signalPassFailure();
  }
};

} // namespace
} // namespace heiretsu
