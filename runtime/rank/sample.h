// Sampling text from a model (docs/architecture.md, "Sampling"): the decode program of
// a plan directory (plan::kDecodeFileName: one rank, one sequence, one token a run,
// KV caches of the model's context) run token by token, so each new token costs one
// position, not the whole context. The prompt is fed through the same program one
// position at a time, then each next token is drawn from the logits: greedy at
// temperature 0, else from softmax(logits / temperature) over the top_k most likely
// (all with top_k 0; only ids the tokenizer decodes take part, and a logit that is not
// finite is an error), by a generator seeded with `seed` (the same seed and weights give
// the same text on every machine: the draw uses 53-bit uniforms from a 64-bit
// Mersenne Twister, whose sequence the C++ standard fixes).
//
// Tokenizers (the plan's model card): "byte" (ids are bytes) and "gpt2" (GPT-2's BPE,
// runtime/data/bpe.h; an empty prompt starts from the end-of-text token 50256, as
// llm.c samples). A model without a tokenizer cannot be prompted with text.
#ifndef HEIRETSU_RUNTIME_RANK_SAMPLE_H_
#define HEIRETSU_RUNTIME_RANK_SAMPLE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/bpe.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/plan.h"

namespace heiretsu::rank {

struct SampleOptions {
  int64_t tokens = 64;       // new tokens to draw (fewer when the context fills up)
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 1337;
};

class Sampler {
 public:
  // Loads `plan_dir`'s decode program onto `backend` (null: the CPU backend) and the
  // tokenizer of its model card (`vocab_dir`: GPT-2's files, data::Gpt2Bpe::Load's
  // rule when empty). The parameters are uninitialized until Initialize or a load.
  static Status Open(const std::string& plan_dir, std::unique_ptr<exec::Backend> backend,
                     const std::string& vocab_dir, std::unique_ptr<Sampler>* out);

  const plan::fb::Plan& plan() const { return *loaded_.plan; }
  const std::string& tokenizer() const { return tokenizer_; }
  int64_t context() const { return context_; }

  // The parameters from `seed` (an untrained model: what `sample PLAN_DIR` shows).
  void Initialize(uint64_t seed);
  // The training state a checkpoint holds for this model, values pointing at the
  // decode program's parameters and moments null (checked, not loaded): for
  // checkpoint::LoadCheckpoint. Call Commit after loading into it.
  std::vector<checkpoint::Tensor> State();
  // Copies each parameter's value from `values` (logical tensors by name, e.g. a
  // training rank's gathered state; moments ignored). Fails naming a parameter that
  // is missing or shaped otherwise.
  Status SetValues(const std::vector<checkpoint::Tensor>& values);
  // After the values changed in host memory: moves them to the backend's arena.
  Status Commit();

  // Text <-> token ids with the model's tokenizer.
  Status Encode(const std::string& text, std::vector<int32_t>* ids);
  Status DecodeText(const std::vector<int32_t>& ids, std::string* text) const;

  // Feeds `prompt` (at least one id; the caches restart at position 0), then draws up
  // to options.tokens ids, calling `on_token` with each as it is drawn. Stops early,
  // with `*full` set, when the context is full.
  Status Generate(const std::vector<int32_t>& prompt, const SampleOptions& options,
                  const std::function<void(int32_t)>& on_token, bool* full);

 private:
  Sampler() = default;
  plan::LoadedPlan loaded_;
  std::unique_ptr<exec::Executor> executor_;
  std::unique_ptr<data::Gpt2Bpe> bpe_;
  std::string tokenizer_;
  int64_t context_ = 0, vocab_ = 0, padded_vocab_ = 0;
  int64_t drawable_ = 0;  // ids a draw may give: the tokenizer's, within the vocabulary
};

// The end-of-text token of GPT-2's vocabulary.
inline constexpr int32_t kGpt2EndOfText = 50256;

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_SAMPLE_H_
