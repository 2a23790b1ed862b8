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

#endif // HEIRETSU_DIALECTS_PLAN_PLANDIALECT_H
