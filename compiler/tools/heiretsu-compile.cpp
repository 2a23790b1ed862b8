//===- heiretsu-compile.cpp - the compiler behind `heiretsu compile` ------===//
//
// Reads a model spec, builds the graph dialect and emits what --emit asks for.
// Exit codes follow DESIGN.md §1: 2 for bad input (spec, flags) with one message
// naming the file, line and column; 1 for anything else.
//
//===----------------------------------------------------------------------===//

#include "compiler/RegisterAll.h"
#include "compiler/emit/PlanEmitter.h"
#include "compiler/transforms/Passes.h"
#include "runtime/plan/plan.h"
#include "compiler/frontend/ModelBuilder.h"
#include "compiler/frontend/Parser.h"
#include "runtime/cli/CompileOptions.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <csignal>
#include <cstdio>
#include <sys/stat.h>

using namespace heiretsu;

namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitFailure = 1;

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

void printSummary(llvm::raw_ostream &os, const frontend::ModelSummary &s,
                  const cli::CompileOptions &opts) {
  os << "model " << s.name << "\n";
  os << "  parameters   " << withCommas(s.paramCount) << " (" << s.params.size()
     << " tensors)\n";
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
  // Layers repeat: print layer 0 in full and only count the others.
  int64_t elided = 0;
  for (const frontend::ParamSummary &p : s.params) {
    llvm::StringRef name = p.name;
    if (name.starts_with("layers.") && !name.starts_with("layers.0.")) {
      ++elided;
      continue;
    }
    os << "    " << llvm::left_justify(p.name, 28) << " " << dims(p.shape) << "\n";
  }
  if (elided)
    os << "    (" << elided << " more in layers 1.." << s.layers - 1
       << ", shaped like layer 0's)\n";
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

/// Lowers the graph to a memory-planned plan.program and writes it: as IR
/// (plan-text) or as the runtime's plan file in the -o directory (plan).
int emitPlanOutputs(mlir::ModuleOp module, const cli::CompileOptions &opts) {
  std::string unsupported;
  if (opts.pp > 1 || opts.ep > 1)
    unsupported = "pipeline and expert parallelism (pp, ep > 1) are not built yet; "
                  "data and tensor parallelism (--dp, --tp) are";
  else if (opts.precision != "fp32")
    unsupported = "--precision " + opts.precision + " needs the CUDA backend, not built yet";
  else if (opts.recompute != "none")
    unsupported = "--recompute " + opts.recompute + " is not built yet";
  if (!unsupported.empty()) {
    std::fprintf(stderr, "heiretsu compile: error: --emit %s: %s\n", opts.emit.c_str(),
                 unsupported.c_str());
    return kExitFailure;
  }
  mlir::PassManager pm(module.getContext());
  LowerToPlanPassOptions lowerOptions;
  lowerOptions.microbatches = opts.microbatches;
  pm.addPass(createLowerToPlanPass(lowerOptions));
  mlir::OpPassManager &program = pm.nest<plan_ir::ProgramOp>();
  program.addPass(createAutodiffPass());
  program.addPass(createOptimizerPass());
  if (opts.dp > 1 && opts.zero == 1) {
    Zero1PassOptions zero;
    zero.dp = opts.dp;
    program.addPass(createZero1Pass(zero));
  } else if (opts.dp > 1) {
    DataParallelPassOptions buckets;
    buckets.bucketBytes = opts.bucket_mb << 20;
    program.addPass(createDataParallelPass(buckets));
  }
  program.addPass(createPlanMemoryPass());
  // Every rank's collectives must match before anything runs.
  CheckCollectivesPassOptions check;
  check.dp = opts.dp;
  check.tp = opts.tp;
  check.pp = opts.pp;
  check.ep = opts.ep;
  pm.addPass(createCheckCollectivesPass(check));
  if (mlir::failed(pm.run(module)))
    return kExitFailure; // the diagnostic names the op and the reason
  auto programs = module.getOps<plan_ir::ProgramOp>();
  plan_ir::ProgramOp programOp = *programs.begin();
  if (opts.emit == "plan-text")
    return writeText(opts, [&](llvm::raw_ostream &os) { os << module << "\n\n"; });
  EmitOptions emit;
  emit.mesh = {static_cast<int32_t>(opts.dp), static_cast<int32_t>(opts.pp),
               static_cast<int32_t>(opts.tp), static_cast<int32_t>(opts.ep)};
  std::vector<uint8_t> bytes;
  if (mlir::failed(emitPlan(programOp, emit, bytes)))
    return kExitFailure;
  if (auto err = writePlanFile(opts.output, 0, bytes)) {
    std::fprintf(stderr, "heiretsu compile: error: %s\n", err->c_str());
    return kExitFailure;
  }
  std::printf("wrote %s/%s: %zu bytes; arena %lld bytes (parameters and optimizer state "
              "%lld, activations peak %lld)\n",
              opts.output.c_str(), plan::ProgramFileName(0).c_str(), bytes.size(),
              static_cast<long long>(*programOp.getArenaBytes()),
              static_cast<long long>(*programOp.getParamBytes()),
              static_cast<long long>(*programOp.getActivationBytes()));
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

  if (opts.tp > 1) {
    // Tensor parallelism: shardings and their collectives on the graph. A model
    // that does not split over this tp is refused here, naming the value.
    mlir::PassManager pm(&ctx);
    ShardPropagationPassOptions shard;
    shard.tp = opts.tp;
    shard.dp = opts.dp;
    shard.sequenceParallel = opts.sequence_parallel;
    pm.addPass(createShardPropagationPass(shard));
    InsertCollectivesPassOptions insert;
    insert.sequenceParallel = opts.sequence_parallel;
    pm.addPass(createInsertCollectivesPass(insert));
    if (mlir::failed(pm.run(*module))) {
      std::fprintf(stderr, "%s: error: this model cannot be split over --tp %lld "
                           "(diagnostic above)\n", path.c_str(),
                   static_cast<long long>(opts.tp));
      return kExitBadInput;
    }
  }

  if (opts.emit == "plan" || opts.emit == "plan-text")
    return emitPlanOutputs(*module, opts);

  return writeText(opts, [&](llvm::raw_ostream &os) {
    if (opts.emit == "summary")
      printSummary(os, summary, opts);
    else
      os << *module << "\n\n"; // byte-identical to heiretsu-opt output
  });
}
