#include "runtime/rank/sample.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

namespace heiretsu::rank {

namespace fb = plan::fb;

Status Sampler::Open(const std::string& plan_dir, std::unique_ptr<exec::Backend> backend,
                     const std::string& vocab_dir, std::unique_ptr<Sampler>* out) {
  std::unique_ptr<Sampler> s(new Sampler());
  const std::string path = plan_dir + "/" + plan::kDecodeFileName;
  if (auto err = plan::LoadPlan(path, &s->loaded_)) return err;
  const fb::Plan& p = *s->loaded_.plan;
  if (!plan::Has(p.position()) || !plan::Has(p.logits()))
    return Error::BadInput(path + ": not a decode program (no position and logits)");
  if (plan::WorldSize(*p.mesh()) != 1)
    return Error::BadInput(path + ": a decode program runs on one rank, this one has " +
                           std::to_string(plan::WorldSize(*p.mesh())));
  std::optional<std::string> context = plan::ConfigValue(p, "context");
  s->context_ = context ? std::atoll(context->c_str()) : 0;
  if (s->context_ < 1) return Error::BadInput(path + ": its model card has no context");
  s->vocab_ = p.vocab();
  const int64_t rows = p.micro_batch_size() * p.seq();
  if (rows != 1)
    return Error::BadInput(path + ": a decode program of " + std::to_string(rows) +
                           " tokens a run; the sampler feeds one (recompile the spec)");
  s->padded_vocab_ = plan::NumElements(*p.buffers()->Get(p.logits())) / rows;
  s->tokenizer_ = p.tokenizer() ? p.tokenizer()->str() : "";
  // The ids a draw may give: those the tokenizer decodes, within the vocabulary (a
  // vocabulary larger than the tokenizer's has ids it never names).
  s->drawable_ = s->tokenizer_ == "byte"   ? std::min<int64_t>(s->vocab_, 256)
                 : s->tokenizer_ == "gpt2" ? std::min<int64_t>(s->vocab_, kGpt2EndOfText + 1)
                                           : s->vocab_;
  if (s->tokenizer_ == "gpt2") {
    std::string dir = vocab_dir;
    if (dir.empty())
      if (auto err = data::DefaultGpt2VocabDir(&dir)) return err;
    if (auto err = data::Gpt2Bpe::Load(dir, &s->bpe_)) return err;
  }
  s->executor_ = std::make_unique<exec::Executor>(s->loaded_, std::move(backend), 0);
  *out = std::move(s);
  return std::nullopt;
}

void Sampler::Initialize(uint64_t seed) { executor_->InitializeParameters(seed); }

std::vector<checkpoint::Tensor> Sampler::State() {
  std::vector<checkpoint::Tensor> state;
  for (const fb::Param* p : *loaded_.plan->params()) {
    std::vector<int64_t> shape(p->shape()->begin(), p->shape()->end());
    state.push_back({p->name()->str(), checkpoint::TensorKind::kValue, shape,
                     executor_->F32(p->value())});
    for (auto kind : {checkpoint::TensorKind::kExpAvg, checkpoint::TensorKind::kExpAvgSq})
      state.push_back({p->name()->str(), kind, shape, nullptr});
  }
  return state;
}

Status Sampler::SetValues(const std::vector<checkpoint::Tensor>& values) {
  std::map<std::string, const checkpoint::Tensor*> by_name;
  for (const checkpoint::Tensor& t : values)
    if (t.kind == checkpoint::TensorKind::kValue && t.data) by_name[t.name] = &t;
  for (const fb::Param* p : *loaded_.plan->params()) {
    std::vector<int64_t> shape(p->shape()->begin(), p->shape()->end());
    auto it = by_name.find(p->name()->str());
    if (it == by_name.end())
      return Error::BadInput("sampling: parameter '" + p->name()->str() + "' has no value");
    if (it->second->shape != shape)
      return Error::BadInput("sampling: parameter '" + p->name()->str() + "' is " +
                             checkpoint::ShapeText(it->second->shape) + ", the model's is " +
                             checkpoint::ShapeText(shape));
    std::copy_n(it->second->data, plan::NumElements(*loaded_.plan->buffers()->Get(p->value())),
                executor_->F32(p->value()));
  }
  return Commit();
}

Status Sampler::Commit() { return executor_->PushState(); }

Status Sampler::Encode(const std::string& text, std::vector<int32_t>* ids) {
  if (tokenizer_ == "byte") {
    for (unsigned char c : text) ids->push_back(c);
    return std::nullopt;
  }
  if (tokenizer_ == "gpt2") {
    if (text.empty()) ids->push_back(kGpt2EndOfText);
    bpe_->Encode(text, ids);
    return std::nullopt;
  }
  return Error::BadInput("model '" + std::string(loaded_.plan->model()->c_str()) +
                         "' names no tokenizer (vocab " + std::to_string(vocab_) +
                         "): add 'tokenizer = \"byte\"' or 'tokenizer = \"gpt2\"' to its spec");
}

Status Sampler::DecodeText(const std::vector<int32_t>& ids, std::string* text) const {
  if (tokenizer_ == "gpt2") return bpe_->Decode(ids, text);
  for (int32_t id : ids) {
    if (id < 0 || id > 255)
      return Error::BadInput("token " + std::to_string(id) + " is not a byte");
    text->push_back(static_cast<char>(id));
  }
  return std::nullopt;
}

namespace {

// The next id from one row of logits, among its first `vocab` columns.
int32_t Draw(const float* logits, int64_t vocab, const SampleOptions& o, std::mt19937_64* rng,
             std::vector<int32_t>* order, std::vector<double>* weights) {
  if (o.temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  order->resize(vocab);
  std::iota(order->begin(), order->end(), 0);
  int64_t keep = o.top_k > 0 && o.top_k < vocab ? o.top_k : vocab;
  // The most likely first; ties by the smaller id, so the order is defined.
  auto more_likely = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  if (keep < vocab)
    std::partial_sort(order->begin(), order->begin() + keep, order->end(), more_likely);
  const double top = *std::max_element(logits, logits + vocab);  // for exp's range
  weights->resize(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    (*weights)[i] = std::exp((logits[(*order)[i]] - top) / o.temperature);
    sum += (*weights)[i];
  }
  const double u = static_cast<double>((*rng)() >> 11) * 0x1.0p-53 * sum;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += (*weights)[i];
    if (u < acc) return (*order)[i];
  }
  return (*order)[keep - 1];
}

}  // namespace

Status Sampler::Generate(const std::vector<int32_t>& prompt, const SampleOptions& options,
                         const std::function<void(int32_t)>& on_token, bool* full) {
  *full = false;
  if (prompt.empty()) return Error::BadInput("sampling needs a prompt of at least one token");
  if (static_cast<int64_t>(prompt.size()) > context_)
    return Error::BadInput("the prompt is " + std::to_string(prompt.size()) +
                           " tokens, more than the model's context of " +
                           std::to_string(context_));
  for (int32_t id : prompt)
    if (id < 0 || id >= vocab_)
      return Error::BadInput("prompt token " + std::to_string(id) +
                             " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
  std::mt19937_64 rng(options.seed);
  std::vector<int32_t> order;
  std::vector<double> weights;
  const float* logits = nullptr;
  int32_t position = 0;
  for (int32_t id : prompt)
    if (auto err = executor_->Decode(&id, position++, &logits)) return err;
  for (int64_t n = 0; n < options.tokens; ++n) {
    for (int64_t v = 0; v < drawable_; ++v)
      if (!std::isfinite(logits[v]))
        return Error::Failure("sampling: the model's logit for token " + std::to_string(v) +
                              " at position " + std::to_string(position - 1) +
                              " is not finite (its weights have diverged?)");
    int32_t next = Draw(logits, drawable_, options, &rng, &order, &weights);
    on_token(next);
    if (n + 1 == options.tokens) break;
    if (position >= context_) {
      *full = true;
      break;
    }
    if (auto err = executor_->Decode(&next, position++, &logits)) return err;
  }
  return std::nullopt;
}

}  // namespace heiretsu::rank
