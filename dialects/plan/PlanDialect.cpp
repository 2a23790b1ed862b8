//===- PlanDialect.cpp - plan dialect registration and verifiers ----------===//
//
// plan.kernel is verified against the runtime's opcode table (runtime/plan/ops.h),
// the same table the runtime's plan verifier uses.
//
//===----------------------------------------------------------------------===//

#include "dialects/plan/PlanDialect.h"

#include "runtime/plan/ops.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSet.h"

#include <cstring>

using namespace mlir;
using namespace heiretsu::plan_ir;
namespace rt = heiretsu::plan;

#include "dialects/plan/PlanDialect.cpp.inc"
#include "dialects/plan/PlanEnums.cpp.inc"

/// `: memref<...>` then, only when the moments differ from the value (ZeRO-1),
/// `, moments memref<...>`.
static ParseResult parseMomentType(OpAsmParser &parser, Type valueType, Type &moment) {
  moment = valueType;
  if (failed(parser.parseOptionalComma()))
    return success();
  return failure(parser.parseKeyword("moments") || parser.parseType(moment));
}

static void printMomentType(OpAsmPrinter &printer, Operation *, Type valueType, Type moment) {
  if (moment != valueType)
    printer << ", moments " << moment;
}

#define GET_OP_CLASSES
#include "dialects/plan/PlanOps.cpp.inc"

void PlanDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/plan/PlanOps.cpp.inc"
      >();
}

static int64_t numElements(Value v) {
  return cast<MemRefType>(v.getType()).getNumElements();
}

//===----------------------------------------------------------------------===//
// ProgramOp
//===----------------------------------------------------------------------===//

LogicalResult ProgramOp::verify() {
  if (getMicroBatchSize() < 1 || getMicrobatches() < 1 || getSeq() < 1 || getVocab() < 1)
    return emitOpError("(C3) micro_batch_size, microbatches, seq and vocab must be positive");
  int stage = 0; // 0: buffers, 1: after microbatch, 2: after update
  llvm::StringSet<> io;
  std::optional<int64_t> arena = getArenaBytes();
  for (Operation &op : getBody().front()) {
    if (auto buffer = dyn_cast<BufferOp>(op)) {
      if (stage != 0)
        return op.emitOpError("(C1) buffers must precede the instruction streams");
      if (std::optional<StringRef> role = buffer.getIo())
        if (!io.insert(*role).second)
          return op.emitOpError("(C2) more than one buffer has io = \"") << *role << "\"";
      if (arena) {
        std::optional<int64_t> offset = buffer.getOffset();
        int64_t bytes = numElements(buffer) * 4;
        if (!offset || *offset < 0 || *offset + bytes > *arena)
          return op.emitOpError("(C4) buffer must have an offset inside the arena of ")
                 << *arena << " bytes";
      }
    } else if (auto param = dyn_cast<ParamOp>(op)) {
      if (stage != 0)
        return op.emitOpError("(C1) parameters must precede the instruction streams");
      if (arena) {
        std::optional<ArrayRef<int64_t>> offsets = param.getOffsets();
        int64_t bytes = numElements(param.getValue()) * 4;
        if (!offsets)
          return op.emitOpError("(C4) parameter has no offsets after memory planning");
        for (int64_t o : *offsets)
          if (o < 0 || o + bytes > *arena)
            return op.emitOpError("(C4) parameter buffer at ")
                   << o << " is outside the arena of " << *arena << " bytes";
      }
    } else if (isa<MicrobatchOp>(op)) {
      if (stage != 0)
        return op.emitOpError("(C1) expected one plan.microbatch before plan.update");
      stage = 1;
    } else if (isa<UpdateOp>(op)) {
      if (stage != 1)
        return op.emitOpError("(C1) expected plan.update after plan.microbatch");
      stage = 2;
    } else {
      return op.emitOpError("(C1) is not allowed directly in a plan.program");
    }
  }
  if (stage != 2)
    return emitOpError("(C1) needs a plan.microbatch and a plan.update");
  for (const char *role : {"tokens", "targets", "loss"})
    if (!io.contains(role))
      return emitOpError("(C2) no buffer has io = \"") << role << "\"";
  return success();
}

//===----------------------------------------------------------------------===//
// BufferOp and ParamOp
//===----------------------------------------------------------------------===//

LogicalResult BufferOp::verify() {
  if (std::optional<StringRef> r = getGradReduce(); r && *r != "tp")
    return emitOpError("(C2) grad_reduce must be \"tp\", got \"") << *r << "\"";
  std::optional<StringRef> role = getIo();
  if (!role)
    return success();
  auto type = cast<MemRefType>(getBuffer().getType());
  bool isInt = type.getElementType().isInteger(32);
  if ((*role == "tokens" || *role == "targets") && isInt)
    return success();
  if (*role == "loss" && !isInt && type.getNumElements() == 1)
    return success();
  return emitOpError("(C1) io = \"")
         << *role << "\" needs tokens/targets of i32 or a one-element f32 loss, got "
         << type;
}

LogicalResult ParamOp::verify() {
  auto value = cast<MemRefType>(getValue().getType());
  auto moment = cast<MemRefType>(getExpAvg().getType());
  if (!value.getElementType().isF32() || !moment.getElementType().isF32())
    return emitOpError("(C1) parameter buffers must be f32");
  if (moment != value && (moment.getRank() != 1 || moment.getNumElements() > value.getNumElements()))
    return emitOpError("(C1) moments must have the value's type or be a 1-D shard of it, got ")
           << moment;
  bool normal = getInit() == InitKind::normal;
  if (normal != getStd().has_value() || (normal && !(getStd()->convertToDouble() > 0)))
    return emitOpError("(C2) init 'normal' needs std > 0, and only it takes std");
  if (std::optional<ArrayRef<int64_t>> o = getOffsets(); o && o->size() != 4)
    return emitOpError("(C3) offsets must have 4 entries");
  if (std::optional<StringRef> r = getGradReduce(); r && *r != "tp")
    return emitOpError("(C5) grad_reduce must be \"tp\", got \"") << *r << "\"";
  std::optional<uint64_t> dim = getTpDim();
  std::optional<ArrayRef<int64_t>> global = getGlobalShape();
  if (dim.has_value() != global.has_value())
    return emitOpError("(C4) tp_dim and global_shape go together");
  if (dim) {
    ArrayRef<int64_t> local = value.getShape();
    bool ok = *dim < local.size() && global->size() == local.size();
    for (size_t d = 0; ok && d < local.size(); ++d)
      ok = d == *dim ? (*global)[d] % local[d] == 0 : (*global)[d] == local[d];
    if (!ok)
      return emitOpError("(C4) global_shape [")
             << *global << "] is not a split of "
             << value << " along tp_dim " << *dim;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// KernelOp
//===----------------------------------------------------------------------===//

LogicalResult KernelOp::verify() {
  std::optional<rt::fb::Op> opcode = rt::OpFromName(getName().str());
  if (!opcode) // kernel_c1
    return emitOpError("(C1) unknown opcode '") << getName() << "'";
  std::vector<int64_t> ints(getInts().begin(), getInts().end());
  rt::Signature sig = rt::OpSignature(*opcode, ints);
  if (ints.size() != sig.ints.size() || getFloats().size() != sig.floats.size())
    return emitOpError("(C2) '") << getName() << "' takes " << sig.ints.size()
                                 << " ints and " << sig.floats.size()
                                 << " floats, got " << ints.size() << " and "
                                 << getFloats().size();
  for (size_t k = 0; k < ints.size(); ++k) {
    if (ints[k] < 0 || (rt::IsFlag(sig.ints[k]) && ints[k] > 1))
      return emitOpError("(C2) ") << sig.ints[k] << " = " << ints[k] << " is out of range";
  }
  for (auto [k, top] : sig.max_value)
    if (ints[k] > top)
      return emitOpError("(C2) ") << sig.ints[k] << " = " << ints[k] << " is out of range [0, "
                                  << top << "]";
  for (auto [lo, hi] : sig.at_most)
    if (ints[lo] > ints[hi])
      return emitOpError("(C2) ") << sig.ints[lo] << " = " << ints[lo] << " exceeds "
                                  << sig.ints[hi] << " = " << ints[hi];
  if (sig.variadic) {
    for (Value b : getBuffers())
      if (!cast<MemRefType>(b.getType()).getElementType().isF32())
        return emitOpError("(C3) '") << getName() << "' takes f32 buffers";
    return success();
  }
  ArrayRef<int64_t> absent = getAbsent();
  size_t next = 0;
  for (size_t slot = 0; slot < sig.buffers.size(); ++slot) {
    const rt::BufferSlot &s = sig.buffers[slot];
    if (llvm::is_contained(absent, static_cast<int64_t>(slot))) {
      if (!s.optional)
        return emitOpError("(C3) buffer '") << s.name << "' of '" << getName()
                                            << "' is required";
      continue;
    }
    if (next >= getBuffers().size())
      return emitOpError("(C3) '") << getName() << "' needs buffer '" << s.name << "'";
    Value b = getBuffers()[next++];
    auto type = cast<MemRefType>(b.getType());
    bool wantInt = s.dtype == rt::fb::DType_I32;
    if (type.getElementType().isInteger(32) != wantInt)
      return emitOpError("(C3) buffer '") << s.name << "' must be "
                                          << (wantInt ? "i32" : "f32") << ", got " << type;
    if (s.numel >= 0 && type.getNumElements() != s.numel)
      return emitOpError("(C3) buffer '") << s.name << "' has " << type.getNumElements()
                                          << " elements, expected " << s.numel;
  }
  for (auto [slot, flag] : sig.present_iff)
    if (llvm::is_contained(absent, static_cast<int64_t>(slot)) == (ints[flag] == 1))
      return emitOpError("(C3) buffer '") << sig.buffers[slot].name
                                          << "' must be present exactly when "
                                          << sig.ints[flag] << " = 1";
  if (next != getBuffers().size())
    return emitOpError("(C3) '") << getName() << "' takes " << next << " buffers, got "
                                 << getBuffers().size();
  return success();
}
