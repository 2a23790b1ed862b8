// A small helper for tests that build plans by hand with the generated FlatBuffers
// API (the same API the compiler's emitter uses): buffers are laid out one after
// another in the arena, 64-byte aligned.
#ifndef HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
#define HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_

#include <string>
#include <vector>

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::testing {

class PlanBuilder {
 public:
  uint32_t Buffer(const std::string& name, std::vector<int64_t> shape,
                  plan::fb::DType dtype = plan::fb::DType_F32) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    buffers_.push_back(
        plan::fb::CreateBufferDirect(fbb_, name.c_str(), arena_, dtype, &shape));
    arena_ += (static_cast<uint64_t>(n) * 4 + 63) / 64 * 64;
    return static_cast<uint32_t>(buffers_.size() - 1);
  }

  // A parameter with its value, gradient and AdamW moments; returns {value, grad}.
  std::pair<uint32_t, uint32_t> Param(const std::string& name, std::vector<int64_t> shape,
                                      plan::fb::Init init, double std, bool decay) {
    uint32_t value = Buffer(name, shape), grad = Buffer(name + ".grad", shape);
    uint32_t m = Buffer(name + ".exp_avg", shape), v = Buffer(name + ".exp_avg_sq", shape);
    params_.push_back(plan::fb::CreateParamDirect(fbb_, name.c_str(), &shape, init, std, decay,
                                                  value, grad, m, v));
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    update_.push_back(Instr(plan::fb::Op_ClipAndAdamW, {value, grad, m, v}, {n, decay ? 1 : 0}));
    grads_.push_back(grad);
    return {value, grad};
  }

  flatbuffers::Offset<plan::fb::Instr> Instr(plan::fb::Op op, std::vector<uint32_t> buffers,
                                             std::vector<int64_t> ints,
                                             std::vector<double> floats = {}) {
    return plan::fb::CreateInstrDirect(fbb_, op, &buffers, &ints, &floats);
  }

  void Micro(plan::fb::Op op, std::vector<uint32_t> buffers, std::vector<int64_t> ints,
             std::vector<double> floats = {}) {
    microbatch_.push_back(Instr(op, std::move(buffers), std::move(ints), std::move(floats)));
  }

  // Finishes the plan: the update stream is the gradient norm, then AdamW per param.
  std::vector<uint8_t> Finish(int64_t batch, int64_t seq, int64_t vocab, int64_t microbatches,
                              uint32_t tokens, uint32_t targets, uint32_t loss,
                              uint32_t version = plan::kPlanVersion) {
    std::vector<flatbuffers::Offset<plan::fb::Instr>> update;
    update.push_back(Instr(plan::fb::Op_GradNormSq, grads_, {}));
    update.insert(update.end(), update_.begin(), update_.end());
    plan::fb::Mesh mesh(1, 1, 1, 1);
    auto opt = plan::fb::CreateOptimizer(fbb_);
    auto root = plan::fb::CreatePlanDirect(fbb_, version, "test", &mesh, 0, batch, microbatches,
                                           seq, vocab, arena_, 0, 0, &buffers_, &params_, tokens,
                                           targets, loss, &microbatch_, &update, opt);
    plan::fb::FinishSizePrefixedPlanBuffer(fbb_, root);
    return std::vector<uint8_t>(fbb_.GetBufferPointer(),
                                fbb_.GetBufferPointer() + fbb_.GetSize());
  }

 private:
  flatbuffers::FlatBufferBuilder fbb_;
  uint64_t arena_ = 0;
  std::vector<flatbuffers::Offset<plan::fb::Buffer>> buffers_;
  std::vector<flatbuffers::Offset<plan::fb::Param>> params_;
  std::vector<flatbuffers::Offset<plan::fb::Instr>> microbatch_, update_;
  std::vector<uint32_t> grads_;
};

}  // namespace heiretsu::testing

#endif  // HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
