// heiretsu-decode-check PLAN_DIR [--seed S] [--tokens-seed S] [--checkpoint DIR]: the
// decode program
// against the training program of the same plan directory. The training program
// (one rank, one sequence of T tokens, one microbatch) evaluates the loss of a random
// sequence of T + 1 tokens with its forward (Executor::Evaluate); the decode program
// feeds the same T tokens one position at a time through its KV caches and computes
// the cross-entropy of each position's logits against the next token. Both from the
// same initial weights (--seed), or a checkpoint's (a trained model attends sharply,
// which an untrained one does not). If the caches, the position offsets (learned
// positions, RoPE) and the causal mask agree with the full-sequence forward, the mean
// losses agree to float rounding: the check prints both and their relative
// difference, and exits 1 above 1e-5 (the parity bound of docs/architecture.md §3).
// A model whose loss has auxiliary terms (MoE balance or z losses) or drops tokens
// (MoE capacity) computes something else in training: give it aux_loss = 0,
// z_loss = 0 and capacity = none.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/exec/executor.h"
#include "runtime/plan/plan.h"
#include "runtime/checkpoint/checkpoint.h"

namespace {

using heiretsu::Status;
namespace plan = heiretsu::plan;

int Fail(const std::string& message) {
  std::fprintf(stderr, "heiretsu-decode-check: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Fail("usage: heiretsu-decode-check PLAN_DIR [--seed S] [--tokens-seed S]");
  const std::string dir = argv[1];
  uint64_t seed = 1337, tokens_seed = 7;
  std::string ckpt;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--tokens-seed") tokens_seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--checkpoint") ckpt = argv[i + 1];
    else return Fail("unknown flag " + flag);
  }
  plan::LoadedPlan training;
  if (auto err = plan::LoadPlan(dir + "/" + plan::ProgramFileName(0), &training))
    return Fail(err->message);
  const plan::fb::Plan& p = *training.plan;
  if (plan::WorldSize(*p.mesh()) != 1 || p.micro_batch_size() != 1 || p.microbatches() != 1)
    return Fail("the training program must be one rank, one sequence, one microbatch");
  const int64_t seq = p.seq();

  std::mt19937_64 rng(tokens_seed);
  std::vector<int32_t> text(seq + 1);
  for (int32_t& t : text) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(p.vocab()));

  heiretsu::exec::Executor executor(training);
  executor.InitializeParameters(seed);
  heiretsu::checkpoint::Header header;
  if (!ckpt.empty())
    if (auto err = heiretsu::checkpoint::LoadCheckpoint(
            ckpt, p.model()->str(), heiretsu::checkpoint::TrainingState(&executor), &header))
      return Fail(err->message);
  double loss = 0;
  auto fill = [&](int64_t, int32_t* tokens, int32_t* targets) {
    if (tokens) std::copy_n(text.begin(), seq, tokens);
    if (targets) std::copy_n(text.begin() + 1, seq, targets);
  };
  if (auto err = executor.Evaluate(fill, &loss)) return Fail(err->message);

  // The decode program: token t at position t.
  plan::LoadedPlan decode;
  if (auto err = plan::LoadPlan(dir + "/" + plan::kDecodeFileName, &decode))
    return Fail(err->message);
  heiretsu::exec::Executor decoder(decode);
  decoder.InitializeParameters(seed);
  if (!ckpt.empty()) {
    std::vector<heiretsu::checkpoint::Tensor> values;
    for (const plan::fb::Param* q : *decode.plan->params()) {
      std::vector<int64_t> shape(q->shape()->begin(), q->shape()->end());
      values.push_back({q->name()->str(), heiretsu::checkpoint::TensorKind::kValue, shape,
                        decoder.F32(q->value())});
      for (auto kind : {heiretsu::checkpoint::TensorKind::kExpAvg,
                        heiretsu::checkpoint::TensorKind::kExpAvgSq})
        values.push_back({q->name()->str(), kind, shape, nullptr});
    }
    if (auto err = heiretsu::checkpoint::LoadCheckpoint(ckpt, p.model()->str(), values, &header))
      return Fail(err->message);
  }
  std::optional<std::string> context = plan::ConfigValue(*decode.plan, "context");
  const int64_t vocab = decode.plan->vocab();
  double sum = 0;
  for (int64_t t = 0; t < seq; ++t) {
    const float* logits = nullptr;
    if (auto err = decoder.Decode(&text[t], static_cast<int32_t>(t), &logits))
      return Fail(err->message);
    double mx = logits[0];
    for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(logits[v]));
    double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(logits[v] - mx);
    sum += mx + std::log(z) - logits[text[t + 1]];
  }
  const double decoded = sum / static_cast<double>(seq);
  // One position past the context is refused, not read out of bounds.
  const float* logits = nullptr;
  Status past = decoder.Decode(&text[0], context ? std::atoi(context->c_str()) : 0, &logits);
  const double rel = std::fabs(decoded - loss) / std::fabs(loss);
  std::printf("model %s: %lld positions; forward loss %.9g, decode loss %.9g, rel diff %.2e (%s "
              "1e-5)\n",
              p.model()->c_str(), static_cast<long long>(seq), loss, decoded, rel,
              rel <= 1e-5 ? "within" : "ABOVE");
  std::printf("past the context: %s\n", past ? past->message.c_str() : "accepted (WRONG)");
  return rel <= 1e-5 && past ? 0 : 1;
}
