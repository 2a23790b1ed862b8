//===- GraphDialect.cpp - graph dialect registration and verifiers --------===//
//
// Every verifier below cites the constraint number from the op's description in
// GraphOps.td; the `_invalid` lit tests are written against these messages.
//
//===----------------------------------------------------------------------===//

#include "dialects/graph/GraphDialect.h"


#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>
#include <map>

using namespace mlir;
using namespace heiretsu::graph;

#include "dialects/graph/GraphDialect.cpp.inc"
#include "dialects/graph/GraphEnums.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/graph/GraphOps.cpp.inc"

void GraphDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/graph/GraphOps.cpp.inc"
      >();
}

/// `graph.model` on a module: a dictionary with a string `name`; every
/// `graph.param` of one function has a distinct name (pipeline stages' functions
/// may each hold the same parameter: a tied embedding and head). `graph.layer`
/// on an op: a layer index >= 0.
LogicalResult GraphDialect::verifyOperationAttribute(Operation *op,
                                                     NamedAttribute attr) {
  if (attr.getName() == kLayerAttrName) {
    auto layer = dyn_cast<IntegerAttr>(attr.getValue());
    if (!layer || layer.getInt() < 0)
      return op->emitError() << "'" << kLayerAttrName << "' must be a layer index >= 0";
    return success();
  }
  if (attr.getName() != kModelAttrName)
    return op->emitError() << "unknown graph dialect attribute '"
                           << attr.getName() << "'";
  if (!isa<ModuleOp>(op))
    return op->emitError() << "'" << kModelAttrName
                           << "' is only valid on a module";
  auto dict = dyn_cast<DictionaryAttr>(attr.getValue());
  if (!dict || !isa_and_nonnull<StringAttr>(dict.get("name")))
    return op->emitError() << "'" << kModelAttrName
                           << "' must be a dictionary with a string 'name'";
  std::map<std::pair<Operation *, std::string>, ParamOp> seen;
  WalkResult result = op->walk([&](ParamOp param) {
    auto [it, inserted] =
        seen.try_emplace({param->getParentOp(), param.getName().str()}, param);
    if (inserted)
      return WalkResult::advance();
    InFlightDiagnostic diag = param.emitOpError()
                              << "duplicate parameter name '"
                              << param.getName() << "'";
    diag.attachNote(it->second.getLoc()) << "first defined here";
    return WalkResult::interrupt();
  });
  return failure(result.wasInterrupted());
}

/// `graph.input` on a function argument (a pipeline stage's, or a decode
/// program's): "tokens", "targets" or "position".
LogicalResult GraphDialect::verifyRegionArgAttribute(Operation *op, unsigned, unsigned,
                                                     NamedAttribute attr) {
  auto role = dyn_cast<StringAttr>(attr.getValue());
  if (attr.getName() != kInputAttrName)
    return op->emitError() << "unknown graph dialect argument attribute '" << attr.getName()
                           << "'";
  if (!role || (role.getValue() != "tokens" && role.getValue() != "targets" &&
                role.getValue() != "position"))
    return op->emitError() << "'" << kInputAttrName
                           << "' must be \"tokens\", \"targets\" or \"position\"";
  return success();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

static std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i)
      s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

static bool positiveFinite(double x) { return std::isfinite(x) && x > 0; }

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  StringRef name = getName();
  // param_c1
  if (name.empty())
    return emitOpError("(C1) name must not be empty");
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'))
      return emitOpError("(C1) name '")
             << name << "' may contain only letters, digits, '_' and '.'";
  // param_c2
  for (int64_t d : tensorType(getResult()).getShape())
    if (d <= 0)
      return emitOpError("(C2) every dimension must be positive, got ")
             << shapeStr(tensorType(getResult()).getShape());
  // param_c3
  bool normal = getInit() == InitKind::normal;
  if (normal != getStd().has_value())
    return emitOpError("(C3) 'std' is required for init 'normal' and only for it");
  if (normal && !positiveFinite(getStd()->convertToDouble()))
    return emitOpError("(C3) std must be finite and > 0, got ")
           << getStd()->convertToDouble();
  return success();
}

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  auto table = tensorType(getTable()), ids = tensorType(getIds());
  auto result = tensorType(getResult());
  if (table.getRank() != 2 || ids.getRank() != 2)
    return emitOpError("(C1) expects table [V, D] and ids [B, T], got ")
           << shapeStr(table.getShape()) << " and " << shapeStr(ids.getShape());
  SmallVector<int64_t> expected = {ids.getDimSize(0), ids.getDimSize(1),
                                   table.getDimSize(1)};
  if (result.getShape() != ArrayRef<int64_t>(expected))
    return emitOpError("(C2) result must be ")
           << shapeStr(expected) << ", got " << shapeStr(result.getShape());
  if (Value pos = getPositions()) {
    auto p = tensorType(pos);
    if (p.getRank() != 2 || p.getDimSize(1) != table.getDimSize(1) ||
        p.getDimSize(0) < ids.getDimSize(1))
      return emitOpError("(C3) positions must be [C, ")
             << table.getDimSize(1) << "] with C >= " << ids.getDimSize(1)
             << ", got " << shapeStr(p.getShape());
  }
  if (Value off = getOffset()) {
    if (tensorType(off).getShape() != ArrayRef<int64_t>{1} || !getPositions())
      return emitOpError("(C4) offset must be [1] and needs positions, got ")
             << shapeStr(tensorType(off).getShape())
             << (getPositions() ? "" : " without positions");
  }
  return success();
}

//===----------------------------------------------------------------------===//
// LinearOp
//===----------------------------------------------------------------------===//

LogicalResult LinearOp::verify() {
  auto in = tensorType(getInput()), w = tensorType(getWeight());
  auto result = tensorType(getResult());
  if (in.getRank() < 2)
    return emitOpError("(C1) input must have rank >= 2, got ")
           << shapeStr(in.getShape());
  int64_t k = in.getShape().back();
  if (w.getRank() != 2 || w.getDimSize(1) != k)
    return emitOpError("(C2) weight must be [N, ")
           << k << "], got " << shapeStr(w.getShape());
  int64_t n = w.getDimSize(0);
  if (Value b = getBias()) {
    auto bt = tensorType(b);
    if (bt.getRank() != 1 || bt.getDimSize(0) != n)
      return emitOpError("(C3) bias must be [")
             << n << "], got " << shapeStr(bt.getShape());
  }
  SmallVector<int64_t> expected(in.getShape());
  expected.back() = n;
  if (result.getShape() != ArrayRef<int64_t>(expected))
    return emitOpError("(C4) result must be ")
           << shapeStr(expected) << ", got " << shapeStr(result.getShape());
  return success();
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

/// A norm's checks: its weight vectors (named) have the input's last dimension
/// (C1), eps is finite and > 0 (C2).
static LogicalResult verifyNorm(Operation *op, Value input,
                                ArrayRef<std::pair<Value, StringRef>> vectors,
                                const APFloat &eps) {
  int64_t d = tensorType(input).getShape().back();
  for (auto [v, what] : vectors) {
    auto t = tensorType(v);
    if (t.getRank() != 1 || t.getDimSize(0) != d)
      return op->emitOpError("(C1) ")
             << what << " must be [" << d << "], got " << shapeStr(t.getShape());
  }
  if (!positiveFinite(eps.convertToDouble()))
    return op->emitOpError("(C2) eps must be finite and > 0, got ")
           << eps.convertToDouble();
  return success();
}

LogicalResult LayerNormOp::verify() {
  return verifyNorm(*this, getInput(), {{getWeight(), "weight"}, {getBias(), "bias"}},
                    getEps());
}

LogicalResult RMSNormOp::verify() {
  return verifyNorm(*this, getInput(), {{getWeight(), "weight"}}, getEps());
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::verify() {
  int64_t heads = getHeads(), kvHeads = getKvHeads();
  // attention_c2 first: C1 divides by these.
  if (heads < 1 || kvHeads < 1 || heads % kvHeads != 0)
    return emitOpError("(C2) kv_heads (")
           << kvHeads << ") must be >= 1 and divide heads (" << heads << ")";
  auto q = tensorType(getQuery()), k = tensorType(getKey());
  if (q.getRank() != 3 || k.getRank() != 3)
    return emitOpError("(C1) query and key must be [B, T, C], got ")
           << shapeStr(q.getShape()) << " and " << shapeStr(k.getShape());
  if (q.getDimSize(0) != k.getDimSize(0) || q.getDimSize(1) != k.getDimSize(1))
    return emitOpError("(C1) query and key must agree on [B, T], got ")
           << shapeStr(q.getShape()) << " and " << shapeStr(k.getShape());
  int64_t qc = q.getDimSize(2), kc = k.getDimSize(2);
  if (qc % heads != 0)
    return emitOpError("(C1) query width ")
           << qc << " is not divisible by heads (" << heads << ")";
  int64_t hd = qc / heads;
  if (kc != kvHeads * hd)
    return emitOpError("(C1) key width must be kv_heads * head_dim = ")
           << kvHeads << " * " << hd << " = " << kvHeads * hd << ", got " << kc;
  if (std::optional<APFloat> theta = getRope()) {
    if (!positiveFinite(theta->convertToDouble()))
      return emitOpError("(C3) rope theta must be finite and > 0, got ")
             << theta->convertToDouble();
    if (hd % 2 != 0)
      return emitOpError("(C3) rope needs an even head dimension, got ") << hd;
  }
  if (static_cast<bool>(getPosition()) != getCache().has_value())
    return emitOpError("(C4) cache and position come together, got ")
           << (getCache() ? "a cache without a position" : "a position without a cache");
  if (Value pos = getPosition()) {
    if (tensorType(pos).getShape() != ArrayRef<int64_t>{1})
      return emitOpError("(C4) position must be [1], got ") << shapeStr(tensorType(pos).getShape());
    if (static_cast<int64_t>(*getCache()) < q.getDimSize(1))
      return emitOpError("(C4) cache (") << *getCache() << " positions) must hold the "
                                         << q.getDimSize(1) << " tokens of a run";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// MoEOp
//===----------------------------------------------------------------------===//

LogicalResult MoEOp::verify() {
  int64_t e = getExperts();
  auto in = tensorType(getInput());
  if (in.getRank() != 3)
    return emitOpError("(C1) input must be [B, T, D], got ") << shapeStr(in.getShape());
  int64_t d = in.getShape().back();
  auto router = tensorType(getRouter());
  if (e < 1 || router.getRank() != 2 || router.getDimSize(0) != e ||
      router.getDimSize(1) != d)
    return emitOpError("(C1) router must be [experts, D] = [")
           << e << ", " << d << "], got " << shapeStr(router.getShape());
  auto wIn = tensorType(getWIn()), wOut = tensorType(getWOut());
  if (wIn.getRank() != 3 || wIn.getDimSize(0) != e || wIn.getDimSize(2) != d)
    return emitOpError("(C2) w_in must be [")
           << e << ", F, " << d << "], got " << shapeStr(wIn.getShape());
  int64_t f = wIn.getDimSize(1);
  SmallVector<int64_t> outShape = {e, d, f};
  if (wOut.getShape() != ArrayRef<int64_t>(outShape))
    return emitOpError("(C2) w_out must be ")
           << shapeStr(outShape) << ", got " << shapeStr(wOut.getShape());
  bool swiglu = getAct() == Activation::swiglu;
  if (swiglu != static_cast<bool>(getWGate()))
    return emitOpError("(C3) w_gate is required for act = swiglu and only for it");
  if (Value g = getWGate())
    if (tensorType(g).getShape() != wIn.getShape())
      return emitOpError("(C3) w_gate must be ")
             << shapeStr(wIn.getShape()) << ", got "
             << shapeStr(tensorType(g).getShape());
  if (getTopK() < 1 || getTopK() > e)
    return emitOpError("(C4) top_k must be in [1, ")
           << e << "], got " << getTopK();
  if (std::optional<APFloat> c = getCapacity(); c && !positiveFinite(c->convertToDouble()))
    return emitOpError("(C5) capacity must be finite and > 0, got ") << c->convertToDouble();
  for (auto [name, v] : {std::pair<StringRef, double>{"aux_coef", getAuxCoef().convertToDouble()},
                         {"z_coef", getZCoef().convertToDouble()}})
    if (!std::isfinite(v) || v < 0)
      return emitOpError("(C5) ") << name << " must be finite and >= 0, got " << v;
  return success();
}

int64_t MoEOp::slotsPerSequence() {
  int64_t seq = tensorType(getInput()).getDimSize(1);
  std::optional<APFloat> c = getCapacity();
  if (!c)
    return seq; // dropless: a sequence sends an expert at most one slot per token
  double slots = std::ceil(c->convertToDouble() * static_cast<double>(seq * getTopK()) /
                           static_cast<double>(getExperts()));
  return std::clamp<int64_t>(static_cast<int64_t>(slots), 1, seq);
}

/// `[B, T, K]` of the given element type (the slots of moe_route's results).
static LogicalResult checkSlots(Operation *op, StringRef constraint, StringRef name, Value v,
                                ArrayRef<int64_t> tokens, int64_t k) {
  auto t = tensorType(v);
  if (t.getRank() != 3 || t.getDimSize(0) != tokens[0] || t.getDimSize(1) != tokens[1] ||
      (k > 0 && t.getDimSize(2) != k))
    return op->emitOpError() << "(" << constraint << ") " << name << " must be [" << tokens[0]
                             << ", " << tokens[1] << ", " << (k > 0 ? std::to_string(k) : "K")
                             << "], got " << shapeStr(t.getShape());
  return success();
}

LogicalResult MoERouteOp::verify() {
  auto in = tensorType(getInput());
  if (in.getRank() != 3)
    return emitOpError("(C1) input must be [B, T, D], got ") << shapeStr(in.getShape());
  int64_t e = getExperts(), d = in.getDimSize(2), seq = in.getDimSize(1);
  auto router = tensorType(getRouter());
  if (e < 1 || router.getRank() != 2 || router.getDimSize(0) != e || router.getDimSize(1) != d)
    return emitOpError("(C1) router must be [experts, D] = [")
           << e << ", " << d << "], got " << shapeStr(router.getShape());
  if (getTopK() < 1 || getTopK() > e)
    return emitOpError("(C2) top_k must be in [1, ") << e << "], got " << getTopK();
  if (getCapacity() < 1 || getCapacity() > seq)
    return emitOpError("(C2) capacity must be in [1, T = ")
           << seq << "] slots per sequence, got " << getCapacity();
  for (auto [name, v] : {std::pair<StringRef, Value>{"choice", getChoice()},
                         {"pos", getPos()},
                         {"weight", getWeight()}})
    if (failed(checkSlots(*this, "C3", name, v, in.getShape(), getTopK())))
      return failure();
  for (auto [name, v] : {std::pair<StringRef, double>{"aux_coef", getAuxCoef().convertToDouble()},
                         {"z_coef", getZCoef().convertToDouble()}})
    if (!std::isfinite(v) || v < 0)
      return emitOpError("(C4) ") << name << " must be finite and >= 0, got " << v;
  return success();
}

/// C1 and C2 of moe_dispatch and moe_combine: `tokens` is [B, T, D], `experts`
/// [E, B * C, D], and the slot tensors [B, T, K].
static LogicalResult checkExpertMajor(Operation *op, RankedTensorType tokens,
                                      RankedTensorType experts, ArrayRef<Value> slots) {
  if (tokens.getRank() != 3)
    return op->emitOpError("(C1) the tokens must be [B, T, D], got ")
           << shapeStr(tokens.getShape());
  int64_t k = tensorType(slots.front()).getRank() == 3 ? tensorType(slots.front()).getDimSize(2) : 0;
  for (Value v : slots)
    if (failed(checkSlots(op, "C1", "the slot tensors", v, tokens.getShape(), k)))
      return failure();
  int64_t b = tokens.getDimSize(0), seq = tokens.getDimSize(1), d = tokens.getDimSize(2);
  if (experts.getRank() != 3 || experts.getDimSize(0) < k || experts.getDimSize(2) != d ||
      experts.getDimSize(1) % b != 0 || experts.getDimSize(1) / b < 1 ||
      experts.getDimSize(1) / b > seq)
    return op->emitOpError("(C2) the expert-major buffer must be [E, B * C, D] with E >= ")
           << k << ", B = " << b << ", C in [1, " << seq << "], D = " << d << "; got "
           << shapeStr(experts.getShape());
  return success();
}

LogicalResult MoEDispatchOp::verify() {
  return checkExpertMajor(*this, tensorType(getInput()), tensorType(getResult()),
                          {getChoice(), getPos()});
}

LogicalResult MoECombineOp::verify() {
  return checkExpertMajor(*this, tensorType(getResult()), tensorType(getInput()),
                          {getChoice(), getPos(), getWeight()});
}

LogicalResult MoEExpertsOp::verify() {
  auto in = tensorType(getInput());
  if (in.getRank() != 3)
    return emitOpError("(C1) input must be [G, N, D], got ") << shapeStr(in.getShape());
  int64_t g = in.getDimSize(0), d = in.getDimSize(2);
  auto wIn = tensorType(getWIn()), wOut = tensorType(getWOut());
  if (wIn.getRank() != 3 || wIn.getDimSize(0) % g != 0 || wIn.getDimSize(2) != d)
    return emitOpError("(C1) w_in must be [E, F, ")
           << d << "] with E a multiple of G = " << g << ", got " << shapeStr(wIn.getShape());
  SmallVector<int64_t> outShape = {wIn.getDimSize(0), d, wIn.getDimSize(1)};
  if (wOut.getShape() != ArrayRef<int64_t>(outShape))
    return emitOpError("(C1) w_out must be ")
           << shapeStr(outShape) << ", got " << shapeStr(wOut.getShape());
  if ((getAct() == Activation::swiglu) != static_cast<bool>(getWGate()))
    return emitOpError("(C2) w_gate is required for act = swiglu and only for it");
  if (Value gate = getWGate(); gate && tensorType(gate).getShape() != wIn.getShape())
    return emitOpError("(C2) w_gate must be ")
           << shapeStr(wIn.getShape()) << ", got " << shapeStr(tensorType(gate).getShape());
  return success();
}

//===----------------------------------------------------------------------===//
// CrossEntropyOp
//===----------------------------------------------------------------------===//

LogicalResult CrossEntropyOp::verify() {
  auto logits = tensorType(getLogits()), targets = tensorType(getTargets());
  if (logits.getRank() < 2 ||
      targets.getShape() != logits.getShape().drop_back())
    return emitOpError("(C1) targets must be ")
           << shapeStr(logits.getShape().drop_back()) << ", got "
           << shapeStr(targets.getShape());
  if (std::optional<uint64_t> v = getValid();
      v && (*v < 1 || static_cast<int64_t>(*v) > logits.getShape().back()))
    return emitOpError("(C3) valid = ") << *v << " is outside [1, " << logits.getShape().back()
                                        << "]";
  return success();
}
