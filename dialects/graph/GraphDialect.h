//===- GraphDialect.h - the graph dialect ---------------------------------===//
//
// Model-level ops with value semantics over static f32 tensors; see GraphOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_DIALECTS_GRAPH_GRAPHDIALECT_H
#define HEIRETSU_DIALECTS_GRAPH_GRAPHDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/graph/GraphDialect.h.inc"
#include "dialects/graph/GraphEnums.h.inc"

#define GET_OP_CLASSES
#include "dialects/graph/GraphOps.h.inc"

namespace heiretsu::graph {
/// Name of the module attribute (a dictionary) holding the model's name and
/// resolved hyperparameters.
inline constexpr llvm::StringLiteral kModelAttrName = "graph.model";
} // namespace heiretsu::graph

#endif // HEIRETSU_DIALECTS_GRAPH_GRAPHDIALECT_H
