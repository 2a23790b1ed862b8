//===- PlanDialect.h - the plan dialect -----------------------------------===//
//
// Rank programs as runtime instructions over arena buffers; see PlanOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_DIALECTS_PLAN_PLANDIALECT_H
#define HEIRETSU_DIALECTS_PLAN_PLANDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"

#include "dialects/plan/PlanDialect.h.inc"
#include "dialects/plan/PlanEnums.h.inc"

#define GET_OP_CLASSES
#include "dialects/plan/PlanOps.h.inc"

namespace heiretsu::plan_ir {
/// The bytes a buffer (a memref of the plan dialect) takes in the arena: its
/// elements times its element type's size (4 for f32 and i32, 2 for bf16 and f16).
inline int64_t bufferBytes(mlir::Value buffer) {
  auto type = mlir::cast<mlir::MemRefType>(buffer.getType());
  return type.getNumElements() * (type.getElementTypeBitWidth() / 8);
}
} // namespace heiretsu::plan_ir

#endif // HEIRETSU_DIALECTS_PLAN_PLANDIALECT_H
