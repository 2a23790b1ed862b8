// A model's weights outside the training state (runtime/export): what `heiretsu export`
// reads from a checkpoint or a plan and `heiretsu import` fills from a file.
//
// The model card is what a plan states about its model (plan.fbs: name, tokenizer,
// spec, and `config`, the resolved hyperparameters and architecture facts such as
// norm = layernorm|rmsnorm), with the logical parameters: names and global shapes as
// checkpoints store them (linear weights [out, in], like torch.nn.Linear). The plan of
// any layout gives the same card: parameters are logical, and a tensor two pipeline
// stages hold (a tied embedding) is listed once.
#ifndef HEIRETSU_RUNTIME_EXPORT_MODEL_H_
#define HEIRETSU_RUNTIME_EXPORT_MODEL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/plan/plan.h"

namespace heiretsu::weights {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;  // global
  plan::fb::Init init = plan::fb::Init_Zeros;
  double std = 0;  // for Init_Normal
  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return rows() == 0 ? 0 : numel() / rows(); }  // values per row
};

struct ModelCard {
  std::string model;
  std::string tokenizer;  // "byte", "gpt2" or ""
  std::string spec, spec_file;
  std::vector<std::pair<std::string, std::string>> config;  // in name order
  std::vector<ParamInfo> params;  // in plan order (program 0's first)

  // The value of fact `key`, or nullopt.
  std::optional<std::string> Config(const std::string& key) const;
  // The integer fact `key` (a missing or non-integer fact: kBadInput naming it).
  Status ConfigInt(const std::string& key, int64_t* out) const;
  const ParamInfo* Param(const std::string& name) const;
  int64_t num_values() const;
};

// The card of a plan directory's programs (LoadPlanDirectory's result).
ModelCard CardOf(const std::vector<plan::LoadedPlan>& programs);

// Parameter values by name, each numel(shape) floats.
using Values = std::map<std::string, std::vector<float>>;

// Every parameter as heiretsu-rank initializes it from `seed` (runtime/init: normal
// ones from (seed, name, index), norms' weights ones, biases zeros): the model a run
// of that seed starts from.
void InitialValues(const ModelCard& card, uint64_t seed, Values* values);

// Every parameter zero, sized by its shape (what an import fills).
void ZeroValues(const ModelCard& card, Values* values);

// "[D0, D1, ...]", the way safetensors tools and Python print a shape.
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_MODEL_H_
