//===- ModelBuilder.h - spec AST -> graph dialect ---------------------------===//
//
// Gives the language its meaning: evaluates hyperparameters, checks them (with
// Megatron-style messages naming the values), and emits one `func.func @forward`
// of graph ops whose parameters carry logical names, and the module's
// `dist.mesh @world` (from BuildOptions, also when every axis is 1). See
// docs/language.md.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_FRONTEND_MODELBUILDER_H
#define HEIRETSU_COMPILER_FRONTEND_MODELBUILDER_H

#include "compiler/frontend/AST.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <map>
#include <string>
#include <vector>

namespace heiretsu::frontend {

struct BuildOptions {
  int64_t batch = 1; // sequences per microbatch on one rank
  int64_t seq = 0;   // tokens per sequence; 0 = the model's context
  // The device mesh, declared once as the module's `dist.mesh @world`, which
  // every pass reads.
  int64_t dp = 1, pp = 1, tp = 1, ep = 1;
  /// A decode program (docs/architecture.md, "Sampling"): @forward(tokens,
  /// position) returns the logits instead of the loss; learned positions and RoPE
  /// start at `position`, and each attention keeps a KV cache of the model's
  /// context. Its mesh must be one rank.
  bool decode = false;
};

struct ParamSummary {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  /// The layer of `block` that created it, or -1 outside the block.
  int64_t layer = -1;
  /// An expert weight of a `moe` call (w_up, w_gate, w_down; not the router):
  /// its experts and top_k. Both 0 for every other parameter.
  int64_t experts = 0, topK = 0;
};

struct ModelSummary {
  std::string name;
  int64_t layers = 0;
  int64_t batch = 0, seq = 0;
  int64_t paramCount = 0;
  /// Parameters a token's forward pass uses: every parameter but the expert
  /// weights, of which each moe call counts top_k / experts (its router fully).
  /// Equal to paramCount in a model without moe.
  int64_t activeParamCount = 0;
  std::vector<std::pair<std::string, std::string>> hyperparameters; // name, value
  std::vector<ParamSummary> params;
  /// The tokenizer the token ids belong to: the spec's `tokenizer = "byte"|"gpt2"`, or
  /// by the vocabulary (256: byte, 50257: gpt2), else empty.
  std::string tokenizer;
  /// How the graph is built, by name (docs/language.md, "The model card"): norm,
  /// act, positions, rope, head, attention_bias, mlp_bias, moe_layers... A fact
  /// that differs between layers reads "mixed".
  std::map<std::string, std::string> architecture;
  /// Mistakes that do not stop the build (docs/language.md, "Warnings"): a
  /// hyperparameter that nothing reads, at its assignment, in spec order.
  std::vector<Error> warnings;
};

/// Builds the graph module for `spec`. `file` names the spec in op locations.
/// Returns the first error; on success `module` and `summary` are filled.
std::optional<Error> buildModel(mlir::MLIRContext &ctx, const std::string &file,
                                const Spec &spec, const BuildOptions &options,
                                mlir::OwningOpRef<mlir::ModuleOp> &module,
                                ModelSummary &summary);

} // namespace heiretsu::frontend

#endif // HEIRETSU_COMPILER_FRONTEND_MODELBUILDER_H
