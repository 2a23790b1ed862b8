// Where heiretsu's parameters go in other tools' weight files (runtime/export): Hugging
// Face's GPT-2 and Llama names and layouts (safetensors), and llm.c's GPT-2 model file.
//
// A file tensor is rows of heiretsu parameters stacked: each piece is the first `rows`
// rows of one parameter (a row is the parameter's values past its first dimension;
// a vector's row is one value), or `rows` zero rows (llm.c's vocabulary padding), and
// the file holds that [R, cols] matrix as it is or, for Hugging Face GPT-2's Conv1D,
// transposed ([cols, R]). A piece may also reorder its rows per attention head (RoPE,
// below). The same description serves both directions: Gather builds a file tensor
// from the parameters (export), Scatter puts one back (import), and Scatter(Gather(x))
// is x bit for bit; parameter rows no piece covers (heiretsu's padded_vocab rows past
// the vocabulary) are zero after an import.
//
// Which models fit (facts from the plan's model card, compiler/frontend/ModelBuilder.cpp):
//   Hugging Face GPT-2 (GPT2LMHeadModel): positions = learned, norm = layernorm,
//     rope = none, act = gelu (heiretsu's GELU is the tanh form: HF's "gelu_new"),
//     attention_bias = mlp_bias = true, heads = kv_heads, heads x head_dim = d_model,
//     head = tied or untied (tie_word_embeddings), no MoE.
//       transformer.wte.weight [V, C]   transformer.wpe.weight [context, C]
//       transformer.h.N.ln_1.{weight,bias}   transformer.h.N.ln_2.{weight,bias}
//       transformer.h.N.attn.c_attn.weight [C, 3C]  (q, k, v along the output, Conv1D:
//         [in, out], the transpose of heiretsu's [out, in]) and .bias [3C]
//       transformer.h.N.attn.c_proj.{weight [C, C], bias}
//       transformer.h.N.mlp.c_fc.{weight [C, H], bias [H]}  mlp.c_proj.{weight [H, C], bias}
//       transformer.ln_f.{weight,bias}    lm_head.weight [V, C] (untied only)
//   Hugging Face Llama (LlamaForCausalLM): positions = none, norm = rmsnorm, rope = theta,
//     act = swiglu, head = tied or untied, no MoE; attention and MLP biases as
//     attention_bias and mlp_bias say (HF's flags cover q, k, v, o and gate, up, down,
//     as heiretsu's do).
//       model.embed_tokens.weight [V, C]
//       model.layers.N.input_layernorm.weight   model.layers.N.post_attention_layernorm.weight
//       model.layers.N.self_attn.{q,k,v,o}_proj.weight (+ .bias with attention_bias)
//       model.layers.N.mlp.{gate,up,down}_proj.weight (+ .bias with mlp_bias)
//       model.norm.weight    lm_head.weight [V, C] (untied only)
//     RoPE: heiretsu rotates the interleaved pairs (2i, 2i + 1) of each head
//     (runtime/cpu/kernels.cc, Rope); HF Llama rotates the halves (i, i + hd/2)
//     (rotate_half), both with frequency theta^(-2i/hd). So q_proj's and k_proj's rows
//     (and biases) are permuted within each head: HF row i <- heiretsu row 2i, HF row
//     i + hd/2 <- heiretsu row 2i + 1; then both compute the same q.k scores
//     (test/unit/export_test.cc proves it against a float64 rotate_half).
//   llm.c (gpt2_124M.bin, train_gpt2.c's fill_in_parameter_sizes): the GPT-2 facts
//     above with a tied head, MLP width 4 x d_model and norm_eps = 1e-5 (llm.c fixes
//     all three); tensors wte [Vp, C] (Vp = V rounded up to a multiple of 128, the
//     padding rows zero), wpe [maxT, C], ln1w, ln1b [L, C], qkvw [L, 3C, C], qkvb
//     [L, 3C], attprojw [L, C, C], attprojb, ln2w, ln2b [L, C], fcw [L, 4C, C], fcb
//     [L, 4C], fcprojw [L, C, 4C], fcprojb [L, C], lnfw, lnfb [C], in that order;
//     weights [out, in] like heiretsu's.
// A model that fits none (MoE, a fact that differs between layers: "mixed", rmsnorm with
// learned positions, an untied head with a bias...) is refused naming each fact that
// does not fit and the format it does not fit. Vocabulary: the file has the logical
// vocabulary's V rows, not padded_vocab's.
#ifndef HEIRETSU_RUNTIME_EXPORT_LAYOUT_H_
#define HEIRETSU_RUNTIME_EXPORT_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/export/json.h"
#include "runtime/export/model.h"

namespace heiretsu::weights {

struct Piece {
  std::string param;  // empty: `rows` rows of zeros
  int64_t rows = 0;   // the parameter's first `rows` rows
  // > 0: the rows form attention heads of this many rows, heiretsu's interleaved RoPE
  // pairs on one side and Hugging Face's halves on the other.
  int64_t rope_head_dim = 0;
};

struct FileTensor {
  std::string name;
  std::vector<int64_t> shape;  // as the file declares it
  int64_t cols = 1;            // values per row of every piece
  std::vector<Piece> pieces;   // stacked along the rows: an [R, cols] matrix
  bool transpose = false;      // the file holds [cols, R]
  int64_t numel() const;
};

enum class Family { kGpt2, kLlama };

struct FileLayout {
  Family family = Family::kGpt2;
  std::string description;          // "Hugging Face GPT-2", "Hugging Face Llama", "llm.c GPT-2"
  std::vector<FileTensor> tensors;  // in file order
  // llm.c's header words 2..7 (maxT, V, L, NH, C, Vp); safetensors: unused.
  int32_t llmc_header[6] = {0, 0, 0, 0, 0, 0};
};

// The Hugging Face layout of `card` (family by the facts above), tensors in name
// order (the order safetensors' own writer lays them out in). Refusals are kBadInput.
Status HuggingFaceLayout(const ModelCard& card, FileLayout* layout);

// The llm.c layout of `card`.
Status LlmcLayout(const ModelCard& card, FileLayout* layout);

// The file tensor's values from the parameters (export).
void Gather(const FileTensor& t, const Values& values, float* out);

// The parameters' rows from the file tensor's values (import); zero rows are skipped.
void Scatter(const FileTensor& t, const float* in, Values* values);

// Hugging Face's config.json for `card` and its layout: GPT2Config or LlamaConfig
// fields (architectures, model_type, sizes, eps, rope_theta, head_dim,
// tie_word_embeddings, torch_dtype "float32", ...), keys sorted, 2-space indent, as
// transformers' save_pretrained writes them.
std::string HuggingFaceConfig(const ModelCard& card, const FileLayout& layout);

// Checks a config.json found beside an imported file against the one `card` would
// export: each model-defining key the file has must agree (numbers to 1e-9 relative;
// null n_inner and a missing head_dim or num_key_value_heads mean HF's defaults);
// rope_scaling must be null. The message names the key, both values and the spec
// line to change. `path` is for messages.
Status CheckHuggingFaceConfig(const std::string& path, const JsonValue& config,
                              const ModelCard& card, const FileLayout& layout);

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_LAYOUT_H_
