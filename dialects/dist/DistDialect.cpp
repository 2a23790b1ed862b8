//===- DistDialect.cpp - dist dialect registration and verifiers ----------===//
//
// Collectives check their shapes against the size of their mesh axis, which needs
// the mesh symbol: those rules live in verifySymbolUses, cited by constraint number.
//
//===----------------------------------------------------------------------===//

#include "dialects/dist/DistDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace heiretsu::dist;

#include "dialects/dist/DistDialect.cpp.inc"
#include "dialects/dist/DistEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/dist/DistAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/dist/DistOps.cpp.inc"

void DistDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/dist/DistAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/dist/DistOps.cpp.inc"
      >();
}

LogicalResult DistDialect::verifyOperationAttribute(Operation *op,
                                                    NamedAttribute attr) {
  if (attr.getName() != kShardingAttrName)
    return op->emitError() << "unknown dist dialect attribute '"
                           << attr.getName() << "'";
  auto sharding = dyn_cast<ShardingAttr>(attr.getValue());
  if (!sharding)
    return op->emitError() << "'" << kShardingAttrName
                           << "' must be a #dist.sharding";
  // It describes the first result; any others must be scalars, which are whole
  // (a moe's auxiliary loss).
  auto scalar = [](Value v) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    return t && t.getRank() == 0;
  };
  if (op->getNumResults() == 0 || !llvm::all_of(op->getResults().drop_front(), scalar))
    return op->emitError() << "'" << kShardingAttrName
                           << "' needs an op with one result, or one and scalars";
  auto type = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  if (!type || type.getRank() != static_cast<int64_t>(sharding.getDims().size()))
    return op->emitError() << "'" << kShardingAttrName << "' has "
                           << sharding.getDims().size()
                           << " dims but the result type is "
                           << op->getResult(0).getType();
  return success();
}

//===----------------------------------------------------------------------===//
// ShardingAttr: #dist.sharding<[tp, _], partial = [dp]>
//===----------------------------------------------------------------------===//

static ParseResult parseAxisOrNone(AsmParser &parser, int32_t &axis) {
  if (succeeded(parser.parseOptionalKeyword("_"))) {
    axis = -1;
    return success();
  }
  StringRef name;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseKeyword(&name))
    return failure();
  std::optional<Axis> a = symbolizeAxis(name);
  if (!a)
    return parser.emitError(loc) << "expected a mesh axis (dp, pp, tp, ep) or '_', got '"
                                 << name << "'";
  axis = static_cast<int32_t>(*a);
  return success();
}

Attribute ShardingAttr::parse(AsmParser &parser, Type) {
  SmallVector<int32_t> dims, partial;
  auto parseDim = [&]() -> ParseResult {
    int32_t axis;
    if (parseAxisOrNone(parser, axis))
      return failure();
    dims.push_back(axis);
    return success();
  };
  auto parsePartial = [&]() -> ParseResult {
    int32_t axis;
    SMLoc loc = parser.getCurrentLocation();
    if (parseAxisOrNone(parser, axis))
      return failure();
    if (axis < 0)
      return parser.emitError(loc, "'_' is not a partial axis");
    partial.push_back(axis);
    return success();
  };
  if (parser.parseLess() ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, parseDim))
    return {};
  if (succeeded(parser.parseOptionalComma())) {
    if (parser.parseKeyword("partial") || parser.parseEqual() ||
        parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, parsePartial))
      return {};
  }
  if (parser.parseGreater())
    return {};
  return ShardingAttr::getChecked(
      [&] { return parser.emitError(parser.getNameLoc()); },
      parser.getContext(), dims, partial);
}

void ShardingAttr::print(AsmPrinter &printer) const {
  auto axisName = [](int32_t a) -> StringRef {
    return a < 0 ? "_" : stringifyAxis(static_cast<Axis>(a));
  };
  printer << "<[";
  llvm::interleaveComma(getDims(), printer,
                        [&](int32_t a) { printer << axisName(a); });
  printer << "]";
  if (!getPartial().empty()) {
    printer << ", partial = [";
    llvm::interleaveComma(getPartial(), printer,
                          [&](int32_t a) { printer << axisName(a); });
    printer << "]";
  }
  printer << ">";
}

LogicalResult
ShardingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                     ArrayRef<int32_t> dims, ArrayRef<int32_t> partial) {
  bool used[4] = {false, false, false, false};
  for (ArrayRef<int32_t> list : {dims, partial})
    for (int32_t a : list) {
      if (a < -1 || a > 3)
        return emitError() << "invalid mesh axis index " << a;
      if (a < 0)
        continue;
      if (used[a]) // sharding_c1
        return emitError() << "(C1) mesh axis '"
                           << stringifyAxis(static_cast<Axis>(a))
                           << "' is used more than once";
      used[a] = true;
    }
  return success();
}

//===----------------------------------------------------------------------===//
// MeshOp
//===----------------------------------------------------------------------===//

int64_t MeshOp::axisSize(Axis axis) {
  switch (axis) {
  case Axis::dp:
    return getDp();
  case Axis::pp:
    return getPp();
  case Axis::tp:
    return getTp();
  case Axis::ep:
    return getEp();
  }
  llvm_unreachable("unknown mesh axis");
}

LogicalResult MeshOp::verify() {
  for (Axis a : {Axis::dp, Axis::pp, Axis::tp, Axis::ep})
    if (axisSize(a) < 1) // mesh_c1
      return emitOpError("(C1) axis ")
             << stringifyAxis(a) << " must have size >= 1, got " << axisSize(a);
  return success();
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

/// Resolves `mesh` (C1 of every collective) or reports it.
static MeshOp resolveMesh(Operation *op, FlatSymbolRefAttr ref,
                          SymbolTableCollection &tables) {
  auto mesh = tables.lookupNearestSymbolFrom<MeshOp>(op, ref);
  if (!mesh)
    op->emitOpError("(C1) '") << ref.getValue() << "' does not name a dist.mesh";
  return mesh;
}

static std::string typeStr(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << t;
  return s;
}

/// Checks `result` equals `input` with dimension `dim` scaled: multiplied by
/// `mul` and divided by `div` (exactly).
static LogicalResult verifyScaledDim(Operation *op, Value input, Value result,
                                     int64_t dim, int64_t mul, int64_t div,
                                     StringRef rule) {
  auto in = cast<RankedTensorType>(input.getType());
  auto out = cast<RankedTensorType>(result.getType());
  if (dim < 0 || dim >= in.getRank())
    return op->emitOpError("(C2) dim ")
           << dim << " is out of range for rank " << in.getRank();
  if (in.getDimSize(dim) % div != 0)
    return op->emitOpError(rule)
           << " dimension " << dim << " of " << typeStr(in)
           << " is not divisible by the axis size " << div;
  SmallVector<int64_t> expected(in.getShape());
  expected[dim] = expected[dim] / div * mul;
  auto expectedType = RankedTensorType::get(expected, in.getElementType());
  if (out != expectedType)
    return op->emitOpError(rule) << " result must be " << typeStr(expectedType)
                                 << ", got " << typeStr(out);
  return success();
}

LogicalResult AllReduceOp::verifySymbolUses(SymbolTableCollection &tables) {
  return success(resolveMesh(*this, getMeshAttr(), tables) != nullptr);
}

/// all_gather / reduce_scatter in the global view (input and result of one
/// logical type): `dim` must exist and divide by the axis size.
static LogicalResult verifyGlobalView(Operation *op, Value input, Value result, int64_t dim,
                                      int64_t n) {
  if (input.getType() != result.getType())
    return success();
  auto t = cast<RankedTensorType>(input.getType());
  if (dim < 0 || dim >= t.getRank())
    return op->emitOpError("(C2) dim ") << dim << " is out of range for rank " << t.getRank();
  if (t.getDimSize(dim) % n != 0)
    return op->emitOpError("(C3) dimension ")
           << dim << " of " << typeStr(t) << " is not divisible by the axis size " << n;
  return success();
}

LogicalResult CopyOp::verifySymbolUses(SymbolTableCollection &tables) {
  return success(resolveMesh(*this, getMeshAttr(), tables) != nullptr);
}

/// all_gather (`gathers`) or reduce_scatter along `dim` over the mesh axis: in
/// the global view, verifyGlobalView; else (C3) the whole side's `dim` is the
/// split side's times the axis size.
template <class Op>
static LogicalResult verifyAlongDim(Op op, SymbolTableCollection &tables, bool gathers) {
  MeshOp mesh = resolveMesh(op, op.getMeshAttr(), tables);
  if (!mesh)
    return failure();
  int64_t n = mesh.axisSize(op.getAxis());
  if (op.getInput().getType() == op.getResult().getType())
    return verifyGlobalView(op, op.getInput(), op.getResult(), op.getDim(), n);
  return verifyScaledDim(op, op.getInput(), op.getResult(), op.getDim(), gathers ? n : 1,
                         gathers ? 1 : n, "(C3)");
}

LogicalResult AllGatherOp::verifySymbolUses(SymbolTableCollection &tables) {
  return verifyAlongDim(*this, tables, /*gathers=*/true);
}

LogicalResult ReduceScatterOp::verifySymbolUses(SymbolTableCollection &tables) {
  return verifyAlongDim(*this, tables, /*gathers=*/false);
}

LogicalResult AllToAllOp::verifySymbolUses(SymbolTableCollection &tables) {
  MeshOp mesh = resolveMesh(*this, getMeshAttr(), tables);
  if (!mesh)
    return failure();
  int64_t n = mesh.axisSize(getAxis());
  auto in = cast<RankedTensorType>(getInput().getType());
  int64_t split = getSplitDim(), concat = getConcatDim();
  for (int64_t d : {split, concat})
    if (d < 0 || d >= in.getRank())
      return emitOpError("(C2) dim ")
             << d << " is out of range for rank " << in.getRank();
  if (in.getDimSize(split) % n != 0)
    return emitOpError("(C3) split dimension ")
           << split << " of " << typeStr(in)
           << " is not divisible by the axis size " << n;
  SmallVector<int64_t> expected(in.getShape());
  expected[split] /= n;
  expected[concat] *= n;
  auto expectedType = RankedTensorType::get(expected, in.getElementType());
  if (getResult().getType() != expectedType)
    return emitOpError("(C3) result must be ")
           << typeStr(expectedType) << ", got " << typeStr(getResult().getType());
  return success();
}

static LogicalResult verifyPeerOffset(Operation *op, MeshOp mesh, Axis axis,
                                      int64_t offset) {
  int64_t n = mesh.axisSize(axis);
  if (offset == 0 || offset >= n || offset <= -n)
    return op->emitOpError("(C2) offset ")
           << offset << " must be non-zero with |offset| < size(" << stringifyAxis(axis)
           << ") = " << n;
  return success();
}

LogicalResult SendOp::verifySymbolUses(SymbolTableCollection &tables) {
  MeshOp mesh = resolveMesh(*this, getMeshAttr(), tables);
  return success(mesh && succeeded(verifyPeerOffset(*this, mesh, getAxis(), getOffset())));
}

LogicalResult RecvOp::verifySymbolUses(SymbolTableCollection &tables) {
  MeshOp mesh = resolveMesh(*this, getMeshAttr(), tables);
  return success(mesh && succeeded(verifyPeerOffset(*this, mesh, getAxis(), getOffset())));
}
