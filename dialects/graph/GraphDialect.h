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
/// Name of the i64 attribute the frontend sets on every op of the block's layer i
/// (absent on the ops before the block, the embedding, and after it, the final
/// norm, the head and the loss): pipeline stage cuts fall between layers.
inline constexpr llvm::StringLiteral kLayerAttrName = "graph.layer";
/// Name of the argument attribute of a pipeline stage's function
/// (heiretsu-stage-cuts: func.func @stage_S) saying which input the argument is:
/// "tokens" or "targets"; a decode program's @forward has (tokens, position). A
/// training @forward's arguments are (tokens, targets) without it.
inline constexpr llvm::StringLiteral kInputAttrName = "graph.input";
} // namespace heiretsu::graph

#endif // HEIRETSU_DIALECTS_GRAPH_GRAPHDIALECT_H
