//===- Passes.h - heiretsu compiler passes ----------------------------------===//

#ifndef HEIRETSU_COMPILER_TRANSFORMS_PASSES_H
#define HEIRETSU_COMPILER_TRANSFORMS_PASSES_H

#include "dialects/plan/PlanDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace heiretsu {

#define GEN_PASS_DECL
#include "compiler/transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/transforms/Passes.h.inc"

} // namespace heiretsu

#endif // HEIRETSU_COMPILER_TRANSFORMS_PASSES_H
