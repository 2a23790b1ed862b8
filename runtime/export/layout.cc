#include "runtime/export/layout.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

namespace heiretsu::weights {

int64_t FileTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// The facts of `card` that keep it out of `family` (empty: it fits), each as
// "KEY = VALUE (WHY)".
std::vector<std::string> Misfits(const ModelCard& card, Family family, bool llmc) {
  std::vector<std::string> out;
  auto fact = [&](const std::string& key) { return card.Config(key).value_or("(none)"); };
  for (const auto& [key, value] : card.config)
    if (value == "mixed") out.push_back(key + " = mixed (the layers differ; the format has one value)");
  if (card.Config("moe")) out.push_back("moe = " + fact("moe") + " (the format has no experts)");
  auto need = [&](const std::string& key, const std::string& want) {
    const std::string v = fact(key);
    if (v != want && v != "mixed") out.push_back(key + " = " + v + " (needs " + want + ")");
  };
  const std::string heads = fact("attention_heads");
  int64_t h = 0, kv = 0, hd = 0;
  const bool parsed = std::sscanf(heads.c_str(), "%ld/%ld/%ld", &h, &kv, &hd) == 3;
  if (family == Family::kGpt2) {
    need("positions", "learned");
    need("norm", "layernorm");
    need("rope", "none");
    need("act", "gelu");
    need("attention_bias", "true");
    need("mlp_bias", "true");
    const std::string head = fact("head");
    if (llmc) {
      need("head", "tied");
    } else if (head != "tied" && head != "untied" && head != "mixed") {
      out.push_back("head = " + head + " (needs tied or untied: GPT-2's lm_head has no bias)");
    }
    if (parsed) {
      if (kv != h)
        out.push_back("attention_heads = " + heads + " (needs kv_heads = heads: no grouped-query attention)");
      int64_t d = 0;
      if (!card.ConfigInt("d_model", &d) && h * hd != d)
        out.push_back("attention_heads = " + heads + " (needs heads x head_dim = d_model = " +
                      std::to_string(d) + ")");
    }
    if (llmc) {
      int64_t d = 0;
      if (!card.ConfigInt("d_model", &d) && fact("mlp_hidden") != std::to_string(4 * d) &&
          fact("mlp_hidden") != "mixed")
        out.push_back("mlp_hidden = " + fact("mlp_hidden") + " (needs 4 x d_model = " +
                      std::to_string(4 * d) + ")");
      const std::string eps = fact("norm_eps");
      if (eps != "mixed" && std::strtod(eps.c_str(), nullptr) != 1e-5)
        out.push_back("norm_eps = " + eps + " (needs 1e-05, llm.c's fixed layernorm epsilon)");
    }
  } else {
    need("positions", "none");
    need("norm", "rmsnorm");
    if (fact("rope") == "none") out.push_back("rope = none (needs a rope theta)");
    need("act", "swiglu");
    const std::string head = fact("head");
    if (head != "tied" && head != "untied" && head != "mixed")
      out.push_back("head = " + head + " (needs tied or untied: Llama's lm_head has no bias)");
  }
  return out;
}

// Collects the pieces of a layout, checking each parameter it takes against the
// shape the format needs, and at the end that it took every parameter of the model.
class Builder {
 public:
  Builder(const ModelCard& card, const std::string& format) : card_(card), format_(format) {}

  // Rows [0, rows) of parameter `name`, which must have shape `shape` (rows < 0: all).
  Piece Take(const std::string& name, const std::vector<int64_t>& shape, const std::string& file_name,
             int64_t rows = -1, int64_t rope_head_dim = 0) {
    const ParamInfo* p = card_.Param(name);
    if (!p) {
      Add("parameter '" + name + "' is missing; " + format_ + "'s " + file_name + " needs it");
    } else if (p->shape != shape) {
      Add("parameter '" + name + "' has shape " + ShapeString(p->shape) + "; " + format_ + "'s " +
          file_name + " needs " + ShapeString(shape));
    }
    used_.insert(name);
    Piece piece;
    piece.param = name;
    piece.rows = rows < 0 ? (shape.empty() ? 1 : shape[0]) : rows;
    piece.rope_head_dim = rope_head_dim;
    return piece;
  }

  Status Finish(FileLayout* layout) {
    for (const ParamInfo& p : card_.params)
      if (!used_.count(p.name))
        Add("parameter '" + p.name + "' " + ShapeString(p.shape) + " has no place in " + format_ +
            "'s layout");
    if (problems_.empty()) {
      for (const FileTensor& t : layout->tensors) {
        int64_t r = 0;
        for (const Piece& piece : t.pieces) r += piece.rows;
        if (r * t.cols != t.numel())  // a layout bug, not the user's
          return Error::Failure(format_ + " layout: " + t.name + ": pieces hold " +
                                std::to_string(r * t.cols) + " values, its shape " +
                                std::to_string(t.numel()));
      }
      return std::nullopt;
    }
    std::string msg = "model '" + card_.model + "' does not fit " + format_ + ": " + problems_[0];
    for (size_t i = 1; i < problems_.size() && i < 5; ++i) msg += "; " + problems_[i];
    if (problems_.size() > 5) msg += "; and " + std::to_string(problems_.size() - 5) + " more";
    return Error::BadInput(msg);
  }

 private:
  void Add(const std::string& problem) { problems_.push_back(problem); }
  const ModelCard& card_;
  std::string format_;
  std::set<std::string> used_;
  std::vector<std::string> problems_;
};

struct Sizes {
  int64_t vocab = 0, padded = 0, context = 0, d = 0, layers = 0, hidden = 0;
  int64_t heads = 0, kv = 0, hd = 0;
  bool attn_bias = false, mlp_bias = false, tied = true;
};

Status SizesOf(const ModelCard& card, Sizes* s) {
  for (auto [key, out] : {std::pair<const char*, int64_t*>{"vocab", &s->vocab},
                          {"context", &s->context}, {"d_model", &s->d}, {"layers", &s->layers},
                          {"mlp_hidden", &s->hidden}})
    if (Status err = card.ConfigInt(key, out)) return err;
  s->padded = s->vocab;
  if (card.Config("padded_vocab"))
    if (Status err = card.ConfigInt("padded_vocab", &s->padded)) return err;
  const std::string heads = card.Config("attention_heads").value_or("");
  if (std::sscanf(heads.c_str(), "%ld/%ld/%ld", &s->heads, &s->kv, &s->hd) != 3)
    return Error::BadInput("model '" + card.model + "': attention_heads = '" + heads +
                           "' is not HEADS/KV_HEADS/HEAD_DIM");
  s->attn_bias = card.Config("attention_bias") == "true";
  s->mlp_bias = card.Config("mlp_bias") == "true";
  s->tied = card.Config("head") == "tied";
  return std::nullopt;
}

Status CheckFits(const ModelCard& card, Family family, bool llmc, const std::string& format) {
  const std::vector<std::string> misfits = Misfits(card, family, llmc);
  if (misfits.empty()) return std::nullopt;
  std::string msg = "model '" + card.model + "' does not fit " + format + ": ";
  for (size_t i = 0; i < misfits.size(); ++i) msg += (i ? "; " : "") + misfits[i];
  return Error::BadInput(msg);
}

std::string L(int64_t n) { return std::to_string(n); }

void SortByName(FileLayout* layout) {
  std::sort(layout->tensors.begin(), layout->tensors.end(),
            [](const FileTensor& a, const FileTensor& b) { return a.name < b.name; });
}

Status Gpt2Layout(const ModelCard& card, const Sizes& s, FileLayout* layout) {
  layout->family = Family::kGpt2;
  layout->description = "Hugging Face GPT-2";
  Builder b(card, layout->description);
  const int64_t C = s.d, H = s.hidden, V = s.vocab;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, int64_t cols,
                 std::vector<Piece> pieces, bool transpose) {
    layout->tensors.push_back({name, std::move(shape), cols, std::move(pieces), transpose});
  };
  std::string n = "transformer.wte.weight";
  add(n, {V, C}, C, {b.Take("wte", {s.padded, C}, n, V)}, false);
  n = "transformer.wpe.weight";
  add(n, {s.context, C}, C, {b.Take("wpe", {s.context, C}, n)}, false);
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string hf = "transformer.h." + L(i) + ".", ours = "layers." + L(i) + ".";
    for (auto [hf_norm, our_norm] : {std::pair<const char*, const char*>{"ln_1", "norm1"}, {"ln_2", "norm2"}})
      for (const char* part : {"weight", "bias"}) {
        n = hf + hf_norm + "." + part;
        add(n, {C}, 1, {b.Take(ours + our_norm + "." + part, {C}, n)}, false);
      }
    n = hf + "attn.c_attn.weight";
    add(n, {C, 3 * C}, C,
        {b.Take(ours + "attn.wq.weight", {C, C}, n), b.Take(ours + "attn.wk.weight", {C, C}, n),
         b.Take(ours + "attn.wv.weight", {C, C}, n)},
        true);
    n = hf + "attn.c_attn.bias";
    add(n, {3 * C}, 1,
        {b.Take(ours + "attn.wq.bias", {C}, n), b.Take(ours + "attn.wk.bias", {C}, n),
         b.Take(ours + "attn.wv.bias", {C}, n)},
        false);
    n = hf + "attn.c_proj.weight";
    add(n, {C, C}, C, {b.Take(ours + "attn.wo.weight", {C, C}, n)}, true);
    n = hf + "attn.c_proj.bias";
    add(n, {C}, 1, {b.Take(ours + "attn.wo.bias", {C}, n)}, false);
    n = hf + "mlp.c_fc.weight";
    add(n, {C, H}, C, {b.Take(ours + "mlp.w_up.weight", {H, C}, n)}, true);
    n = hf + "mlp.c_fc.bias";
    add(n, {H}, 1, {b.Take(ours + "mlp.w_up.bias", {H}, n)}, false);
    n = hf + "mlp.c_proj.weight";
    add(n, {H, C}, H, {b.Take(ours + "mlp.w_down.weight", {C, H}, n)}, true);
    n = hf + "mlp.c_proj.bias";
    add(n, {C}, 1, {b.Take(ours + "mlp.w_down.bias", {C}, n)}, false);
  }
  for (const char* part : {"weight", "bias"}) {
    n = std::string("transformer.ln_f.") + part;
    add(n, {C}, 1, {b.Take(std::string("final_norm.") + part, {C}, n)}, false);
  }
  if (!s.tied) {
    n = "lm_head.weight";
    add(n, {V, C}, C, {b.Take("lm_head.weight", {s.padded, C}, n, V)}, false);
  }
  SortByName(layout);
  return b.Finish(layout);
}

Status LlamaLayout(const ModelCard& card, const Sizes& s, FileLayout* layout) {
  layout->family = Family::kLlama;
  layout->description = "Hugging Face Llama";
  Builder b(card, layout->description);
  const int64_t C = s.d, H = s.hidden, V = s.vocab, Q = s.heads * s.hd, K = s.kv * s.hd;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, int64_t cols,
                 std::vector<Piece> pieces) {
    layout->tensors.push_back({name, std::move(shape), cols, std::move(pieces), false});
  };
  std::string n = "model.embed_tokens.weight";
  add(n, {V, C}, C, {b.Take("wte", {s.padded, C}, n, V)});
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string hf = "model.layers." + L(i) + ".", ours = "layers." + L(i) + ".";
    n = hf + "input_layernorm.weight";
    add(n, {C}, 1, {b.Take(ours + "norm1.weight", {C}, n)});
    n = hf + "post_attention_layernorm.weight";
    add(n, {C}, 1, {b.Take(ours + "norm2.weight", {C}, n)});
    struct Proj {
      const char *hf, *ours;
      int64_t out, in, rope;
    };
    for (const Proj& p : {Proj{"q_proj", "wq", Q, C, s.hd}, Proj{"k_proj", "wk", K, C, s.hd},
                          Proj{"v_proj", "wv", K, C, 0}, Proj{"o_proj", "wo", C, Q, 0}}) {
      n = hf + "self_attn." + p.hf + ".weight";
      add(n, {p.out, p.in}, p.in,
          {b.Take(ours + "attn." + p.ours + ".weight", {p.out, p.in}, n, -1, p.rope)});
      if (s.attn_bias) {
        n = hf + "self_attn." + p.hf + ".bias";
        add(n, {p.out}, 1, {b.Take(ours + "attn." + p.ours + ".bias", {p.out}, n, -1, p.rope)});
      }
    }
    for (const Proj& p : {Proj{"gate_proj", "w_gate", H, C, 0}, Proj{"up_proj", "w_up", H, C, 0},
                          Proj{"down_proj", "w_down", C, H, 0}}) {
      n = hf + "mlp." + p.hf + ".weight";
      add(n, {p.out, p.in}, p.in, {b.Take(ours + "mlp." + p.ours + ".weight", {p.out, p.in}, n)});
      if (s.mlp_bias) {
        n = hf + "mlp." + p.hf + ".bias";
        add(n, {p.out}, 1, {b.Take(ours + "mlp." + p.ours + ".bias", {p.out}, n)});
      }
    }
  }
  n = "model.norm.weight";
  add(n, {C}, 1, {b.Take("final_norm.weight", {C}, n)});
  if (!s.tied) {
    n = "lm_head.weight";
    add(n, {V, C}, C, {b.Take("lm_head.weight", {s.padded, C}, n, V)});
  }
  SortByName(layout);
  return b.Finish(layout);
}

}  // namespace

Status HuggingFaceLayout(const ModelCard& card, FileLayout* layout) {
  *layout = FileLayout();
  const std::vector<std::string> gpt2 = Misfits(card, Family::kGpt2, false);
  const std::vector<std::string> llama = Misfits(card, Family::kLlama, false);
  if (!gpt2.empty() && !llama.empty()) {
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size(); ++i) s += (i ? "; " : "") + v[i];
      return s;
    };
    return Error::BadInput("model '" + card.model +
                           "' fits no Hugging Face layout heiretsu writes: not GPT-2 (" +
                           list(gpt2) + "), not Llama (" + list(llama) + ")");
  }
  Sizes s;
  if (Status err = SizesOf(card, &s)) return err;
  return gpt2.empty() ? Gpt2Layout(card, s, layout) : LlamaLayout(card, s, layout);
}

Status LlmcLayout(const ModelCard& card, FileLayout* layout) {
  *layout = FileLayout();
  layout->family = Family::kGpt2;
  layout->description = "llm.c GPT-2";
  if (Status err = CheckFits(card, Family::kGpt2, true, layout->description)) return err;
  Sizes s;
  if (Status err = SizesOf(card, &s)) return err;
  const int64_t C = s.d, V = s.vocab, Lc = s.layers, Vp = (V + 127) / 128 * 128;
  const int64_t kMax = 0x7fffffff;
  if (s.context > kMax || Vp > kMax || C > kMax || Lc > kMax)
    return Error::BadInput("model '" + card.model + "' is too large for llm.c's int32 header");
  layout->llmc_header[0] = static_cast<int32_t>(s.context);
  layout->llmc_header[1] = static_cast<int32_t>(V);
  layout->llmc_header[2] = static_cast<int32_t>(Lc);
  layout->llmc_header[3] = static_cast<int32_t>(s.heads);
  layout->llmc_header[4] = static_cast<int32_t>(C);
  layout->llmc_header[5] = static_cast<int32_t>(Vp);
  Builder b(card, layout->description);
  std::vector<Piece> wte = {b.Take("wte", {s.padded, C}, "wte", V)};
  if (Vp > V) wte.push_back({"", Vp - V, 0});
  layout->tensors.push_back({"wte", {Vp, C}, C, wte, false});
  layout->tensors.push_back({"wpe", {s.context, C}, C, {b.Take("wpe", {s.context, C}, "wpe")}, false});
  // Per-layer tensors: layer 0's rows, then layer 1's ...; `ours` lists the heiretsu
  // parameters of one layer whose rows stack (q, k, v for qkvw).
  struct PerLayer {
    const char* name;
    std::vector<const char*> ours;
    int64_t rows, cols;  // of each heiretsu parameter
    bool vector;
  };
  const int64_t H = 4 * C;
  const std::vector<PerLayer> per_layer = {
      {"ln1w", {"norm1.weight"}, C, 1, true},
      {"ln1b", {"norm1.bias"}, C, 1, true},
      {"qkvw", {"attn.wq.weight", "attn.wk.weight", "attn.wv.weight"}, C, C, false},
      {"qkvb", {"attn.wq.bias", "attn.wk.bias", "attn.wv.bias"}, C, 1, true},
      {"attprojw", {"attn.wo.weight"}, C, C, false},
      {"attprojb", {"attn.wo.bias"}, C, 1, true},
      {"ln2w", {"norm2.weight"}, C, 1, true},
      {"ln2b", {"norm2.bias"}, C, 1, true},
      {"fcw", {"mlp.w_up.weight"}, H, C, false},
      {"fcb", {"mlp.w_up.bias"}, H, 1, true},
      {"fcprojw", {"mlp.w_down.weight"}, C, H, false},
      {"fcprojb", {"mlp.w_down.bias"}, C, 1, true},
  };
  for (const PerLayer& t : per_layer) {
    FileTensor ft;
    ft.name = t.name;
    ft.cols = t.cols;
    const int64_t rows = t.rows * static_cast<int64_t>(t.ours.size());
    ft.shape = t.vector ? std::vector<int64_t>{Lc, rows} : std::vector<int64_t>{Lc, rows, t.cols};
    for (int64_t i = 0; i < Lc; ++i)
      for (const char* ours : t.ours) {
        const std::vector<int64_t> shape =
            t.vector ? std::vector<int64_t>{t.rows} : std::vector<int64_t>{t.rows, t.cols};
        ft.pieces.push_back(b.Take("layers." + L(i) + "." + ours, shape, t.name));
      }
    layout->tensors.push_back(std::move(ft));
  }
  layout->tensors.push_back({"lnfw", {C}, 1, {b.Take("final_norm.weight", {C}, "lnfw")}, false});
  layout->tensors.push_back({"lnfb", {C}, 1, {b.Take("final_norm.bias", {C}, "lnfb")}, false});
  return b.Finish(layout);
}

namespace {

// Row r of the file's side of a piece is row RowOf(r) of the parameter: the RoPE
// permutation within each head (HF row i <- ours 2i, HF row hd/2 + i <- ours 2i + 1).
int64_t RowOf(const Piece& piece, int64_t r) {
  if (piece.rope_head_dim <= 0) return r;
  const int64_t hd = piece.rope_head_dim, half = hd / 2;
  const int64_t head = r / hd, i = r % hd;
  return head * hd + (i < half ? 2 * i : 2 * (i - half) + 1);
}

// Calls f(row of the stacked matrix, piece, the parameter row) for every row of `t`.
template <typename F>
void ForEachRow(const FileTensor& t, F f) {
  int64_t r0 = 0;
  for (const Piece& piece : t.pieces) {
    for (int64_t r = 0; r < piece.rows; ++r) f(r0 + r, piece, RowOf(piece, r));
    r0 += piece.rows;
  }
}

int64_t StackedRows(const FileTensor& t) {
  int64_t r = 0;
  for (const Piece& piece : t.pieces) r += piece.rows;
  return r;
}

}  // namespace

void Gather(const FileTensor& t, const Values& values, float* out) {
  const int64_t R = StackedRows(t), C = t.cols;
  ForEachRow(t, [&](int64_t row, const Piece& piece, int64_t src) {
    const float* from = piece.param.empty() ? nullptr : values.at(piece.param).data() + src * C;
    for (int64_t c = 0; c < C; ++c) {
      const float v = from ? from[c] : 0.f;
      out[t.transpose ? c * R + row : row * C + c] = v;
    }
  });
}

void Scatter(const FileTensor& t, const float* in, Values* values) {
  const int64_t R = StackedRows(t), C = t.cols;
  ForEachRow(t, [&](int64_t row, const Piece& piece, int64_t dst) {
    if (piece.param.empty()) return;
    float* to = values->at(piece.param).data() + dst * C;
    for (int64_t c = 0; c < C; ++c) to[c] = in[t.transpose ? c * R + row : row * C + c];
  });
}

namespace {

// One config.json entry: its JSON text, and how an imported file's value is compared.
struct ConfigEntry {
  std::string json;
  enum class Check { kNo, kExact, kNumber } check = Check::kNo;
  double number = 0;
  std::string spec_hint;  // what to change in the spec when they differ
};

std::map<std::string, ConfigEntry> ConfigEntries(const ModelCard& card, const FileLayout& layout) {
  Sizes s;
  (void)SizesOf(card, &s);  // the layout was built from this card: it succeeds
  const double eps = std::strtod(card.Config("norm_eps").value_or("1e-5").c_str(), nullptr);
  const double init_std = std::strtod(card.Config("init_std").value_or("0.02").c_str(), nullptr);
  using Check = ConfigEntry::Check;
  std::map<std::string, ConfigEntry> e;
  auto num = [&](const std::string& key, double v, const std::string& hint, bool integer) {
    e[key] = {integer ? std::to_string(static_cast<int64_t>(v)) : JsonNumber(v), Check::kNumber, v,
              hint};
  };
  auto text = [&](const std::string& key, const std::string& v, bool check, const std::string& hint = "") {
    e[key] = {JsonQuote(v), check ? Check::kExact : Check::kNo, 0, hint};
  };
  auto boolean = [&](const std::string& key, bool v, const std::string& hint) {
    e[key] = {v ? "true" : "false", Check::kExact, 0, hint};
  };
  auto raw = [&](const std::string& key, const std::string& json) { e[key] = {json, Check::kNo, 0, ""}; };
  // GPT-2's end-of-text token is the only special token heiretsu's tokenizers have.
  const std::string eot = card.tokenizer == "gpt2" ? "50256" : "null";
  raw("bos_token_id", eot);
  raw("eos_token_id", eot);
  raw("torch_dtype", "\"float32\"");
  raw("use_cache", "true");
  num("initializer_range", init_std, "", false);
  num("vocab_size", static_cast<double>(s.vocab), "vocab", true);
  boolean("tie_word_embeddings", s.tied, "head(x, tied = ...)");
  if (layout.family == Family::kGpt2) {
    raw("architectures", "[\n    \"GPT2LMHeadModel\"\n  ]");
    text("model_type", "gpt2", true);
    text("activation_function", "gelu_new", true, "act");
    // heiretsu trains without dropout: HF fine-tuning from this file does the same.
    raw("attn_pdrop", "0.0");
    raw("embd_pdrop", "0.0");
    raw("resid_pdrop", "0.0");
    num("layer_norm_epsilon", eps, "layernorm(x, eps = ...)", false);
    num("n_ctx", static_cast<double>(s.context), "context", true);
    num("n_positions", static_cast<double>(s.context), "context", true);
    num("n_embd", static_cast<double>(s.d), "d_model", true);
    num("n_head", static_cast<double>(s.heads), "heads", true);
    num("n_inner", static_cast<double>(s.hidden), "hidden (mlp(..., hidden = ...))", true);
    num("n_layer", static_cast<double>(s.layers), "layers", true);
    raw("scale_attn_weights", "true");
  } else {
    const double theta = std::strtod(card.Config("rope").value_or("10000").c_str(), nullptr);
    raw("architectures", "[\n    \"LlamaForCausalLM\"\n  ]");
    text("model_type", "llama", true);
    text("hidden_act", "silu", true, "act");
    boolean("attention_bias", s.attn_bias, "bias");
    raw("attention_dropout", "0.0");
    num("head_dim", static_cast<double>(s.hd), "head_dim", true);
    num("hidden_size", static_cast<double>(s.d), "d_model", true);
    num("intermediate_size", static_cast<double>(s.hidden), "hidden (mlp(..., hidden = ...))", true);
    // RoPE has no position table: a longer max_position_embeddings is no conflict.
    e["max_position_embeddings"] = {std::to_string(s.context), Check::kNo, 0, ""};
    boolean("mlp_bias", s.mlp_bias, "bias");
    num("num_attention_heads", static_cast<double>(s.heads), "heads", true);
    num("num_hidden_layers", static_cast<double>(s.layers), "layers", true);
    num("num_key_value_heads", static_cast<double>(s.kv), "kv_heads", true);
    raw("pretraining_tp", "1");
    num("rms_norm_eps", eps, "rmsnorm(x, eps = ...)", false);
    raw("rope_scaling", "null");
    num("rope_theta", theta, "rope_theta", false);
  }
  return e;
}

std::string ValueText(const JsonValue& v) {
  switch (v.kind) {
    case JsonValue::Kind::kNull:
      return "null";
    case JsonValue::Kind::kBool:
      return v.boolean ? "true" : "false";
    case JsonValue::Kind::kNumber:
      return v.integral ? std::to_string(v.integer) : JsonNumber(v.number);
    case JsonValue::Kind::kString:
      return JsonQuote(v.text);
    default:
      return v.KindName();
  }
}

}  // namespace

std::string HuggingFaceConfig(const ModelCard& card, const FileLayout& layout) {
  const std::map<std::string, ConfigEntry> entries = ConfigEntries(card, layout);
  std::string out = "{\n";
  size_t i = 0;
  for (const auto& [key, entry] : entries)
    out += "  " + JsonQuote(key) + ": " + entry.json + (++i < entries.size() ? ",\n" : "\n");
  return out + "}\n";
}

Status CheckHuggingFaceConfig(const std::string& path, const JsonValue& config,
                              const ModelCard& card, const FileLayout& layout) {
  if (config.kind != JsonValue::Kind::kObject)
    return Error::BadInput(path + ": expected a JSON object, found " + config.KindName());
  const std::map<std::string, ConfigEntry> want = ConfigEntries(card, layout);
  const std::string spec = "the spec of model '" + card.model + "'";
  for (const auto& [key, entry] : want) {
    if (entry.check == ConfigEntry::Check::kNo) continue;
    const JsonValue* got = config.Find(key);
    if (!got) continue;  // HF's default then; the tensors' shapes are checked anyway
    if (key == "n_inner" && got->kind == JsonValue::Kind::kNull) {
      // GPT2Config: n_inner null is 4 x n_embd.
      Sizes s;
      (void)SizesOf(card, &s);
      if (s.hidden == 4 * s.d) continue;
    }
    bool same;
    if (entry.check == ConfigEntry::Check::kNumber) {
      same = got->kind == JsonValue::Kind::kNumber &&
             std::fabs(got->number - entry.number) <= 1e-9 * std::fabs(entry.number);
    } else if (key == "activation_function") {
      // Both are GELU's tanh form, heiretsu's.
      same = got->kind == JsonValue::Kind::kString &&
             (got->text == "gelu_new" || got->text == "gelu_pytorch_tanh");
    } else {
      same = ValueText(*got) == entry.json;
    }
    if (!same)
      return Error::BadInput(path + ": " + key + " is " + ValueText(*got) + ", " + spec + " has " +
                             entry.json +
                             (entry.spec_hint.empty() ? "" : " (set " + entry.spec_hint + " in the spec)") +
                             "; or move config.json away to import the tensors alone");
  }
  if (const JsonValue* scaling = config.Find("rope_scaling"))
    if (scaling->kind != JsonValue::Kind::kNull)
      return Error::BadInput(path + ": rope_scaling is set; heiretsu's RoPE has no scaling "
                             "(only rope_theta)");
  return std::nullopt;
}

}  // namespace heiretsu::weights
