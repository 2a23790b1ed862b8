//===- RegisterAll.cpp - dialect and pass registration --------------------===//

#include "compiler/RegisterAll.h"
#include "compiler/transforms/Passes.h"
#include "compiler/transforms/Pipeline.h"

#include "dialects/dist/DistDialect.h"
#include "dialects/graph/GraphDialect.h"
#include "dialects/plan/PlanDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

void heiretsu::registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<heiretsu::graph::GraphDialect, heiretsu::dist::DistDialect,
                  heiretsu::plan_ir::PlanDialect, mlir::func::FuncDialect>();
}

void heiretsu::registerAllPasses() {
  // Upstream cleanups used in pipelines and tests, then heiretsu's own.
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  heiretsu::registerHeiretsuPasses();
  heiretsu::registerCompilePipeline();
}
