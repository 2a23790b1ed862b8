//===- PlanDialect.cpp - plan dialect registration and verifiers ----------===//
//
// plan.kernel is verified against the runtime's opcode table (runtime/plan/op_table.h
// through ops.h's Signature), the same table the runtime's plan verifier uses; the
// verifier is generic over the signature. Constraint numbers (Cn) are PlanOps.td's.
//
//===----------------------------------------------------------------------===//

#include "dialects/plan/PlanDialect.h"

#include "runtime/plan/ops.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"

#include <cstring>
#include <map>
#include <set>
#include <utility>

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

//===----------------------------------------------------------------------===//
// ProgramOp, UnitOp, ScheduleOp, RunOp
//===----------------------------------------------------------------------===//

LogicalResult ProgramOp::verify() {
  if (getMicroBatchSizeAttr().getInt() < 1 || getMicrobatchesAttr().getInt() < 1 ||
      getSeqAttr().getInt() < 1 || getVocabAttr().getInt() < 1)
    return emitOpError("(C4) micro_batch_size, microbatches, seq and vocab must be positive");
  const int64_t stage = getStageAttr().getInt();
  if (stage < 0)
    return emitOpError("(C6) stage must be >= 0, got ") << stage;
  // The module's mesh, read generically (the plan dialect does not depend on dist).
  if (auto module = (*this)->getParentOfType<ModuleOp>())
    if (Operation *mesh = SymbolTable::lookupSymbolIn(module, "world"))
      if (auto pp = mesh->getAttrOfType<IntegerAttr>("pp"); pp && stage >= pp.getInt())
        return emitOpError("(C6) stage ")
               << stage << " is outside the mesh's pp = " << pp.getInt()
               << " stages (0.." << pp.getInt() - 1 << ")";
  int part = 0; // 0: buffers, 1: units, 2: after the schedule
  llvm::StringMap<Operation *> io;
  llvm::StringSet<> units;
  std::optional<int64_t> arena = getArenaBytes();
  const int64_t slots = getSlotsAttr() ? getSlotsAttr().getInt() : 1;
  const int64_t slotBytes = getSlotBytesAttr() ? getSlotBytesAttr().getInt() : 0;
  if (getSlots().has_value() != getSlotBytes().has_value() || slots < 1 || slotBytes < 0)
    return emitOpError("(C8) slots must be >= 1 and come with slot_bytes >= 0");
  const int64_t extraSlots = slots - 1;
  for (Operation &op : getBody().front()) {
    if (auto buffer = dyn_cast<BufferOp>(op)) {
      if (part != 0)
        return op.emitOpError("(C1) buffers must precede the units");
      if (std::optional<StringRef> role = buffer.getIo())
        if (*role != "cache" && !io.try_emplace(*role, &op).second)
          return op.emitOpError("(C2) more than one buffer has io = \"") << *role << "\"";
      if (arena) {
        std::optional<int64_t> offset = buffer.getOffset();
        int64_t bytes = bufferBytes(buffer);
        // A slotted buffer's last copy must fit too.
        int64_t last = buffer.getSlotted() ? extraSlots * slotBytes : 0;
        if (!offset || *offset < 0 || *offset + last + bytes > *arena)
          return op.emitOpError("(C5) buffer must have an offset inside the arena of ")
                 << *arena << " bytes" << (last ? " (every slot's copy)" : "");
      }
    } else if (auto param = dyn_cast<ParamOp>(op)) {
      if (part != 0)
        return op.emitOpError("(C1) parameters must precede the units");
      if (arena) {
        std::optional<ArrayRef<int64_t>> offsets = param.getOffsets();
        int64_t bytes = bufferBytes(param.getValue());
        if (!offsets)
          return op.emitOpError("(C5) parameter has no offsets after memory planning");
        for (int64_t o : *offsets)
          if (o < 0 || o + bytes > *arena)
            return op.emitOpError("(C5) parameter buffer at ")
                   << o << " is outside the arena of " << *arena << " bytes";
      }
    } else if (auto unit = dyn_cast<UnitOp>(op)) {
      if (part > 1)
        return op.emitOpError("(C1) units must precede the plan.schedule");
      if (!units.insert(unit.getName()).second)
        return op.emitOpError("(C7) a second unit named \"") << unit.getName() << "\"";
      part = 1;
    } else if (isa<ScheduleOp>(op)) {
      if (part != 1)
        return op.emitOpError(part == 0 ? "(C1) plan.schedule must follow the units"
                                        : "(C1) a program has at most one plan.schedule");
      part = 2;
    } else {
      return op.emitOpError("(C1) is not allowed directly in a plan.program");
    }
  }
  if (part == 0)
    return emitOpError("(C1) needs at least one plan.unit");
  if (io.count("targets") && !io.count("loss"))
    return emitOpError("(C3) a program with targets needs its loss; this one has only "
                       "io = \"targets\"");
  return success();
}

LogicalResult UnitOp::verify() {
  for (Operation &op : getBody().front())
    if (!isa<KernelOp>(op))
      return op.emitOpError("(C1) is not allowed in a plan.unit (only plan.kernel)");
  if (IntegerAttr chunk = getChunkAttr(); chunk && (chunk.getInt() < 0 || !isPerMicrobatch()))
    return emitOpError("(C2) chunk must be >= 0 and only on a microbatch unit, got ")
           << chunk.getInt();
  return success();
}

/// The unit of `program` named `name`, or null.
static UnitOp findUnit(ProgramOp program, StringRef name) {
  for (auto unit : program.getBody().front().getOps<UnitOp>())
    if (unit.getName() == name)
      return unit;
  return nullptr;
}

LogicalResult ScheduleOp::verifyRegions() {
  auto program = cast<ProgramOp>((*this)->getParentOp());
  const int64_t microbatches = program.getMicrobatchesAttr().getInt();
  // Runs per unit: per (chunk, microbatch) for microbatch units, in total for others.
  llvm::DenseMap<Operation *, std::map<std::pair<int64_t, int64_t>, int64_t>> runs;
  // Per (chunk, microbatch): how many forward units have run.
  std::map<std::pair<int64_t, int64_t>, size_t> forwards;
  // Per chunk: its forward units and its microbatch units.
  std::map<int64_t, size_t> forwardUnits, chunkUnits;
  for (auto unit : program.getBody().front().getOps<UnitOp>()) {
    forwardUnits[unit.chunkIndex()] += unit.getKind() == UnitKind::forward;
    chunkUnits[unit.chunkIndex()] += unit.isPerMicrobatch();
  }
  // (C4) Per (chunk, microbatch): its slot and how many of its runs are left; per
  // slot: the (chunk, microbatch) holding it.
  std::optional<int64_t> slots;
  if (IntegerAttr attr = program.getSlotsAttr())
    slots = attr.getInt();
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> slotOf;
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> holder; // (chunk, slot)
  for (Operation &op : getBody().front()) {
    auto run = dyn_cast<RunOp>(op);
    if (!run)
      return op.emitOpError("(C1) is not allowed in a plan.schedule (only plan.run)");
    UnitOp unit = findUnit(program, run.getUnit());
    if (!unit)
      return success(); // RunOp's own verifier reports it
    std::pair<int64_t, int64_t> key{run.getChunk() ? run.getChunkAttr().getInt() : 0,
                                    run.getMicrobatch() ? run.getMicrobatchAttr().getInt() : -1};
    if (slots && unit.isPerMicrobatch()) {
      int64_t slot = run.getSlot() ? run.getSlotAttr().getInt() : 0;
      if (slot >= *slots)
        return run.emitOpError("(C4) slot ")
               << slot << " of microbatch " << key.second << " is outside the program's "
               << *slots << " slots";
      auto [it, first] =
          slotOf.try_emplace(key, slot, static_cast<int64_t>(chunkUnits[key.first]));
      if (first) {
        auto [h, free] = holder.try_emplace({key.first, slot}, key);
        if (!free)
          return run.emitOpError("(C4) microbatch ")
                 << key.second << " takes slot " << slot << " while microbatch "
                 << h->second.second << " (chunk " << h->second.first << ") still holds it";
      } else if (it->second.first != slot) {
        return run.emitOpError("(C4) microbatch ")
               << key.second << " runs on slot " << slot << ", its forward on slot "
               << it->second.first;
      }
      if (--it->second.second == 0)
        holder.erase({key.first, slot});
    }
    int64_t count = ++runs[unit][key];
    if (count > 1)
      return run.emitOpError("(C2) unit \"")
             << unit.getName() << "\" runs twice"
             << (unit.isPerMicrobatch()
                     ? " for microbatch " + std::to_string(key.second) + " of chunk " +
                           std::to_string(key.first)
                     : std::string(" in a step"));
    if (unit.getKind() == UnitKind::forward) {
      ++forwards[key];
    } else if (unit.isPerMicrobatch() && forwards[key] < forwardUnits[key.first]) {
      return run.emitOpError("(C3) unit \"")
             << unit.getName() << "\" of microbatch " << key.second
             << " runs before that microbatch's forward units";
    }
  }
  for (auto unit : program.getBody().front().getOps<UnitOp>()) {
    auto &mine = runs[unit];
    if (!unit.isPerMicrobatch()) {
      if (mine.empty())
        return emitOpError("(C2) unit \"") << unit.getName() << "\" never runs";
      continue;
    }
    // A unit runs for its own chunk (RunOp C3), every microbatch.
    for (int64_t c : {unit.chunkIndex()})
      for (int64_t m = 0; m < microbatches; ++m)
        if (!mine.count({c, m}))
          return emitOpError("(C2) unit \"")
                 << unit.getName() << "\" does not run for microbatch " << m << " of chunk "
                 << c << " (the program has " << microbatches << " microbatches)";
  }
  return success();
}

LogicalResult RunOp::verify() {
  auto program = cast<ProgramOp>((*this)->getParentOp()->getParentOp());
  UnitOp unit = findUnit(program, getUnit());
  if (!unit)
    return emitOpError("(C1) the program has no unit named \"") << getUnit() << "\"";
  std::optional<int64_t> m, c;
  if (IntegerAttr attr = getMicrobatchAttr())
    m = attr.getInt();
  if (IntegerAttr attr = getChunkAttr())
    c = attr.getInt();
  if (unit.isPerMicrobatch() != m.has_value())
    return emitOpError("(C2) unit \"")
           << getUnit() << "\" of kind " << stringifyUnitKind(unit.getKind())
           << (m ? " runs once per step and takes no microbatch"
                 : " runs per microbatch and needs one");
  if (m && (*m < 0 || *m >= program.getMicrobatchesAttr().getInt()))
    return emitOpError("(C2) microbatch ")
           << *m << " is outside [0, " << program.getMicrobatches() << ")";
  if (c && *c < 0)
    return emitOpError("(C3) chunk must be >= 0, got ") << *c;
  if (c.value_or(0) != unit.chunkIndex())
    return emitOpError("(C3) unit \"")
           << getUnit() << "\" belongs to chunk " << unit.chunkIndex() << ", not "
           << c.value_or(0);
  if (IntegerAttr slot = getSlotAttr(); slot && (!m || slot.getInt() < 0))
    return emitOpError(m ? "(C3) slot must be >= 0, got " + std::to_string(slot.getInt())
                         : std::string("(C3) a unit of the step takes no slot"));
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
  if (*role == "position" && isInt && type.getNumElements() == 1)
    return success();
  if (*role == "loss" && !isInt && type.getNumElements() == 1)
    return success();
  if ((*role == "logits" || *role == "cache") && !isInt)
    return success();
  return emitOpError("(C1) io = \"")
         << *role << "\" needs tokens/targets of i32, a one-element i32 position, a "
                     "one-element f32 loss, or f32 logits or cache, got "
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
  if (IntegerAttr tied = getTiedStageAttr()) {
    auto program = (*this)->getParentOfType<ProgramOp>();
    if (tied.getInt() < 0 || (program && tied.getInt() == program.getStageAttr().getInt()))
      return emitOpError("(C6) tied_stage must be another pipeline stage, got ") << tied.getInt();
  }
  std::optional<ArrayRef<int64_t>> axes = getSplitAxes();
  std::optional<ArrayRef<int64_t>> global = getGlobalShape();
  if (axes.has_value() != global.has_value())
    return emitOpError("(C4) split_axes and global_shape go together");
  if (!axes)
    return success();
  ArrayRef<int64_t> local = value.getShape();
  if (axes->size() != local.size() || global->size() != local.size())
    return emitOpError("(C4) split_axes [")
           << *axes << "] and global_shape [" << *global << "] need one entry per dimension of "
           << value;
  bool seen[rt::kNumAxes] = {};
  for (size_t d = 0; d < local.size(); ++d) {
    int64_t axis = (*axes)[d];
    // Splits are over the mesh's axes (not the data ranks' group).
    if (axis < -1 || axis > rt::kAxisEp)
      return emitOpError("(C4) split_axes entry ")
             << axis << " of dimension " << d << " is neither -1 (whole) nor a mesh axis 0.."
             << static_cast<int64_t>(rt::kAxisEp);
    if (axis >= 0 && std::exchange(seen[axis], true))
      return emitOpError("(C4) two dimensions are split over mesh axis ")
             << rt::AxisName(axis);
    bool ok = axis >= 0 ? local[d] > 0 && (*global)[d] % local[d] == 0
                        : (*global)[d] == local[d];
    if (!ok)
      return emitOpError("(C4) global_shape [")
             << *global << "] is not a split of " << value << " by split_axes [" << *axes
             << "] (dimension " << d << ")";
  }
  return success();
}

bool ParamOp::isSplitOver(int64_t axis) {
  std::optional<ArrayRef<int64_t>> axes = getSplitAxes();
  return axes && llvm::is_contained(*axes, axis);
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
  for (auto [value, slot] : llvm::zip(ints, sig.ints))
    if (value < 0 || value > rt::MaxValue(slot.kind))
      return emitOpError("(C2) ") << slot.name << " = " << value << " is out of range [0, "
                                  << rt::MaxValue(slot.kind) << "]";
  for (auto [lo, hi] : sig.at_most)
    if (ints[lo] > ints[hi])
      return emitOpError("(C2) ") << sig.ints[lo].name << " = " << ints[lo] << " exceeds "
                                  << sig.ints[hi].name << " = " << ints[hi];
  if (sig.variadic) {
    if (getBuffers().empty() || !getAbsent().empty())
      return emitOpError("(C3) '") << getName() << "' takes one or more buffers and none absent";
    bool wantInt = sig.variadic_dtype == rt::fb::DType_I32;
    for (Value b : getBuffers())
      if (cast<MemRefType>(b.getType()).getElementType().isInteger(32) != wantInt)
        return emitOpError("(C3) '") << getName() << "' takes " << (wantInt ? "i32" : "f32")
                                     << " buffers";
    return success();
  }
  ArrayRef<int64_t> absent = getAbsent();
  for (auto [i, slot] : llvm::enumerate(absent))
    if (slot < 0 || slot >= static_cast<int64_t>(sig.buffers.size()) ||
        (i > 0 && slot <= absent[i - 1]))
      return emitOpError("(C3) absent = [")
             << absent << "] must list distinct slots of '" << getName() << "' (0.."
             << sig.buffers.size() - 1 << ") in increasing order";
  size_t next = 0;
  for (size_t slot = 0; slot < sig.buffers.size(); ++slot) {
    const rt::BufferSlot &s = sig.buffers[slot];
    if (llvm::is_contained(absent, static_cast<int64_t>(slot))) {
      if (!s.optional())
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
                                          << sig.ints[flag].name << " = 1";
  if (next != getBuffers().size())
    return emitOpError("(C3) '") << getName() << "' takes " << next << " buffers, got "
                                 << getBuffers().size();
  return success();
}
