//===- Pipeline.h - the compile pipeline, built in one place -------------===//
//
// `heiretsu compile` and `heiretsu-opt --heiretsu-compile-pipeline=...` run the
// same passes because both build them here: from the frontend's graph module
// (with its `dist.mesh @world`, which every pass reads for dp, pp, tp and ep) to
// memory-planned, scheduled, collective-checked plan.programs. Only choices that
// are not the mesh are options.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_TRANSFORMS_PIPELINE_H
#define HEIRETSU_COMPILER_TRANSFORMS_PIPELINE_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

#include <string>

namespace heiretsu {

struct CompilePipelineOptions : mlir::PassPipelineOptions<CompilePipelineOptions> {
  Option<bool> sequenceParallel{*this, "sequence-parallel",
                                llvm::cl::desc("split the norms' and residual stream's "
                                               "tokens over tp"),
                                llvm::cl::init(false)};
  Option<int64_t> zero{*this, "zero",
                       llvm::cl::desc("ZeRO stage: 0 (bucketed dp all-reduce) or 1 "
                                      "(optimizer state sharded over dp)"),
                       llvm::cl::init(0)};
  Option<int64_t> bucketBytes{*this, "bucket-bytes",
                              llvm::cl::desc("most gradient bytes per dp bucket"),
                              llvm::cl::init(26214400)};
  Option<int64_t> microbatches{*this, "microbatches",
                               llvm::cl::desc("gradient-accumulation microbatches per step"),
                               llvm::cl::init(1)};
  Option<std::string> schedule{*this, "schedule",
                               llvm::cl::desc("the pipeline schedule (heiretsu-schedule)"),
                               llvm::cl::init("1f1b")};
  Option<std::string> stageLayers{*this, "stage-layers",
                                  llvm::cl::desc("layers per pipeline stage, e.g. 3,5,4 "
                                                 "(heiretsu-stage-cuts; default balanced)"),
                                  llvm::cl::init("")};
  Option<int64_t> virtualStages{*this, "virtual-stages",
                                llvm::cl::desc("model chunks per pipeline stage"),
                                llvm::cl::init(1)};
  Option<std::string> precision{*this, "precision",
                                llvm::cl::desc("activation storage: fp32, bf16 or fp16 "
                                               "(heiretsu-precision)"),
                                llvm::cl::init("fp32")};
};

/// Adds the compile pipeline to `pm` (anchored on builtin.module):
///   heiretsu-shard-propagation, heiretsu-insert-collectives (no-ops at tp = 1),
///   heiretsu-stage-cuts (a no-op at pp = 1), heiretsu-lower-to-plan, then per
///   plan.program heiretsu-autodiff, heiretsu-optimizer, heiretsu-zero1 (zero = 1)
///   or heiretsu-dp-grad-reduce (no-ops at dp = 1), heiretsu-precision (a no-op at
///   fp32), heiretsu-schedule,
///   heiretsu-plan-memory; then heiretsu-check-collectives.
void buildCompilePipeline(mlir::OpPassManager &pm, const CompilePipelineOptions &options);

/// Adds the decode pipeline (docs/architecture.md, "Sampling") to `pm`: for a graph
/// module built with BuildOptions::decode on one rank, heiretsu-moe-dispatch,
/// heiretsu-lower-to-plan, then heiretsu-schedule and heiretsu-plan-memory. No
/// autodiff and no optimizer: the program's only instructions are the forward's.
void buildDecodePipeline(mlir::OpPassManager &pm);

/// Registers `heiretsu-compile-pipeline` and `heiretsu-decode-pipeline` (for
/// heiretsu-opt).
void registerCompilePipeline();

} // namespace heiretsu

#endif // HEIRETSU_COMPILER_TRANSFORMS_PIPELINE_H
