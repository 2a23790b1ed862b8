//===- PlanEmitter.h - plan.program -> plan file ---------------------------===//

#ifndef HEIRETSU_COMPILER_EMIT_PLANEMITTER_H
#define HEIRETSU_COMPILER_EMIT_PLANEMITTER_H

#include "dialects/plan/PlanDialect.h"

#include <cstdint>
#include <string>
#include <vector>

namespace heiretsu {

struct EmitOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  /// The model card (plan.fbs, Plan.spec ... config): the spec's text and file,
  /// the tokenizer, and the resolved facts (emitted in name order).
  std::string spec, specFile, tokenizer;
  std::vector<std::pair<std::string, std::string>> config;
};

/// Serializes a memory-planned, scheduled program into the runtime's plan format
/// (a size-prefixed FlatBuffer): its stage, the mesh of its module's
/// `dist.mesh @world` (programs = pp), buffers, parameters with their splits,
/// units and schedule, then its checksum trailer (runtime/plan/plan.h). Fails (with a diagnostic) on a program without offsets, a
/// schedule or a mesh, and on one the runtime's verifier refuses.
mlir::LogicalResult emitPlan(plan_ir::ProgramOp program, const EmitOptions &options,
                             std::vector<uint8_t> &bytes);

/// Writes `bytes` as file `file` of plan directory `dir` (created if needed; a
/// program's name is plan::ProgramFileName, the decode program's
/// plan::kDecodeFileName), through a temporary file and a rename. Returns an error
/// message on failure.
std::optional<std::string> writePlanFile(const std::string &dir, const std::string &file,
                                         const std::vector<uint8_t> &bytes);

} // namespace heiretsu

#endif // HEIRETSU_COMPILER_EMIT_PLANEMITTER_H
