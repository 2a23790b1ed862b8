//===- heiretsu-compile.cpp - the compiler behind `heiretsu compile` ------===//
//
// Reads a model spec, builds the graph dialect (with the mesh of --dp/--pp/--tp/--ep
// as `dist.mesh @world`), runs the compile pipeline (compiler/transforms/Pipeline.h,
// at every --emit) and emits what --emit asks for: the plan directory (one
// program-<stage>.hplan per plan.program; the default with -o), or the frontend's
// module (mlir), the compiled module (plan-text) or a summary, to -o or stdout.
// Exit codes: 2 for bad input (spec, flags, a model that does not split, flag
// values not built yet) with one message naming the file, line and column or the
// value; 1 for anything else.
//
//===----------------------------------------------------------------------===//

#include "compiler/RegisterAll.h"
#include "compiler/emit/PlanEmitter.h"
#include "compiler/transforms/Passes.h"
#include "compiler/transforms/Pipeline.h"
#include "runtime/plan/plan.h"
#include "compiler/frontend/ModelBuilder.h"
#include "compiler/frontend/Parser.h"
#include "runtime/base/error.h"
#include "runtime/cli/CompileOptions.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <csignal>
#include <map>
#include <filesystem>
#include <cstdio>
#include <sys/stat.h>

using namespace heiretsu;

namespace {

using heiretsu::kExitBadInput; // exit codes: runtime/base/error.h, the one place
using heiretsu::kExitFailure;

/// `examples/gpt-tiny` names `examples/gpt-tiny.hr` when the former is missing.
std::string resolveSpecPath(const std::string &path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 && stat((path + ".hr").c_str(), &st) == 0)
    return path + ".hr";
  return path;
}

std::string dims(const std::vector<int64_t> &shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

std::string withCommas(int64_t n) {
  std::string s = std::to_string(n), out;
  int count = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (count && count % 3 == 0)
      out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return out;
}

/// "layer 3", "layers 1..11", "layers 1, 3", "layers 1, 3, ..., 11".
std::string layerList(const std::vector<int64_t> &layers) {
  if (layers.size() == 1)
    return "layer " + std::to_string(layers[0]);
  bool progression = true;
  int64_t step = layers[1] - layers[0];
  for (size_t i = 1; i < layers.size(); ++i)
    progression &= layers[i] - layers[i - 1] == step;
  std::string s = "layers ";
  if (progression && step == 1 && layers.size() > 2)
    return s + std::to_string(layers.front()) + ".." + std::to_string(layers.back());
  if (progression && layers.size() > 4)
    return s + std::to_string(layers[0]) + ", " + std::to_string(layers[1]) + ", ..., " +
           std::to_string(layers.back());
  for (size_t i = 0; i < layers.size(); ++i)
    s += (i ? ", " : "") + std::to_string(layers[i]);
  return s;
}

void printSummary(llvm::raw_ostream &os, const frontend::ModelSummary &s,
                  const cli::CompileOptions &opts) {
  os << "model " << s.name << "\n";
  // A mixture of experts: each token runs top_k of a moe call's experts.
  std::map<std::pair<int64_t, int64_t>, std::vector<int64_t>> moeLayers; // (top_k, experts)
  for (const frontend::ParamSummary &p : s.params) {
    std::vector<int64_t> &at = moeLayers[{p.topK, p.experts}];
    if (p.experts && (at.empty() || at.back() != p.layer))
      at.push_back(p.layer);
  }
  moeLayers.erase({0, 0});
  if (moeLayers.empty()) {
    os << "  parameters   " << withCommas(s.paramCount) << " (" << s.params.size()
       << " tensors)\n";
  } else {
    os << "  parameters   " << withCommas(s.paramCount) << " total (" << s.params.size()
       << " tensors)\n";
    std::string how;
    for (auto &[kind, layers] : moeLayers) {
      bool outside = !layers.empty() && layers.front() < 0;
      std::vector<int64_t> inBlock(layers.begin() + (outside ? 1 : 0), layers.end());
      std::string where = inBlock.empty() ? "" : "in " + layerList(inBlock);
      if (outside)
        where += std::string(where.empty() ? "" : " and ") + "outside the block";
      how += std::string(how.empty() ? "" : "; ") + "top " + std::to_string(kind.first) +
             " of " + std::to_string(kind.second) + " experts " + where;
    }
    os << "  active       " << withCommas(s.activeParamCount)
       << " per token (the expert weights count top_k / experts: " << how << ")\n";
  }
  os << "  layers       " << s.layers << "\n";
  os << "  hyperparams ";
  for (const auto &[name, value] : s.hyperparameters)
    os << " " << name << "=" << value;
  os << "\n";
  os << "  batch        micro-batch " << s.batch << " x seq " << s.seq
     << ", microbatches " << opts.microbatches << ", global batch "
     << opts.global_batch << " sequences\n";
  os << "  mesh         dp=" << opts.dp << " tp=" << opts.tp << " pp=" << opts.pp
     << " ep=" << opts.ep << " (world " << opts.world_size() << ")\n";
  os << "  parameter shapes:\n";
  // Layers repeat: each group of identically shaped layers (every K alternates
  // them) prints its first layer in full and counts the others.
  using Shape = std::vector<std::pair<std::string, std::vector<int64_t>>>;
  std::vector<Shape> shapes(s.layers);
  for (const frontend::ParamSummary &p : s.params)
    if (p.layer >= 0 && p.layer < s.layers) {
      std::string prefix = "layers." + std::to_string(p.layer) + ".";
      llvm::StringRef name = p.name;
      shapes[p.layer].emplace_back(name.starts_with(prefix) ? name.drop_front(prefix.size()).str()
                                                            : p.name,
                                   p.shape);
    }
  std::vector<std::vector<int64_t>> groups; // layers, by first layer
  for (int64_t l = 0; l < s.layers; ++l) {
    auto it = llvm::find_if(groups, [&](const auto &g) { return shapes[g[0]] == shapes[l]; });
    if (it == groups.end())
      groups.push_back({l});
    else
      it->push_back(l);
  }
  auto print = [&](const frontend::ParamSummary &p) {
    os << "    " << llvm::left_justify(p.name, 28) << " " << dims(p.shape) << "\n";
  };
  bool layersPrinted = false;
  for (const frontend::ParamSummary &p : s.params) {
    if (p.layer < 0) {
      print(p);
      continue;
    }
    if (layersPrinted)
      continue;
    layersPrinted = true;
    for (const std::vector<int64_t> &group : groups) {
      for (const frontend::ParamSummary &q : s.params)
        if (q.layer == group[0])
          print(q);
      if (group.size() > 1)
        os << "    (" << shapes[group[0]].size() * (group.size() - 1) << " more in "
           << layerList({group.begin() + 1, group.end()}) << ", shaped like layer "
           << group[0] << "'s)\n";
    }
  }
}

/// Writes text output to -o (stdout without it).
int writeText(const cli::CompileOptions &opts,
              llvm::function_ref<void(llvm::raw_ostream &)> write) {
  std::string outPath = opts.output.empty() ? "-" : opts.output;
  std::error_code ec;
  llvm::ToolOutputFile out(outPath, ec, llvm::sys::fs::OF_TextWithCRLF);
  if (ec) {
    std::fprintf(stderr, "heiretsu compile: error: cannot write '%s': %s\n",
                 outPath.c_str(), ec.message().c_str());
    return kExitBadInput;
  }
  write(out.os());
  out.os().flush();
  // A reader that closed the pipe early (`| head`) wanted no more: not an error.
  if (out.os().has_error() && out.os().error() == std::errc::broken_pipe) {
    out.os().clear_error();
    out.keep();
    return 0;
  }
  out.keep();
  return 0;
}

/// Runs the compile pipeline (compiler/transforms/Pipeline.h, the one
/// heiretsu-opt's --heiretsu-compile-pipeline runs) on `module`. A model that does
/// not split over the mesh's tp fails in the sharding passes: bad input (exit 2).
int runPipeline(mlir::ModuleOp module, const cli::CompileOptions &opts,
                const std::string &path) {
  mlir::PassManager pm(module.getContext());
  CompilePipelineOptions pipeline;
  pipeline.sequenceParallel = opts.sequence_parallel;
  pipeline.zero = opts.zero;
  pipeline.bucketBytes = opts.bucket_mb << 20;
  pipeline.microbatches = opts.microbatches;
  pipeline.schedule = opts.schedule;
  std::string layers;
  for (int64_t n : opts.stage_layers)
    layers += (layers.empty() ? "" : ",") + std::to_string(n);
  pipeline.stageLayers = layers;
  pipeline.virtualStages = opts.virtual_stages;
  pipeline.precision = opts.precision;
  buildCompilePipeline(pm, pipeline);
  struct FailedPass : mlir::PassInstrumentation {
    std::string *name;
    explicit FailedPass(std::string *name) : name(name) {}
    void runAfterPassFailed(mlir::Pass *pass, mlir::Operation *) override {
      if (name->empty())
        *name = pass->getArgument().str();
    }
  };
  std::string failed;
  pm.addInstrumentation(std::make_unique<FailedPass>(&failed));
  if (mlir::succeeded(pm.run(module)))
    return 0;
  if (failed == "heiretsu-shard-propagation" || failed == "heiretsu-insert-collectives") {
    std::fprintf(stderr, "%s: error: this model cannot be split over --tp %lld "
                         "(diagnostic above)\n", path.c_str(), static_cast<long long>(opts.tp));
    return kExitBadInput;
  }
  if (failed == "heiretsu-moe-dispatch") {
    std::fprintf(stderr, "%s: error: this model cannot be split over --ep %lld "
                         "(diagnostic above)\n", path.c_str(), static_cast<long long>(opts.ep));
    return kExitBadInput;
  }
  return kExitFailure; // the diagnostic names the op and the reason
}

/// Writes every plan.program of the compiled module as program-<stage>.hplan of
/// the -o directory.
int writePlanDirectory(mlir::ModuleOp module, const cli::CompileOptions &opts,
                       const EmitOptions &emit) {
  for (plan_ir::ProgramOp programOp : module.getOps<plan_ir::ProgramOp>()) {
    std::vector<uint8_t> bytes;
    if (mlir::failed(emitPlan(programOp, emit, bytes)))
      return kExitFailure;
    int32_t stage = static_cast<int32_t>(programOp.getStage());
    if (auto err = writePlanFile(opts.output, plan::ProgramFileName(stage), bytes)) {
      std::fprintf(stderr, "heiretsu compile: error: %s\n", err->c_str());
      return kExitFailure;
    }
    std::printf("wrote %s/%s: %zu bytes; arena %lld bytes (parameters and optimizer state "
                "%lld, activations peak %lld)\n",
                opts.output.c_str(), plan::ProgramFileName(stage).c_str(), bytes.size(),
                static_cast<long long>(*programOp.getArenaBytes()),
                static_cast<long long>(*programOp.getParamBytes()),
                static_cast<long long>(*programOp.getActivationBytes()));
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::fputs(cli::CompileUsage(), stdout);
    return 0;
  }
  // Writes to a closed pipe fail with EPIPE (handled where output is written)
  // instead of killing the compiler with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  cli::CompileOptions opts;
  if (auto err = cli::ParseCompileOptions(args, &opts)) {
    std::fprintf(stderr, "heiretsu compile: error: %s\n%s", err->c_str(),
                 cli::CompileUsage());
    return kExitBadInput;
  }
  // The plan directory: a path that exists must be a directory (checked before the
  // slow part, and a user's mistake, so exit 2).
  if (opts.emit == "plan") {
    struct stat st;
    if (stat(opts.output.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
      std::fprintf(stderr,
                   "heiretsu compile: error: -o %s: exists and is not a directory (--emit "
                   "plan writes a plan directory; give a new path or a directory)\n",
                   opts.output.c_str());
      return kExitBadInput;
    }
  }
  std::string path = resolveSpecPath(opts.spec);
  std::string text;
  if (auto err = frontend::readSpecFile(path, text)) {
    std::fprintf(stderr, "%s\n", frontend::formatError(path, *err).c_str());
    return kExitBadInput;
  }
  frontend::Spec spec;
  if (auto err = frontend::parseSpec(text, spec)) {
    std::fprintf(stderr, "%s\n", frontend::formatError(path, *err).c_str());
    return kExitBadInput;
  }

  mlir::DialectRegistry registry;
  registerAllDialects(registry);
  mlir::MLIRContext ctx(registry);
  ctx.disableMultithreading();
  // Diagnostics from passes point at the spec: print them as file:line:col.
  mlir::ScopedDiagnosticHandler diagnostics(&ctx, [](mlir::Diagnostic &diag) {
    std::string where;
    if (auto loc = llvm::dyn_cast<mlir::FileLineColLoc>(diag.getLocation()))
      where = (loc.getFilename().str() + ":" + std::to_string(loc.getLine()) + ":" +
               std::to_string(loc.getColumn()) + ": ");
    const char *kind = diag.getSeverity() == mlir::DiagnosticSeverity::Error ? "error"
                       : diag.getSeverity() == mlir::DiagnosticSeverity::Warning
                           ? "warning"
                           : "note";
    llvm::errs() << where << kind << ": " << diag.str() << "\n";
    return mlir::success();
  });
  mlir::OwningOpRef<mlir::ModuleOp> module;
  frontend::ModelSummary summary;
  frontend::BuildOptions build;
  build.batch = opts.micro_batch_size;
  build.seq = opts.seq;
  build.dp = opts.dp;
  build.pp = opts.pp;
  build.tp = opts.tp;
  build.ep = opts.ep;
  if (auto err = frontend::buildModel(ctx, path, spec, build, module, summary)) {
    std::fprintf(stderr, "%s\n", frontend::formatError(path, *err).c_str());
    return kExitBadInput;
  }
  if (mlir::failed(mlir::verify(*module))) {
    // The frontend must never emit invalid IR: this is a compiler bug.
    std::fprintf(stderr, "%s: internal error: the graph built for this spec does "
                         "not verify (diagnostic above)\n", path.c_str());
    return kExitFailure;
  }
  // The spec's warnings, at every --emit; --strict makes them errors.
  for (const frontend::Error &warning : summary.warnings) {
    if (opts.strict) {
      frontend::Error err = warning;
      err.message += " [--strict]";
      std::fprintf(stderr, "%s\n", frontend::formatError(path, err).c_str());
    } else {
      std::fprintf(stderr, "%s\n", frontend::formatWarning(path, warning).c_str());
    }
  }
  if (opts.strict && !summary.warnings.empty())
    return kExitBadInput;
  // Requests the model cannot take, then what is parsed but not built: refused at
  // every --emit, naming the value.
  if (opts.pp > summary.layers) {
    std::fprintf(stderr, "heiretsu compile: error: --pp %lld is more pipeline stages than "
                         "the %lld layers of model '%s': use --pp %lld or fewer\n",
                 static_cast<long long>(opts.pp), static_cast<long long>(summary.layers),
                 summary.name.c_str(), static_cast<long long>(summary.layers));
    return kExitBadInput;
  }
  if (opts.pp * opts.virtual_stages > summary.layers) {
    std::fprintf(stderr, "heiretsu compile: error: --pp %lld x --virtual-stages %lld is %lld "
                         "model chunks, more than the %lld layers of model '%s'\n",
                 static_cast<long long>(opts.pp), static_cast<long long>(opts.virtual_stages),
                 static_cast<long long>(opts.pp * opts.virtual_stages),
                 static_cast<long long>(summary.layers), summary.name.c_str());
    return kExitBadInput;
  }
  int64_t stageLayers = 0;
  for (int64_t n : opts.stage_layers)
    stageLayers += n;
  if (!opts.stage_layers.empty() && stageLayers != summary.layers) {
    std::fprintf(stderr, "heiretsu compile: error: --stage-layers covers %lld layers but "
                         "model '%s' has %lld\n", static_cast<long long>(stageLayers),
                 summary.name.c_str(), static_cast<long long>(summary.layers));
    return kExitBadInput;
  }
  if (auto err = cli::CheckBuilt(opts)) {
    std::fprintf(stderr, "heiretsu compile: error: %s\n", err->c_str());
    return kExitBadInput;
  }

  // The whole pipeline runs at every --emit, so each refuses what the plan would.
  // --emit mlir and summary show the frontend's module (the pipeline's input).
  bool lowered = opts.emit == "plan" || opts.emit == "plan-text";
  mlir::OwningOpRef<mlir::ModuleOp> compiled = lowered ? module.release() : (*module).clone();
  if (int rc = runPipeline(*compiled, opts, path))
    return rc;
  if (opts.emit == "plan") {
    // The decode program (docs/architecture.md, "Sampling"): the same spec built
    // for one rank, one sequence and one token, with KV caches. A spec whose decode
    // program does not build still trains: a warning, and no decode.hplan.
    frontend::BuildOptions decodeBuild;
    decodeBuild.batch = 1;
    decodeBuild.seq = 1;
    decodeBuild.decode = true;
    mlir::OwningOpRef<mlir::ModuleOp> decodeModule;
    frontend::ModelSummary decodeSummary;
    bool decodes = true;
    if (auto err = frontend::buildModel(ctx, path, spec, decodeBuild, decodeModule,
                                        decodeSummary)) {
      std::fprintf(stderr, "%s\n", frontend::formatError(path, *err).c_str());
      decodes = false;
    } else {
      mlir::PassManager decodePm(&ctx);
      buildDecodePipeline(decodePm);
      decodes = mlir::succeeded(mlir::verify(*decodeModule)) &&
                mlir::succeeded(decodePm.run(*decodeModule));
    }
    if (!decodes)
      std::fprintf(stderr, "%s: warning: its decode program does not compile (diagnostic "
                           "above): the plan has no %s, so it cannot be sampled\n",
                   path.c_str(), plan::kDecodeFileName);
    EmitOptions emit;
    emit.spec = text;
    // A checkpoint stores the name as one word (checkpoint.h): blanks become '_'.
    emit.specFile = std::filesystem::path(path).filename().string();
    for (char &c : emit.specFile)
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
        c = '_';
    emit.tokenizer = summary.tokenizer;
    // One entry per name: an architecture fact wins over a hyperparameter of its name.
    std::map<std::string, std::string> card(summary.hyperparameters.begin(),
                                            summary.hyperparameters.end());
    for (const auto &fact : summary.architecture)
      card[fact.first] = fact.second;
    emit.config.assign(card.begin(), card.end());
    if (int rc = writePlanDirectory(*compiled, opts, emit))
      return rc;
    if (!decodes) {  // nor a stale one from an earlier compile into this directory
      std::error_code ec;
      std::filesystem::remove(opts.output + "/" + plan::kDecodeFileName, ec);
      return 0;
    }
    for (plan_ir::ProgramOp programOp : decodeModule->getOps<plan_ir::ProgramOp>()) {
      std::vector<uint8_t> bytes;
      if (mlir::failed(emitPlan(programOp, emit, bytes)))
        return kExitFailure;
      if (auto err = writePlanFile(opts.output, plan::kDecodeFileName, bytes)) {
        std::fprintf(stderr, "heiretsu compile: error: %s\n", err->c_str());
        return kExitFailure;
      }
      std::printf("wrote %s/%s: %zu bytes; arena %lld bytes (the decode program: one "
                  "token a run, with KV caches)\n",
                  opts.output.c_str(), plan::kDecodeFileName, bytes.size(),
                  static_cast<long long>(*programOp.getArenaBytes()));
    }
    return 0;
  }
  return writeText(opts, [&](llvm::raw_ostream &os) {
    if (opts.emit == "summary")
      printSummary(os, summary, opts);
    else // byte-identical to heiretsu-opt output
      os << (lowered ? *compiled : *module) << "\n\n";
  });
}
