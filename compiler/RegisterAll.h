//===- RegisterAll.h - the one place that registers dialects and passes --===//
//
// Every compiler tool (heiretsu-compile, heiretsu-opt, the spec fuzzer) calls
// these, so a dialect or pass added here is available everywhere.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_REGISTERALL_H
#define HEIRETSU_COMPILER_REGISTERALL_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace heiretsu {
/// Adds the graph, dist and plan dialects and the upstream dialects they build on
/// (func).
void registerAllDialects(mlir::DialectRegistry &registry);
/// Registers every heiretsu pass and the compile pipeline
/// (heiretsu-compile-pipeline) with the global pass registry (for heiretsu-opt).
void registerAllPasses();
} // namespace heiretsu

#endif // HEIRETSU_COMPILER_REGISTERALL_H
