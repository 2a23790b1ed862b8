//===- PlanUtils.h - building plan programs ---------------------------------===//
//
// Shared by the passes that create plan ops: buffers go into the program's body
// before its instruction streams; a kernel takes its signature's buffers in order,
// with a null Value for an absent optional one.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H
#define HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H

#include "dialects/plan/PlanDialect.h"
#include "runtime/plan/ops.h"

#include "mlir/IR/Builders.h"

namespace heiretsu {

/// A new buffer of `type` named `name`, placed after the program's other buffers.
inline mlir::Value createBuffer(plan_ir::ProgramOp program, mlir::Location loc,
                                llvm::StringRef name, mlir::MemRefType type,
                                llvm::StringRef io = "") {
  mlir::Block &body = program.getBody().front();
  mlir::OpBuilder b(program.getContext());
  mlir::Operation *firstStream = nullptr;
  for (mlir::Operation &op : body)
    if (mlir::isa<plan_ir::MicrobatchOp, plan_ir::UpdateOp>(op)) {
      firstStream = &op;
      break;
    }
  if (firstStream)
    b.setInsertionPoint(firstStream);
  else
    b.setInsertionPointToEnd(&body);
  auto buffer = plan_ir::BufferOp::create(b, loc, type, b.getStringAttr(name),
                                          io.empty() ? mlir::StringAttr() : b.getStringAttr(io),
                                          mlir::IntegerAttr(), mlir::StringAttr());
  return buffer.getBuffer();
}

/// Appends kernel `name` at `b`'s insertion point. Null entries of `buffers` are
/// absent optional buffers.
inline plan_ir::KernelOp createKernel(mlir::OpBuilder &b, mlir::Location loc,
                                      llvm::StringRef name,
                                      llvm::ArrayRef<mlir::Value> buffers,
                                      llvm::ArrayRef<int64_t> ints,
                                      llvm::ArrayRef<double> floats = {}) {
  llvm::SmallVector<mlir::Value> present;
  llvm::SmallVector<int64_t> absent;
  for (auto [i, v] : llvm::enumerate(buffers)) {
    if (v)
      present.push_back(v);
    else
      absent.push_back(static_cast<int64_t>(i));
  }
  return plan_ir::KernelOp::create(b, loc, b.getStringAttr(name), present,
                                   b.getDenseI64ArrayAttr(ints),
                                   b.getDenseF64ArrayAttr(floats),
                                   b.getDenseI64ArrayAttr(absent));
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

/// The program's parameters, in order, and its update stream.
inline std::pair<llvm::SmallVector<plan_ir::ParamOp>, plan_ir::UpdateOp>
paramsAndUpdate(plan_ir::ProgramOp program) {
  llvm::SmallVector<plan_ir::ParamOp> params;
  plan_ir::UpdateOp update;
  for (mlir::Operation &op : program.getBody().front()) {
    if (auto p = mlir::dyn_cast<plan_ir::ParamOp>(op))
      params.push_back(p);
    if (auto u = mlir::dyn_cast<plan_ir::UpdateOp>(op))
      update = u;
  }
  return {params, update};
}

/// The gradient-norm instructions of the update stream: one over the gradients
/// of whole parameters, one (tp_sharded) over those of tp blocks, whose sum of
/// squares the runtime sums over tp. `sharded`: ZeRO-1 dp shards.
inline void createGradNorm(mlir::OpBuilder &b, mlir::Location loc,
                           llvm::ArrayRef<plan_ir::ParamOp> params, bool sharded) {
  llvm::SmallVector<mlir::Value> whole, blocks;
  for (plan_ir::ParamOp p : params)
    (p.getTpDim() ? blocks : whole).push_back(p.getGrad());
  if (!whole.empty())
    createKernel(b, loc, "grad_norm_sq", whole, {sharded ? 1 : 0, /*tp_sharded=*/0});
  if (!blocks.empty())
    createKernel(b, loc, "grad_norm_sq", blocks, {sharded ? 1 : 0, /*tp_sharded=*/1});
}

/// The all_reduce over tp of the gradients that are partial sums on each tp rank
/// (parameters marked grad_reduce = "tp"), if any: the update stream's first step.
inline void createPartialGradReduce(mlir::OpBuilder &b, mlir::Location loc,
                                    llvm::ArrayRef<plan_ir::ParamOp> params) {
  llvm::SmallVector<mlir::Value> partial;
  for (plan_ir::ParamOp p : params)
    if (p.getGradReduce())
      partial.push_back(p.getGrad());
  if (!partial.empty())
    createKernel(b, loc, "all_reduce", partial, {plan::kAxisTp, plan::kReduceSum});
}

inline int64_t numElements(mlir::Value buffer) {
  return llvm::cast<mlir::MemRefType>(buffer.getType()).getNumElements();
}

} // namespace heiretsu

#endif // HEIRETSU_COMPILER_TRANSFORMS_PLANUTILS_H
