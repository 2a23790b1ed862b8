//===- Pipeline.cpp - the compile pipeline --------------------------------===//

#include "compiler/transforms/Pipeline.h"
#include "compiler/transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"

namespace heiretsu {

void buildCompilePipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options) {
  ShardPropagationPassOptions shard;
  shard.sequenceParallel = options.sequenceParallel;
  pm.addPass(createShardPropagationPass(shard));
  InsertCollectivesPassOptions insert;
  insert.sequenceParallel = options.sequenceParallel;
  pm.addPass(createInsertCollectivesPass(insert));
  StageCutsPassOptions cuts;
  cuts.stageLayers = options.stageLayers;
  cuts.virtualStages = options.virtualStages;
  pm.addPass(createStageCutsPass(cuts));
  pm.addPass(createMoeDispatchPass());
  LowerToPlanPassOptions lower;
  lower.microbatches = options.microbatches;
  pm.addPass(createLowerToPlanPass(lower));
  mlir::OpPassManager &program = pm.nest<plan_ir::ProgramOp>();
  AutodiffPassOptions autodiff;
  autodiff.splitBackward = options.schedule == "zb-h1"; // its W passes run apart
  program.addPass(createAutodiffPass(autodiff));
  program.addPass(createOptimizerPass());
  if (options.zero == 1) {
    Zero1PassOptions zero;
    zero.bucketBytes = options.bucketBytes;
    program.addPass(createZero1Pass(zero));
  } else {
    DataParallelPassOptions buckets;
    buckets.bucketBytes = options.bucketBytes;
    program.addPass(createDataParallelPass(buckets));
  }
  // Activations in 16 bits once every kernel and collective of the step is there.
  PrecisionPassOptions precision;
  precision.precision = options.precision;
  program.addPass(createPrecisionPass(precision));
  SchedulePassOptions schedule;
  schedule.schedule = options.schedule;
  program.addPass(createSchedulePass(schedule));
  // The schedule says how many microbatches' activations the stage keeps.
  program.addPass(createPlanMemoryPass());
  // Every rank's collectives must match before anything runs.
  pm.addPass(createCheckCollectivesPass());
}

void buildDecodePipeline(mlir::OpPassManager &pm) {
  pm.addPass(createMoeDispatchPass());
  pm.addPass(createLowerToPlanPass());
  mlir::OpPassManager &program = pm.nest<plan_ir::ProgramOp>();
  program.addPass(createSchedulePass());
  program.addPass(createPlanMemoryPass());
}

void registerCompilePipeline() {
  mlir::PassPipelineRegistration<CompilePipelineOptions>(
      "heiretsu-compile-pipeline",
      "What `heiretsu compile` runs: graph module (with dist.mesh @world) -> "
      "memory-planned, scheduled, checked plan.programs",
      buildCompilePipeline);
  mlir::PassPipelineRegistration<>(
      "heiretsu-decode-pipeline",
      "What `heiretsu compile` runs for a decode program (a graph module built with "
      "decode, one rank): memory-planned plan.program, forward only",
      buildDecodePipeline);
}

} // namespace heiretsu
