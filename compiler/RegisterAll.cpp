//===- RegisterAll.cpp - dialect and pass registration --------------------===//

#include "compiler/RegisterAll.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

void heiretsu::registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<heiretsu::graph::GraphDialect, heiretsu::dist::DistDialect,
                  mlir::func::FuncDialect>();
}

void heiretsu::registerAllPasses() {
  // Upstream cleanups used in pipelines and tests; heiretsu's own passes join
  // here as they are written.
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
}
