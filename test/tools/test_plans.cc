// heiretsu-test-plans: writes hand-built plan directories that the compiler cannot
// produce yet, for the runtime's tests (test/e2e/two_programs.test):
//   heiretsu-test-plans one-stage DIR   a bigram model (embedding -> layernorm ->
//                                       head -> cross-entropy) as one program
//   heiretsu-test-plans two-stage DIR   the same model cut in two pipeline stages
//                                       (pp = 2): stage 0 the embedding and the
//                                       norm, stage 1 the head and the loss, the
//                                       activation sent forward and its gradient
//                                       back (send / recv over pp)
//   heiretsu-test-plans unmatched DIR   the two stages, but stage 1 receives one
//                                       tensor more than stage 0 sends: each program
//                                       verifies alone, the directory does not
//   heiretsu-test-plans one-stage-m4 DIR   one-stage with 4 microbatches per step
//   heiretsu-test-plans two-stage-1f1b DIR two-stage with 4 microbatches on the
//                                       1F1B schedule: stage 0 forward(0), then
//                                       forward(m + 1) backward(m), backward(3), on
//                                       2 activation slots (microbatch m on slot
//                                       m % 2: tokens, what the backward reads and
//                                       h, sent, slotted); stage 1 forward(m)
//                                       backward(m) on one. Stage 0 sends
//                                       activation m + 1 before it receives gradient
//                                       m while stage 1 sends gradient m before it
//                                       receives activation m + 1: only sends that
//                                       do not wait for their recv get through.
// All train the same model: the same parameters (by name), the same instruction
// order per microbatch, so their losses must match (at the same microbatches).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/plan/plan.h"
#include "test/unit/plan_builder.h"

namespace {

namespace fb = heiretsu::plan::fb;
namespace op = heiretsu::plan::op;
using B = uint32_t;
using heiretsu::plan::kNoBuffer;
using heiretsu::testing::PlanBuilder;

constexpr int64_t kVocab = 256, kBatch = 2, kSeq = 16, kC = 16, kRows = kBatch * kSeq;

struct Stage0 {  // the embedding and the norm; h goes to stage 1, dh comes back
  uint32_t tokens, wte, dwte, g, dg, beta, dbeta, x, h, mean, rstd, dh, dx;
  void Declare(PlanBuilder& b) {
    tokens = b.Buffer("tokens", {kBatch, kSeq}, fb::DType_I32);
    std::tie(wte, dwte) = b.Param("wte", {kVocab, kC}, fb::Init_Normal, 0.02, true);
    std::tie(g, dg) = b.Param("norm.weight", {kC}, fb::Init_Ones, 0, false);
    std::tie(beta, dbeta) = b.Param("norm.bias", {kC}, fb::Init_Zeros, 0, false);
    x = b.Buffer("x", {kRows, kC});
    h = b.Buffer("h", {kRows, kC});
    mean = b.Buffer("mean", {kRows});
    rstd = b.Buffer("rstd", {kRows});
    dh = b.Buffer("dh", {kRows, kC});
    dx = b.Buffer("dx", {kRows, kC});
  }
  void Forward(PlanBuilder& b) {
    b.Forward(op::Embedding<B>{.ids = tokens, .table = wte, .out = x, .rows = kRows, .seq = kSeq,
                               .vocab = kVocab, .c = kC, .context = kSeq});
    b.Forward(op::LayerNorm<B>{.x = x, .w = g, .b = beta, .y = h, .mean = mean, .rstd = rstd,
                               .rows = kRows, .c = kC, .eps = 1e-5});
  }
  void Backward(PlanBuilder& b) {
    b.Backward(op::LayerNormGrad<B>{.dy = dh, .x = x, .w = g, .mean = mean, .rstd = rstd,
                                    .dx = dx, .dw = dg, .db = dbeta, .rows = kRows, .c = kC});
    b.Backward(op::EmbeddingGrad<B>{.ids = tokens, .dout = dx, .dtable = dwte, .rows = kRows,
                                    .seq = kSeq, .vocab = kVocab, .c = kC, .context = kSeq});
  }
};

struct Stage1 {  // the head and the loss
  uint32_t targets, head, dhead, h, logits, lse, loss, dlogits, dh;
  void Declare(PlanBuilder& b, uint32_t h_in, uint32_t dh_in) {
    targets = b.Buffer("targets", {kBatch, kSeq}, fb::DType_I32);
    std::tie(head, dhead) = b.Param("lm_head.weight", {kVocab, kC}, fb::Init_Normal, 0.02, true);
    h = h_in != kNoBuffer ? h_in : b.Buffer("h", {kRows, kC});
    dh = dh_in != kNoBuffer ? dh_in : b.Buffer("dh", {kRows, kC});
    logits = b.Buffer("logits", {kRows, kVocab});
    lse = b.Buffer("lse", {kRows});
    loss = b.Buffer("loss", {1});
    dlogits = b.Buffer("dlogits", {kRows, kVocab});
  }
  void Forward(PlanBuilder& b) {
    b.Forward(op::Linear<B>{.x = h, .w = head, .y = logits, .rows = kRows, .in = kC, .out = kVocab});
    b.Forward(op::CrossEntropy<B>{.logits = logits, .targets = targets, .loss = loss, .lse = lse,
                                  .rows = kRows, .vocab = kVocab, .valid = kVocab});
  }
  void Backward(PlanBuilder& b, int64_t microbatches) {
    b.Backward(op::CrossEntropyGrad<B>{.logits = logits, .targets = targets, .lse = lse,
                                       .dlogits = dlogits, .rows = kRows, .vocab = kVocab,
                                       .valid = kVocab,
                                       .dloss = 1.0 / static_cast<double>(microbatches)});
    b.Backward(op::LinearGrad<B>{.dy = dlogits, .x = h, .w = head, .dx = dh, .dw = dhead,
                                 .rows = kRows, .in = kC, .out = kVocab});
  }
};

int Write(const std::string& dir, int stage, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + heiretsu::plan::ProgramFileName(stage);
  if (auto err = heiretsu::plan::VerifyPlan(path, bytes)) {
    std::fprintf(stderr, "heiretsu-test-plans: %s\n", err->message.c_str());
    return 1;
  }
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  std::printf("wrote %s\n", path.c_str());
  return 0;
}

// A schedule entry: unit (0 forward, 1 backward, 2 update), microbatch, slot.
fb::Run Entry(uint32_t unit, int32_t microbatch, int32_t slot = 0) {
  return fb::Run(unit, microbatch, 0, slot);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  if (mode != "one-stage" && mode != "two-stage" && mode != "unmatched" &&
      mode != "one-stage-m4" && mode != "two-stage-1f1b") {
    std::fprintf(stderr,
                 "usage: heiretsu-test-plans one-stage|two-stage|unmatched|one-stage-m4|"
                 "two-stage-1f1b DIR\n");
    return 2;
  }
  const std::string dir = argv[2];
  const bool pipelined = mode == "two-stage-1f1b";
  const int64_t microbatches = mode == "one-stage-m4" || pipelined ? 4 : 1;
  if (mode == "one-stage" || mode == "one-stage-m4") {
    PlanBuilder b;
    Stage0 s0;
    Stage1 s1;
    s0.Declare(b);
    s1.Declare(b, s0.h, s0.dh);
    s0.Forward(b);
    s1.Forward(b);
    s1.Backward(b, microbatches);
    s0.Backward(b);
    return Write(dir, 0,
                 b.Finish(kBatch, kSeq, kVocab, microbatches, s0.tokens, s1.targets, s1.loss));
  }
  {
    PlanBuilder b;
    b.SetMesh(1, 2, 1, 1, 0);
    Stage0 s0;
    s0.Declare(b);
    s0.Forward(b);
    b.Forward(op::Send<B>{.x = s0.h, .axis = heiretsu::plan::kAxisPp, .peer = 1});
    b.Backward(op::Recv<B>{.x = s0.dh, .axis = heiretsu::plan::kAxisPp, .peer = 1});
    s0.Backward(b);
    if (pipelined) {
      // 1F1B of stage 0 of 2: one forward ahead, so two microbatches in flight.
      b.SetSlots(2);
      for (uint32_t kept : {s0.tokens, s0.x, s0.h, s0.mean, s0.rstd}) b.Slotted(kept);
      std::vector<fb::Run> schedule = {Entry(0, 0, 0)};
      for (int32_t m = 0; m + 1 < microbatches; ++m) {
        schedule.push_back(Entry(0, m + 1, (m + 1) % 2));
        schedule.push_back(Entry(1, m, m % 2));
      }
      schedule.push_back(Entry(1, static_cast<int32_t>(microbatches - 1),
                               static_cast<int32_t>((microbatches - 1) % 2)));
      schedule.push_back(Entry(2, -1));
      b.SetSchedule(schedule);
    }
    if (int rc = Write(dir, 0, b.Finish(kBatch, kSeq, kVocab, microbatches, s0.tokens, kNoBuffer,
                                        kNoBuffer)))
      return rc;
  }
  PlanBuilder b;
  b.SetMesh(1, 2, 1, 1, 1);
  Stage1 s1;
  s1.Declare(b, kNoBuffer, kNoBuffer);
  b.Forward(op::Recv<B>{.x = s1.h, .axis = heiretsu::plan::kAxisPp, .peer = 0});
  if (mode == "unmatched") b.Forward(op::Recv<B>{.x = s1.h, .axis = heiretsu::plan::kAxisPp, .peer = 0});
  s1.Forward(b);
  s1.Backward(b, microbatches);
  b.Backward(op::Send<B>{.x = s1.dh, .axis = heiretsu::plan::kAxisPp, .peer = 0});
  return Write(dir, 1,
               b.Finish(kBatch, kSeq, kVocab, microbatches, kNoBuffer, s1.targets, s1.loss));
}
