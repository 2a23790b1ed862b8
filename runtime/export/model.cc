#include "runtime/export/model.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "runtime/init/init.h"

namespace heiretsu::weights {

int64_t ParamInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::optional<std::string> ModelCard::Config(const std::string& key) const {
  for (const auto& [k, v] : config)
    if (k == key) return v;
  return std::nullopt;
}

Status ModelCard::ConfigInt(const std::string& key, int64_t* out) const {
  const std::optional<std::string> v = Config(key);
  if (!v) return Error::BadInput("model '" + model + "': its plan states no '" + key + "'");
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0)
    return Error::BadInput("model '" + model + "': " + key + " = '" + *v +
                           "' is not an integer");
  *out = n;
  return std::nullopt;
}

const ParamInfo* ModelCard::Param(const std::string& name) const {
  for (const ParamInfo& p : params)
    if (p.name == name) return &p;
  return nullptr;
}

int64_t ModelCard::num_values() const {
  int64_t n = 0;
  for (const ParamInfo& p : params) n += p.numel();
  return n;
}

ModelCard CardOf(const std::vector<plan::LoadedPlan>& programs) {
  ModelCard card;
  const plan::fb::Plan& first = *programs[0].plan;
  auto str = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
  card.model = str(first.model());
  card.tokenizer = str(first.tokenizer());
  card.spec = str(first.spec());
  card.spec_file = str(first.spec_file());
  if (first.config())
    for (const plan::fb::KeyValue* kv : *first.config())
      card.config.emplace_back(str(kv->key()), str(kv->value()));
  std::set<std::string> seen;
  for (const plan::LoadedPlan& program : programs)
    for (const plan::fb::Param* p : *program.plan->params()) {
      if (!seen.insert(p->name()->str()).second) continue;
      ParamInfo info;
      info.name = p->name()->str();
      info.shape.assign(p->shape()->begin(), p->shape()->end());
      info.init = p->init();
      info.std = p->std();
      card.params.push_back(std::move(info));
    }
  return card;
}

void InitialValues(const ModelCard& card, uint64_t seed, Values* values) {
  values->clear();
  for (const ParamInfo& p : card.params) {
    std::vector<float>& v = (*values)[p.name];
    v.assign(static_cast<size_t>(p.numel()), 0.f);
    switch (p.init) {
      case plan::fb::Init_Zeros:
        break;
      case plan::fb::Init_Ones:
        std::fill(v.begin(), v.end(), 1.f);
        break;
      case plan::fb::Init_Normal:
        init::FillNormal(seed, p.name, p.std, 0, p.numel(), v.data());
        break;
    }
  }
}

void ZeroValues(const ModelCard& card, Values* values) {
  values->clear();
  for (const ParamInfo& p : card.params)
    (*values)[p.name].assign(static_cast<size_t>(p.numel()), 0.f);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace heiretsu::weights
