//===- PlanUtils.h - building and reading plan programs ---------------------===//
//
// Shared by the passes that create or read plan ops and by the emitter:
//   - kernels are built from and read into the runtime's typed operand structs
//     (plan::op::Linear<mlir::Value>...), generated from runtime/plan/op_table.h,
//     so no compiler code names an operand by its position. A null Value is an
//     absent optional buffer, both ways;
//   - buffers go into the program's body before its units;
//   - the units of a program are found by kind; the mesh is the module's
//     `dist.mesh @world`; what a pass reads before it starts (the graph's
//     @forward, the mesh, units) is required by one call that names the pass.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H
#define HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H

#include "dialects/dist/DistDialect.h"
#include "dialects/plan/PlanDialect.h"
#include "runtime/plan/ops.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <cassert>
#include <initializer_list>
#include <optional>
#include <vector>

namespace heiretsu {

//===----------------------------------------------------------------------===//
// Kernels <-> typed operands
//===----------------------------------------------------------------------===//

/// Appends the kernel `op` describes (its opcode is the struct's) at `b`'s
/// insertion point. Null buffers are absent optional slots.
template <class Op>
plan_ir::KernelOp createKernel(mlir::OpBuilder &b, mlir::Location loc, const Op &op) {
  struct Sink {
    llvm::SmallVector<mlir::Value> present;
    llvm::SmallVector<int64_t> absent, ints;
    llvm::SmallVector<double> floats;
    int64_t slot = 0;
    void Buffer(const mlir::Value &v) {
      if (v)
        present.push_back(v);
      else
        absent.push_back(slot);
      ++slot;
    }
    void Int(int64_t v) { ints.push_back(v); }
    void Float(double v) { floats.push_back(v); }
  } sink;
  op.Write(sink);
  return plan_ir::KernelOp::create(b, loc, b.getStringAttr(Op::kName), sink.present,
                                   b.getDenseI64ArrayAttr(sink.ints),
                                   b.getDenseF64ArrayAttr(sink.floats),
                                   b.getDenseI64ArrayAttr(sink.absent));
}

/// The kernel's operands as the struct of its opcode; absent slots read as null
/// Values. `k` must be a kernel of that opcode (see kernelAs).
template <class Op>
Op readKernel(plan_ir::KernelOp k) {
  assert(k.getName() == Op::kName && "readKernel of another opcode's kernel");
  struct Source {
    llvm::SmallVector<mlir::Value> slots; // absent ones null
    llvm::ArrayRef<int64_t> ints;
    llvm::ArrayRef<double> floats;
    mlir::Value Buffer(size_t i) const { return i < slots.size() ? slots[i] : mlir::Value(); }
    std::vector<mlir::Value> Buffers() const { return {slots.begin(), slots.end()}; }
    int64_t Int(size_t i) const { return i < ints.size() ? ints[i] : 0; }
    double Float(size_t i) const { return i < floats.size() ? floats[i] : 0.0; }
    int64_t Resolved(size_t) const { return 0; } // the runtime's, per rank
  } src;
  llvm::ArrayRef<int64_t> absent = k.getAbsent();
  auto next = k.getBuffers().begin(), end = k.getBuffers().end();
  for (size_t slot = 0; next != end; ++slot)
    src.slots.push_back(llvm::is_contained(absent, static_cast<int64_t>(slot)) ? mlir::Value()
                                                                               : *next++);
  src.slots.resize(k.getBuffers().size() + absent.size());
  src.ints = k.getInts();
  src.floats = k.getFloats();
  return Op::Read(src);
}

/// `k`'s operands when it is a kernel of Op's opcode, else nothing.
template <class Op>
std::optional<Op> kernelAs(plan_ir::KernelOp k) {
  if (k.getName() != Op::kName)
    return std::nullopt;
  return readKernel<Op>(k);
}

//===----------------------------------------------------------------------===//
// Buffers, units, the mesh
//===----------------------------------------------------------------------===//

/// A new buffer of `type` named `name`, placed after the program's other buffers.
inline mlir::Value createBuffer(plan_ir::ProgramOp program, mlir::Location loc,
                                llvm::StringRef name, mlir::MemRefType type,
                                llvm::StringRef io = "") {
  mlir::Block &body = program.getBody().front();
  mlir::OpBuilder b(program.getContext());
  mlir::Operation *firstUnit = nullptr;
  for (mlir::Operation &op : body)
    if (mlir::isa<plan_ir::UnitOp, plan_ir::ScheduleOp>(op)) {
      firstUnit = &op;
      break;
    }
  if (firstUnit)
    b.setInsertionPoint(firstUnit);
  else
    b.setInsertionPointToEnd(&body);
  auto buffer = plan_ir::BufferOp::create(b, loc, type, b.getStringAttr(name),
                                          io.empty() ? mlir::StringAttr() : b.getStringAttr(io),
                                          mlir::IntegerAttr(), mlir::StringAttr(),
                                          mlir::UnitAttr());
  return buffer.getBuffer();
}

/// The program's first unit of `kind`, or null.
inline plan_ir::UnitOp findUnit(plan_ir::ProgramOp program, plan_ir::UnitKind kind) {
  for (auto unit : program.getBody().front().getOps<plan_ir::UnitOp>())
    if (unit.getKind() == kind)
      return unit;
  return nullptr;
}

/// The program's first unit of `kind`; when it has none, emits an error naming the
/// pass that creates it (`pass`) and returns null.
inline plan_ir::UnitOp requireUnit(plan_ir::ProgramOp program, plan_ir::UnitKind kind,
                                   llvm::StringRef needer) {
  plan_ir::UnitOp unit = findUnit(program, kind);
  if (!unit)
    program.emitError() << needer << " needs a plan.unit of kind "
                        << plan_ir::stringifyUnitKind(kind)
                        << " (heiretsu-lower-to-plan creates \"forward\", \"backward\" and "
                           "\"update\")";
  return unit;
}

/// The mesh of the module that holds `op` (`dist.mesh @world`); when there is
/// none, emits an error saying `needer` needs it and returns null.
inline dist::MeshOp requireMesh(mlir::Operation *op, llvm::StringRef needer) {
  auto module = llvm::isa<mlir::ModuleOp>(op) ? llvm::cast<mlir::ModuleOp>(op)
                                              : op->getParentOfType<mlir::ModuleOp>();
  dist::MeshOp mesh =
      module ? module.lookupSymbol<dist::MeshOp>("world") : dist::MeshOp();
  if (!mesh)
    op->emitError() << needer
                    << " reads the mesh from the module's dist.mesh @world, and there is none "
                       "(the frontend declares it: dist.mesh @world dp = 1 pp = 1 tp = 1 "
                       "ep = 1)";
  return mesh;
}

/// What a pass over the frontend's graph module reads: its `func.func @forward`
/// and the mesh.
struct GraphInputs {
  mlir::func::FuncOp forward;
  dist::MeshOp mesh;
};

/// The graph inputs of `module`; when one is missing, emits an error (naming
/// `pass`, the pass's getArgument()) and returns nothing.
inline std::optional<GraphInputs> requireGraphInputs(mlir::ModuleOp module,
                                                     llvm::StringRef pass) {
  auto forward = module.lookupSymbol<mlir::func::FuncOp>("forward");
  if (!forward) {
    module.emitError("expected func.func @forward");
    return std::nullopt;
  }
  dist::MeshOp mesh = requireMesh(module, pass);
  if (!mesh)
    return std::nullopt;
  return GraphInputs{.forward = forward, .mesh = mesh};
}

/// What a pass over a plan program reads: the mesh and those of the units
/// heiretsu-lower-to-plan creates that it needs (the others null).
struct ProgramInputs {
  dist::MeshOp mesh;
  plan_ir::UnitOp forward, backward, update;

  plan_ir::UnitOp &unit(plan_ir::UnitKind kind) {
    switch (kind) {
    case plan_ir::UnitKind::forward:
      return forward;
    case plan_ir::UnitKind::backward:
      return backward;
    case plan_ir::UnitKind::update:
      return update;
    default:
      llvm_unreachable("ProgramInputs holds the forward, backward and update units");
    }
  }
};

/// The mesh and `program`'s units of `kinds`; when one is missing, emits an error
/// for the first missing one (the mesh, then `kinds` in order), naming `pass` (the
/// pass's getArgument()), and returns nothing.
inline std::optional<ProgramInputs>
requireProgramInputs(plan_ir::ProgramOp program, llvm::StringRef pass,
                     std::initializer_list<plan_ir::UnitKind> kinds = {}) {
  ProgramInputs in{.mesh = requireMesh(program, pass)};
  if (!in.mesh)
    return std::nullopt;
  for (plan_ir::UnitKind kind : kinds)
    if (!(in.unit(kind) = requireUnit(program, kind, pass)))
      return std::nullopt;
  return in;
}

inline int64_t numElements(mlir::Value buffer) {
  return llvm::cast<mlir::MemRefType>(buffer.getType()).getNumElements();
}

/// The buffer's name (plan.buffer or the parameter's name with a suffix).
inline std::string bufferName(mlir::Value buffer) {
  if (auto op = buffer.getDefiningOp<plan_ir::BufferOp>())
    return op.getName().str();
  if (auto param = buffer.getDefiningOp<plan_ir::ParamOp>()) {
    static const char *suffix[] = {"", ".grad", ".exp_avg", ".exp_avg_sq"};
    return param.getName().str() +
           suffix[llvm::cast<mlir::OpResult>(buffer).getResultNumber()];
  }
  return "?";
}

/// The program's parameters, in order.
inline llvm::SmallVector<plan_ir::ParamOp> paramsOf(plan_ir::ProgramOp program) {
  return llvm::to_vector(program.getBody().front().getOps<plan_ir::ParamOp>());
}

/// The gradient-norm instructions of the update unit: one over the gradients
/// of whole parameters, one (tp_sharded) over those of tp blocks, whose sum of
/// squares the runtime sums over tp (and over pp). `sharded`: ZeRO-1 dp shards.
/// A parameter tied to a lower stage (`tied_stage`) is counted there only.
/// The group ZeRO-1 shards parameter `p`'s optimizer state over: dp, or with
/// expert parallelism the data ranks (dp x ep) for a parameter every data rank
/// holds (the experts' are split over ep: their replicas are the dp ranks).
inline int64_t zeroShardAxis(plan_ir::ParamOp p, int64_t ep) {
  return ep > 1 && !p.isSplitOver(plan::kAxisEp) ? plan::kAxisData : plan::kAxisDp;
}

inline void createGradNorm(mlir::OpBuilder &b, mlir::Location loc,
                           llvm::ArrayRef<plan_ir::ParamOp> params, bool sharded,
                           int64_t ep = 1) {
  // One instruction per kind of block: whole, tp blocks, ep blocks, both.
  plan::op::GradNormSq<mlir::Value> norms[2][2];
  for (int tp = 0; tp < 2; ++tp)
    for (int e = 0; e < 2; ++e)
      norms[tp][e] = {.sharded = sharded ? 1 : 0,
                      .tp_sharded = tp,
                      .ep_sharded = e,
                      // ZeRO-1 with ep: the shards of what ep does not split are
                      // over the data ranks.
                      .shard_data = sharded && ep > 1 && e == 0 ? 1 : 0};
  for (plan_ir::ParamOp p : params) {
    auto program = p->getParentOfType<plan_ir::ProgramOp>();
    if (mlir::IntegerAttr tied = p.getTiedStageAttr();
        tied && program && tied.getInt() < program.getStageAttr().getInt())
      continue;
    norms[p.isSplitOver(plan::kAxisTp)][p.isSplitOver(plan::kAxisEp)].buffers.push_back(
        p.getGrad());
  }
  for (auto &row : norms)
    for (auto &norm : row)
      if (!norm.buffers.empty())
        createKernel(b, loc, norm);
}

/// The update unit's first steps: the all_reduce over tp of the gradients that
/// are partial sums on each tp rank (parameters marked grad_reduce = "tp"), and,
/// with expert parallelism, the average over ep of the gradients of the
/// parameters every ep rank holds (the dense ones: ep ranks take different rows,
/// like dp ranks; the experts' own are split over ep). Synchronous, in the update:
/// the backward pass's all_to_alls use the ep group.
inline void createPartialGradReduce(mlir::OpBuilder &b, mlir::Location loc,
                                    llvm::ArrayRef<plan_ir::ParamOp> params, int64_t ep) {
  plan::op::AllReduce<mlir::Value> reduce{.axis = plan::kAxisTp, .reduce = plan::kReduceSum};
  plan::op::AllReduce<mlir::Value> average{.axis = plan::kAxisEp, .reduce = plan::kReduceAvg};
  for (plan_ir::ParamOp p : params) {
    if (p.getGradReduce())
      reduce.buffers.push_back(p.getGrad());
    if (ep > 1 && !p.isSplitOver(plan::kAxisEp))
      average.buffers.push_back(p.getGrad());
  }
  if (!reduce.buffers.empty())
    createKernel(b, loc, reduce);
  if (!average.buffers.empty())
    createKernel(b, loc, average);
}

/// Gradient buckets that overlap the backward pass (heiretsu-dp-grad-reduce,
/// heiretsu-zero1; DataParallel.cpp): the gradients of `params` that `axisOf` gives
/// an axis (the others are left out), ordered by where the backward units finish
/// them (the last kernel touching each), cut into buckets of at most `bucketBytes`
/// (a larger gradient is a bucket of its own) of one unit and one axis; `emit`
/// builds each bucket's collective over its axis right after the kernel that
/// finishes its last gradient. Fails with an error on `program` (pass `pass`)
/// without a backward unit or with bucketBytes < 1.
mlir::LogicalResult insertGradientBuckets(
    plan_ir::ProgramOp program, llvm::ArrayRef<plan_ir::ParamOp> params, int64_t bucketBytes,
    llvm::function_ref<std::optional<int64_t>(plan_ir::ParamOp)> axisOf,
    llvm::function_ref<void(mlir::OpBuilder &, llvm::ArrayRef<mlir::Value>, int64_t)> emit,
    llvm::StringRef pass);

/// Clipping and AdamW of parameter `p` (shard: ZeRO-1's moment shard, 0 = whole,
/// over the group `shardAxis`).
inline void createAdamW(mlir::OpBuilder &b, plan_ir::ParamOp p, int64_t shard,
                        int64_t shardAxis = plan::kAxisDp) {
  createKernel(b, p.getLoc(),
               plan::op::ClipAndAdamW<mlir::Value>{.param = p.getValue(),
                                                   .grad = p.getGrad(),
                                                   .exp_avg = p.getExpAvg(),
                                                   .exp_avg_sq = p.getExpAvgSq(),
                                                   .n = numElements(p.getValue()),
                                                   .weight_decay = p.getDecay() ? 1 : 0,
                                                   .shard = shard,
                                                   .shard_data = shardAxis == plan::kAxisData});
}

} // namespace heiretsu

#endif // HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H
