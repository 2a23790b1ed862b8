// `heiretsu-rank sample`: what `heiretsu sample` runs (the driver compiles a
// checkpoint's spec first). Loads a plan directory's decode program, its weights from
// a checkpoint (or the seed's initial ones), and prints the prompt and its
// continuation on stdout as they are drawn; a summary line goes to stderr.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/rank/sample.h"
#ifdef HEIRETSU_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif

namespace heiretsu {

const char kSampleUsage[] =
    "usage: heiretsu sample CKPT_DIR|PLAN_DIR [--prompt TEXT] [--tokens N] [--temperature X]\n"
    "                       [--top-k K] [--seed S] [--backend cpu|cuda] [--vocab-dir DIR]\n"
    "\n"
    "Prints TEXT and a continuation drawn from the model, one token at a time through\n"
    "its decode program (KV caches: each token costs one position). CKPT_DIR is a\n"
    "checkpoint (or a --save-dir: its newest), which carries the model's spec and\n"
    "tokenizer; a PLAN_DIR samples the untrained model of --seed.\n"
    "  --prompt TEXT       the text to continue (default: empty; a GPT-2 model then starts\n"
    "                      from <|endoftext|>, a byte model needs one)\n"
    "  --tokens N          tokens to draw (default 64; fewer if the context fills up)\n"
    "  --temperature X     softmax temperature (default 1.0; 0 = greedy)\n"
    "  --top-k K           draw from the K most likely tokens only (default 0: all)\n"
    "  --seed S            the draw's seed (default 1337), and a PLAN_DIR's weights'\n";

namespace {

int Fail(const Error& err) {
  std::fprintf(stderr, "heiretsu sample: %s\n", err.message.c_str());
  return err.exit_code();
}

bool ParseInt(const std::string& text, int64_t lo, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo) return false;
  *out = v;
  return true;
}

}  // namespace

// args: --plan DIR [--checkpoint DIR: one checkpoint, as the driver chose it] and the
// flags of kSampleUsage.
int SampleMain(const std::vector<std::string>& args) {
  std::string plan_dir, ckpt, prompt, backend_name = "cpu", vocab_dir;
  rank::SampleOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kSampleUsage, stdout);
      return 0;
    }
    if (i + 1 >= args.size())
      return Fail(Error::BadInput(a + (a.rfind("--", 0) == 0 ? ": needs a value"
                                                              : ": unexpected argument") +
                                  " (see --help)"));
    const std::string& v = args[++i];
    int64_t n = 0;
    if (a == "--plan") {
      plan_dir = v;
    } else if (a == "--checkpoint") {
      ckpt = v;
    } else if (a == "--prompt") {
      prompt = v;
    } else if (a == "--backend") {
      if (v != "cpu" && v != "cuda")
        return Fail(Error::BadInput("--backend " + v + ": expected cpu or cuda"));
      backend_name = v;
    } else if (a == "--vocab-dir") {
      vocab_dir = v;
    } else if (a == "--tokens") {
      if (!ParseInt(v, 1, &n)) return Fail(Error::BadInput("--tokens " + v + ": expected an integer >= 1"));
      o.tokens = n;
    } else if (a == "--top-k") {
      if (!ParseInt(v, 0, &n)) return Fail(Error::BadInput("--top-k " + v + ": expected an integer >= 0"));
      o.top_k = n;
    } else if (a == "--seed") {
      if (!ParseInt(v, 0, &n)) return Fail(Error::BadInput("--seed " + v + ": expected an integer >= 0"));
      o.seed = static_cast<uint64_t>(n);
    } else if (a == "--temperature") {
      char* end = nullptr;
      o.temperature = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(o.temperature >= 0) || o.temperature > 1e6)
        return Fail(Error::BadInput("--temperature " + v + ": expected a number >= 0"));
    } else {
      return Fail(Error::BadInput("unknown flag " + a + " (see --help)"));
    }
  }
  if (plan_dir.empty()) return Fail(Error::BadInput("--plan DIR is required"));

  std::unique_ptr<exec::Backend> backend;  // null: the CPU backend
  if (backend_name == "cuda") {
#ifdef HEIRETSU_HAVE_CUDA
    if (auto err = cuda::MakeCudaBackend(0, &backend)) return Fail(*err);
#else
    return Fail(Error::Failure("--backend cuda: this build has no CUDA backend; use --backend cpu"));
#endif
  }
  std::unique_ptr<rank::Sampler> sampler;
  if (auto err = rank::Sampler::Open(plan_dir, std::move(backend), vocab_dir, &sampler))
    return Fail(*err);
  std::string weights;
  if (!ckpt.empty()) {
    // The driver chose the checkpoint (its newest complete one, checked whole); the
    // load checks the files it reads as they stream in.
    checkpoint::Header header;
    if (auto err = checkpoint::LoadCheckpoint(ckpt, sampler->plan().model()->str(),
                                              sampler->State(), &header))
      return Fail(*err);
    if (auto err = sampler->Commit()) return Fail(*err);
    weights = ckpt + " (step " + std::to_string(header.step) + ")";
  } else {
    sampler->Initialize(o.seed);
    if (auto err = sampler->Commit()) return Fail(*err);
    weights = "the initial weights of seed " + std::to_string(o.seed) + " (untrained)";
  }
  std::vector<int32_t> ids;
  if (auto err = sampler->Encode(prompt, &ids)) return Fail(*err);
  if (ids.empty())
    return Fail(Error::BadInput("an empty prompt has no token for a byte model: give --prompt"));
  std::fprintf(stderr, "sample: model %s, %s; tokenizer %s; prompt %zu tokens\n",
               sampler->plan().model()->c_str(), weights.c_str(), sampler->tokenizer().c_str(),
               ids.size());
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  Status decode_err;
  int64_t drawn = 0;
  bool full = false;
  const auto start = std::chrono::steady_clock::now();
  Status err = sampler->Generate(ids, o, [&](int32_t id) {
    ++drawn;
    std::string text;
    if (auto e = sampler->DecodeText({id}, &text)) {
      if (!decode_err) decode_err = e;
      return;
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }, &full);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fputc('\n', stdout);
  if (err) return Fail(*err);
  if (decode_err) return Fail(*decode_err);
  std::fprintf(stderr, "sample: %lld tokens in %.3f s (%.1f tokens/s, prompt included)%s\n",
               static_cast<long long>(drawn), seconds,
               static_cast<double>(drawn + static_cast<int64_t>(ids.size())) / std::max(seconds, 1e-9),
               full ? "; stopped: the context is full" : "");
  return 0;
}

}  // namespace heiretsu
