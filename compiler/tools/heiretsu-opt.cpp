//===- heiretsu-opt.cpp - mlir-opt with heiretsu's dialects and passes ----===//

#include "compiler/RegisterAll.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  heiretsu::registerAllDialects(registry);
  heiretsu::registerAllPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "heiretsu optimizer driver\n", registry));
}
