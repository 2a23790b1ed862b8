//===- DistDialect.h - the dist dialect -----------------------------------===//
//
// Device mesh, sharding attribute and collectives; see DistOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_DIALECTS_DIST_DISTDIALECT_H
#define HEIRETSU_DIALECTS_DIST_DISTDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/dist/DistDialect.h.inc"
#include "dialects/dist/DistEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/dist/DistAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/dist/DistOps.h.inc"

namespace heiretsu::dist {
/// Name of the discardable attribute that carries a tensor's `#dist.sharding`.
inline constexpr llvm::StringLiteral kShardingAttrName = "dist.sharding";
} // namespace heiretsu::dist

#endif // HEIRETSU_DIALECTS_DIST_DISTDIALECT_H
