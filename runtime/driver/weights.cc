#include "runtime/driver/weights.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "runtime/base/error.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/cli/RunOptions.h"
#include "runtime/driver/card.h"
#include "runtime/data/shards.h"
#include "runtime/export/json.h"
#include "runtime/export/layout.h"
#include "runtime/export/llmc.h"
#include "runtime/export/model.h"
#include "runtime/export/safetensors.h"
#include "runtime/plan/plan.h"

namespace heiretsu::driver {

const char kExportUsage[] =
    "usage: heiretsu export SRC --format safetensors|llmc -o FILE [--seed S]\n"
    "       heiretsu export SRC --format safetensors|llmc --list\n"
    "\n"
    "Writes a model's weights in another tool's format. SRC is a checkpoint (a\n"
    "step_NNNNNNNN directory, or a --save-dir directory: its newest complete checkpoint)\n"
    "or a plan directory (the weights a run of seed S starts from; default 1337).\n"
    "  safetensors  Hugging Face names and layouts, GPT-2 (GPT2LMHeadModel) or Llama\n"
    "               (LlamaForCausalLM) by the model's architecture; config.json is\n"
    "               written beside FILE (from_pretrained loads FILE's directory)\n"
    "  llmc         llm.c's GPT-2 model file (gpt2_124M.bin's layout: version 3, fp32,\n"
    "               vocabulary padded to a multiple of 128)\n"
    "  --list       print the tensors (name, dtype, shape) that would be written\n";

const char kImportUsage[] =
    "usage: heiretsu import FILE --spec SPEC -o CKPT_DIR [--format safetensors|llmc] [--seed S]\n"
    "\n"
    "Reads weights (a safetensors file with Hugging Face GPT-2 or Llama names, or an\n"
    "llm.c GPT-2 model file; --format defaults to what FILE holds) into the parameters\n"
    "of SPEC and writes the checkpoint CKPT_DIR/step_00000000: step 0, zero AdamW\n"
    "moments, seed S (default 1337). `heiretsu run PLAN --resume CKPT_DIR` continues it\n"
    "on any layout and batch size of that spec (fine-tuning from those weights).\n";

namespace {

using weights::FileLayout;
using weights::FileTensor;
using weights::ModelCard;
using weights::Values;

// Digits grouped by thousands: 124,439,808.
std::string Grouped(int64_t n) {
  std::string s = std::to_string(n), out;
  const int lead = static_cast<int>(s.size() % 3);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (static_cast<int>(i) - lead) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Compiles SPEC for one rank into PLAN_DIR (CompileQuietly) and reads its card; false:
// the exit code is in *code (the compiler's own for a bad spec).
bool CompileCard(const std::string& compiler, const std::string& spec, const std::string& plan_dir,
                 ModelCard* card, int* code) {
  if ((*code = CompileQuietly(compiler, spec, plan_dir)) != 0) return false;
  std::vector<plan::LoadedPlan> programs;
  if (Status err = plan::LoadPlanDirectory(plan_dir, &programs)) {
    std::fprintf(stderr, "heiretsu: %s\n", err->message.c_str());
    *code = err->exit_code();
    return false;
  }
  *card = weights::CardOf(programs);
  return true;
}

int Fail(const char* command, const Error& err) {
  std::fprintf(stderr, "heiretsu: %s: %s\n", command, err.message.c_str());
  return err.exit_code();
}

Status ParseSeedFlag(const std::string& text, uint64_t* seed) {
  const bool digits = !text.empty() && text.size() <= 20 &&
                      text.find_first_not_of("0123456789") == std::string::npos;
  errno = 0;
  const unsigned long long v = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
  if (!digits || errno == ERANGE)
    return Error::BadInput("--seed: expected an integer in [0, 2^64), got '" + text + "'");
  *seed = v;
  return std::nullopt;
}

// The flags both commands share, parsed by one loop: `values` names the flags that
// take a value, `positional` gets the rest.
Status ParseFlags(const char* command, const std::vector<std::string>& args,
                  const std::vector<std::string>& value_flags, const std::vector<std::string>& bool_flags,
                  std::map<std::string, std::string>* values, std::vector<std::string>* positional) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (std::find(value_flags.begin(), value_flags.end(), a) != value_flags.end()) {
      if (i + 1 >= args.size()) return Error::BadInput(a + ": missing value");
      if (args[i + 1].empty()) return Error::BadInput(a + ": empty value");
      (*values)[a] = args[++i];
    } else if (std::find(bool_flags.begin(), bool_flags.end(), a) != bool_flags.end()) {
      (*values)[a] = "1";
    } else if (!a.empty() && a[0] == '-') {
      return Error::BadInput("unknown flag '" + a + "' (see 'heiretsu " + command + " --help')");
    } else {
      positional->push_back(a);
    }
  }
  return std::nullopt;
}

Status LayoutFor(const std::string& format, const ModelCard& card, FileLayout* layout) {
  return format == "llmc" ? weights::LlmcLayout(card, layout)
                          : weights::HuggingFaceLayout(card, layout);
}

void PrintList(const std::string& format, const FileLayout& layout) {
  int64_t values = 0;
  if (format == "llmc")
    std::printf("header: magic %d version %d maxT %d V %d L %d NH %d C %d Vp %d\n", weights::kLlmcMagic,
                weights::kLlmcVersionF32, layout.llmc_header[0], layout.llmc_header[1],
                layout.llmc_header[2], layout.llmc_header[3], layout.llmc_header[4],
                layout.llmc_header[5]);
  for (const FileTensor& t : layout.tensors) {
    std::printf("%s F32 %s\n", t.name.c_str(), weights::ShapeString(t.shape).c_str());
    values += t.numel();
  }
  std::printf("%zu tensors, %s values, %s bytes of float32 (%s layout)\n", layout.tensors.size(),
              Grouped(values).c_str(), Grouped(4 * values).c_str(), layout.description.c_str());
  if (format == "llmc")
    std::printf("file: %s bytes (the %lld-byte header and the tensors)\n",
                Grouped(weights::kLlmcHeaderBytes + 4 * values).c_str(),
                static_cast<long long>(weights::kLlmcHeaderBytes));
}

// config.json's path for a safetensors file: its directory's.
std::string ConfigPath(const std::string& file) {
  const std::filesystem::path dir = std::filesystem::path(file).parent_path();
  return (dir.empty() ? std::filesystem::path("config.json") : dir / "config.json").string();
}

}  // namespace

int ExportCommand(const std::vector<std::string>& args, const std::string& compiler) {
  const char* kCmd = "export";
  for (const std::string& a : args)
    if (a == "-h" || a == "--help") {
      std::fputs(kExportUsage, stdout);
      return 0;
    }
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
  if (Status err = ParseFlags(kCmd, args, {"--format", "-o", "--seed"}, {"--list"}, &flags, &positional))
    return Fail(kCmd, *err);
  if (positional.size() != 1)
    return Fail(kCmd, Error::BadInput(positional.empty() ? "a checkpoint or plan directory is required (see --help)"
                                                         : "one source directory, got '" + positional[1] + "' too"));
  const std::string src = positional[0];
  const std::string format = flags.count("--format") ? flags["--format"] : "";
  if (format != "safetensors" && format != "llmc")
    return Fail(kCmd, Error::BadInput(format.empty() ? "--format safetensors|llmc is required"
                                                     : "--format: expected safetensors or llmc, got '" + format + "'"));
  const bool list = flags.count("--list") > 0;
  const std::string out = flags.count("-o") ? flags["-o"] : "";
  if (list == !out.empty())
    return Fail(kCmd, Error::BadInput(list ? "--list writes nothing: leave out -o" : "-o FILE (or --list) is required"));

  const auto start = std::chrono::steady_clock::now();
  const bool from_plan = IsFile(src + "/" + plan::ProgramFileName(0));
  uint64_t seed = cli::RunOptions().seed;
  if (flags.count("--seed")) {
    if (!from_plan)
      return Fail(kCmd, Error::BadInput("--seed is for a plan directory; " + src +
                                        " is a checkpoint, whose values are what it holds"));
    if (Status err = ParseSeedFlag(flags["--seed"], &seed)) return Fail(kCmd, *err);
  }
  ModelCard card;
  std::string ckpt_dir, origin;
  checkpoint::Header header;
  TempDir tmp;
  if (from_plan) {
    std::vector<plan::LoadedPlan> programs;
    if (Status err = plan::LoadPlanDirectory(src, &programs)) return Fail(kCmd, *err);
    card = weights::CardOf(programs);
    origin = "plan " + src + ", seed " + std::to_string(seed) + "'s initial values";
  } else {
    if (Status err = tmp.Create("heiretsu-export")) return Fail(kCmd, *err);
    std::string spec_path;
    if (Status err = CheckpointSpec(src, tmp, &ckpt_dir, &header, &spec_path)) {
      struct stat st;
      if (::stat(src.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && err->bad_input() && ckpt_dir.empty())
        return Fail(kCmd, Error::BadInput(err->message + "; SRC must be a checkpoint or a plan directory"));
      return Fail(kCmd, *err);
    }
    const std::string name = std::filesystem::path(spec_path).filename().string();
    int code = 0;
    if (!CompileCard(compiler, spec_path, tmp.path() + "/plan", &card, &code)) {
      std::fprintf(stderr, "heiretsu: export: %s: its spec (%s) did not compile\n", ckpt_dir.c_str(),
                   name.c_str());
      return code;
    }
    origin = "checkpoint " + ckpt_dir + ", step " + std::to_string(header.step);
  }

  FileLayout layout;
  if (Status err = LayoutFor(format, card, &layout)) return Fail(kCmd, *err);
  if (list) {
    PrintList(format, layout);
    return 0;
  }

  Values values;
  if (from_plan) {
    weights::InitialValues(card, seed, &values);
  } else {
    weights::ZeroValues(card, &values);
    std::vector<checkpoint::Tensor> tensors;
    for (const weights::ParamInfo& p : card.params) {
      tensors.push_back({p.name, checkpoint::TensorKind::kValue, p.shape, values[p.name].data()});
      tensors.push_back({p.name, checkpoint::TensorKind::kExpAvg, p.shape, nullptr});
      tensors.push_back({p.name, checkpoint::TensorKind::kExpAvgSq, p.shape, nullptr});
    }
    if (Status err = checkpoint::LoadCheckpoint(ckpt_dir, card.model, tensors, &header))
      return Fail(kCmd, *err);
  }
  {
    // Like save_pretrained, the file's directory is made when missing.
    const std::filesystem::path parent = std::filesystem::path(out).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec) &&
        !std::filesystem::create_directories(parent, ec))
      return Fail(kCmd, Error::Failure(parent.string() + ": cannot create the directory: " + ec.message()));
  }
  int64_t bytes = 0;
  if (format == "llmc") {
    if (Status err = weights::WriteLlmc(out, layout, values, &bytes)) return Fail(kCmd, *err);
  } else {
    if (Status err = weights::WriteSafetensors(out, layout, values, &bytes)) return Fail(kCmd, *err);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t n = 0;
  for (const FileTensor& t : layout.tensors) n += t.numel();
  std::printf("wrote %s: %s (%s layout), %zu tensors, %s values, %s bytes, from %s (%.2f s)\n",
              out.c_str(), format.c_str(), layout.description.c_str(), layout.tensors.size(),
              Grouped(n).c_str(), Grouped(bytes).c_str(), origin.c_str(), seconds);
  if (format == "safetensors") {
    const std::string config_path = ConfigPath(out);
    const std::string config = weights::HuggingFaceConfig(card, layout);
    data::AtomicFile f;
    if (Status err = f.Open(config_path)) return Fail(kCmd, *err);
    if (Status err = f.Write(config.data(), static_cast<int64_t>(config.size()))) return Fail(kCmd, *err);
    if (Status err = f.Commit()) return Fail(kCmd, *err);
    std::printf("wrote %s: %s\n", config_path.c_str(),
                layout.family == weights::Family::kGpt2 ? "GPT2Config (GPT2LMHeadModel)"
                                                        : "LlamaConfig (LlamaForCausalLM)");
  }
  return 0;
}

namespace {

// Reads the safetensors file `f` into `values` by `layout`; warnings go to stderr.
Status ReadSafetensorsInto(const weights::SafetensorsFile& f, const ModelCard& card,
                           const FileLayout& layout, Values* values) {
  const std::string& path = f.file.path();
  // Hugging Face files name the same tensor with or without the base model's prefix
  // (GPT2LMHeadModel's "transformer.", LlamaForCausalLM's "model."), as
  // from_pretrained accepts both.
  const std::string prefix = layout.family == weights::Family::kGpt2 ? "transformer." : "model.";
  std::map<std::string, const weights::SafetensorsEntry*> by_name;
  for (const weights::SafetensorsEntry& e : f.entries) {
    const std::string canonical =
        e.name.rfind(prefix, 0) == 0 || e.name.rfind("lm_head.", 0) == 0 ? e.name : prefix + e.name;
    if (by_name.count(canonical))
      return Error::BadInput(path + ": tensors '" + by_name[canonical]->name + "' and '" + e.name +
                             "' are the same parameter (with and without '" + prefix + "')");
    by_name[canonical] = &e;
  }
  std::vector<float> buffer;
  for (const FileTensor& t : layout.tensors) {
    auto it = by_name.find(t.name);
    if (it == by_name.end())
      return Error::BadInput(path + ": tensor '" + t.name + "' " + weights::ShapeString(t.shape) +
                             " is missing; model '" + card.model + "' (" + layout.description +
                             " layout) needs it");
    const weights::SafetensorsEntry& e = *it->second;
    if (e.shape != t.shape)
      return Error::BadInput(path + ": tensor '" + e.name + "' has shape " + weights::ShapeString(e.shape) +
                             ", model '" + card.model + "' (" + layout.description + " layout) needs " +
                             weights::ShapeString(t.shape));
    if (Status err = weights::ReadSafetensorsTensor(f, e, &buffer)) return err;
    weights::Scatter(t, buffer.data(), values);
    by_name.erase(it);
  }
  for (const auto& [canonical, e] : by_name) {
    auto ends = [&](const std::string& suffix) {
      return canonical.size() >= suffix.size() &&
             canonical.compare(canonical.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool buffer_name = layout.family == weights::Family::kGpt2
                                 ? ends(".attn.bias") || ends(".attn.masked_bias")
                                 : ends(".rotary_emb.inv_freq");
    if (buffer_name) {
      std::fprintf(stderr, "heiretsu: import: warning: %s: skipping '%s' %s: a buffer, not a parameter\n",
                   path.c_str(), e->name.c_str(), weights::ShapeString(e->shape).c_str());
      continue;
    }
    if (canonical == "lm_head.weight" && card.Config("head") == "tied") {
      // Some writers keep the tied head's copy: it must be the embedding.
      const FileTensor* wte = nullptr;
      for (const FileTensor& t : layout.tensors)
        if (t.pieces.size() == 1 && t.pieces[0].param == "wte") wte = &t;
      std::vector<float> head, embedding;
      if (Status err = weights::ReadSafetensorsTensor(f, *e, &head)) return err;
      embedding.resize(static_cast<size_t>(wte->numel()));
      weights::Gather(*wte, *values, embedding.data());
      if (e->shape != wte->shape || head != embedding)
        return Error::BadInput(path + ": 'lm_head.weight' differs from the embedding, and the spec of '" +
                               card.model + "' ties its head: use head(x, tied = false) in the spec");
      std::fprintf(stderr, "heiretsu: import: note: %s: 'lm_head.weight' equals the embedding (tied)\n",
                   path.c_str());
      continue;
    }
    return Error::BadInput(path + ": tensor '" + e->name + "' " + weights::ShapeString(e->shape) +
                           " has no place in model '" + card.model + "' (" + layout.description +
                           " layout): the spec lacks what the file has (a bias? an untied head?)");
  }
  return std::nullopt;
}

}  // namespace

int ImportCommand(const std::vector<std::string>& args, const std::string& compiler) {
  const char* kCmd = "import";
  for (const std::string& a : args)
    if (a == "-h" || a == "--help") {
      std::fputs(kImportUsage, stdout);
      return 0;
    }
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
  if (Status err = ParseFlags(kCmd, args, {"--format", "-o", "--seed", "--spec"}, {}, &flags, &positional))
    return Fail(kCmd, *err);
  if (positional.size() != 1)
    return Fail(kCmd, Error::BadInput(positional.empty() ? "a weights FILE is required (see --help)"
                                                         : "one FILE, got '" + positional[1] + "' too"));
  const std::string file = positional[0];
  if (!flags.count("--spec")) return Fail(kCmd, Error::BadInput("--spec SPEC is required"));
  if (!flags.count("-o")) return Fail(kCmd, Error::BadInput("-o CKPT_DIR is required"));
  std::string format = flags.count("--format") ? flags["--format"] : "";
  if (!format.empty() && format != "safetensors" && format != "llmc")
    return Fail(kCmd, Error::BadInput("--format: expected safetensors or llmc, got '" + format + "'"));
  uint64_t seed = cli::RunOptions().seed;
  if (flags.count("--seed"))
    if (Status err = ParseSeedFlag(flags["--seed"], &seed)) return Fail(kCmd, *err);
  {
    weights::RandomFile probe;  // a missing FILE is named before the spec compiles
    if (Status err = probe.Open(file)) return Fail(kCmd, *err);
  }
  if (format.empty()) format = weights::LooksLikeLlmc(file) ? "llmc" : "safetensors";

  const auto start = std::chrono::steady_clock::now();
  TempDir tmp;
  if (Status err = tmp.Create("heiretsu-import")) return Fail(kCmd, *err);
  ModelCard card;
  int code = 0;
  if (!CompileCard(compiler, flags["--spec"], tmp.path() + "/plan", &card, &code)) return code;
  FileLayout layout;
  if (Status err = LayoutFor(format, card, &layout)) return Fail(kCmd, *err);

  Values values;
  weights::ZeroValues(card, &values);
  std::string how = format;
  if (format == "llmc") {
    int32_t version = 0;
    if (Status err = weights::ReadLlmc(file, layout, &values, &version)) return Fail(kCmd, *err);
    how += version == weights::kLlmcVersionF32 ? " (version 3, float32)" : " (version 5, bfloat16)";
  } else {
    weights::SafetensorsFile f;
    if (Status err = weights::OpenSafetensors(file, &f)) return Fail(kCmd, *err);
    const std::string config_path = ConfigPath(file);
    if (IsFile(config_path)) {
      data::InputFile in;
      std::string text;
      weights::JsonValue config;
      if (Status err = in.Open(config_path)) return Fail(kCmd, *err);
      if (Status err = in.ReadAll(&text)) return Fail(kCmd, *err);
      if (Status err = weights::ParseJson(text, &config))
        return Fail(kCmd, err->Within(config_path));
      if (Status err = weights::CheckHuggingFaceConfig(config_path, config, card, layout))
        return Fail(kCmd, *err);
      how += "; " + config_path + " agrees";
    }
    if (Status err = ReadSafetensorsInto(f, card, layout, &values)) return Fail(kCmd, *err);
  }

  checkpoint::Header header;
  header.model = card.model;
  header.step = 0;
  header.seed = seed;
  header.global_batch = 0;  // no data position yet: any batch geometry resumes it
  header.seq = 0;
  header.tokenizer = card.tokenizer;
  header.spec = card.spec;
  header.spec_file = card.spec_file;
  // The moments are zero: one zero buffer, as large as the largest parameter, serves
  // them all (SaveCheckpoint only reads them).
  int64_t largest = 0;
  for (const weights::ParamInfo& p : card.params) largest = std::max(largest, p.numel());
  std::vector<float> zeros(static_cast<size_t>(largest), 0.f);
  std::vector<checkpoint::Tensor> tensors;
  for (const weights::ParamInfo& p : card.params) {
    tensors.push_back({p.name, checkpoint::TensorKind::kValue, p.shape, values[p.name].data()});
    tensors.push_back({p.name, checkpoint::TensorKind::kExpAvg, p.shape, zeros.data()});
    tensors.push_back({p.name, checkpoint::TensorKind::kExpAvgSq, p.shape, zeros.data()});
  }
  std::string dir;
  if (Status err = checkpoint::SaveCheckpoint(flags["-o"], header, tensors, &dir))
    return Fail(kCmd, *err);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s: model '%s', step 0, %zu parameter tensors, %s values, from %s (%s layout, %s) "
              "(%.2f s)\n",
              dir.c_str(), card.model.c_str(), card.params.size(), Grouped(card.num_values()).c_str(),
              file.c_str(), layout.description.c_str(), how.c_str(), seconds);
  std::printf("resume it: heiretsu run PLAN_DIR --resume %s (any layout of %s)\n", flags["-o"].c_str(),
              card.spec_file.empty() ? "the spec" : card.spec_file.c_str());
  return 0;
}

}  // namespace heiretsu::driver
