// Checkpoints (runtime/checkpoint) on a hand-built bigram plan: a save/load round trip
// restores the training state bit for bit; a run stopped, saved and resumed in a fresh
// executor logs the same losses, bit for bit, as a run never interrupted; incomplete,
// corrupt and mismatched checkpoints are refused with messages naming the file and the
// value; FindLatestCheckpoint skips what it cannot trust. A checkpoint written by two
// writers (two tensor files, one manifest) loads whole and in parts, and a missing or
// corrupt second file makes it not loadable.
#include "runtime/checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/data/shards.h"
#include "runtime/exec/executor.h"
#include "test/unit/plan_builder.h"

namespace heiretsu {
namespace {

namespace fs = std::filesystem;
namespace fb = plan::fb;
using checkpoint::Header;
using checkpoint::Tensor;

constexpr int64_t kVocab = 16, kBatch = 2, kSeq = 8, kRows = kBatch * kSeq;
constexpr int64_t kMicrobatches = 2, kGlobalBatch = kBatch * kMicrobatches;

struct Variant {
  int64_t c = 8;
  std::string head = "lm_head.weight";
  bool extra_param = false;  // a parameter no instruction reads
};

std::vector<uint8_t> BuildBigram(const Variant& v) {
  testing::BigramOptions o;
  o.vocab = kVocab;
  o.batch = kBatch;
  o.seq = kSeq;
  o.c = v.c;
  o.microbatches = kMicrobatches;
  o.head = v.head;
  o.extra_param = v.extra_param;
  return testing::BuildBigram(o);
}

// A verified plan and an executor of it; the executor points into the plan, so both
// live (and move) together.
struct Model {
  explicit Model(const Variant& v = Variant()) {
    plan.path = "bigram.hplan";
    plan.bytes = BuildBigram(v);
    auto err = plan::VerifyPlan(plan.path, plan.bytes);
    EXPECT_FALSE(err.has_value()) << *err;
    plan.plan = fb::GetSizePrefixedPlan(plan.bytes.data());
    executor = std::make_unique<exec::Executor>(plan);
  }
  std::vector<Tensor> State() { return checkpoint::TrainingState(executor.get()); }

  plan::LoadedPlan plan;
  std::unique_ptr<exec::Executor> executor;
};

std::string Message(const std::optional<data::DataError>& err) { return err ? err->message : ""; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The checksum of checkpoint.h, written independently of the code under test.
uint64_t ReferenceChecksum(std::string bytes) {
  bytes.resize((bytes.size() + 7) / 8 * 8, '\0');
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < bytes.size(); i += 8) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k)
      word |= uint64_t{static_cast<unsigned char>(bytes[i + k])} << (8 * k);
    h = (h ^ word) * 0x100000001b3ull;
  }
  return h;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// Writes `body` (a manifest's lines without its last) as dir's manifest, sealed with
// its manifest_checksum line.
void WriteManifest(const std::string& dir, const std::string& body) {
  WriteAll(dir + "/manifest.txt",
           body + "manifest_checksum fnv1a64w " + Hex(ReferenceChecksum(body)) + "\n");
}

std::string TensorBytes(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return std::string(reinterpret_cast<const char*>(t.data), 4 * n);
}

// A learning rate that changes every step, so that a resumed run would diverge if it
// restarted any schedule.
double Lr(int64_t step) { return 1e-3 + 0.02 * (1 + std::cos(3.14159 * step / 20.0)) / 2; }

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "heiretsu_checkpoint_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/ckpt";
    // A token stream that mostly follows next = (3t + 1) mod 16, with noise, so the model
    // keeps learning and every step's loss differs.
    std::vector<uint16_t> tokens(3000);
    uint32_t lcg = 12345, t = 0;
    for (uint16_t& token : tokens) {
      lcg = lcg * 1664525u + 1013904223u;
      t = (lcg >> 28) < 3 ? (lcg >> 20) % kVocab : (3 * t + 1) % kVocab;
      token = static_cast<uint16_t>(t);
    }
    const std::string shard = dir_ + "/train_000000.bin";
    ASSERT_EQ(Message(data::WriteShard(shard, tokens)), "");
    ASSERT_EQ(Message(data::LoadDataset({shard}, kVocab, &dataset_)), "");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Steps [first, last] of a run with `seed`, on `model`, with a sampler created here:
  // nothing but the step number and the checkpointed state may carry over.
  std::vector<exec::StepResult> Train(Model* model, uint64_t seed, int64_t first, int64_t last) {
    std::optional<data::Sampler> sampler;
    EXPECT_EQ(Message(data::Sampler::Create(dataset_, seed, kSeq, &sampler)), "");
    std::vector<exec::StepResult> results;
    for (int64_t step = first; step <= last; ++step) {
      exec::StepOptions o;
      o.lr = Lr(step);
      o.weight_decay = 0.1;
      o.grad_clip = 1.0;
      o.step = step;
      exec::StepResult r;
      auto err = model->executor->Step(
          [&](int64_t m, int32_t* t, int32_t* y) {
            sampler->FillBatchRows(step - 1, kGlobalBatch, m * kBatch, (m + 1) * kBatch, t, y);
          },
          o, &r);
      EXPECT_FALSE(err.has_value()) << *err;
      results.push_back(r);
    }
    return results;
  }

  Header At(int64_t step, uint64_t seed = 1337) {
    Header h;
    h.model = "test";
    h.step = step;
    h.seed = seed;
    h.global_batch = kGlobalBatch;
    h.seq = kSeq;
    h.tokenizer = "byte";
    h.spec = "model \"test\" {\n\n  vocab = 16\n}\n";
    h.spec_file = "test.hr";
    h.lr = 3e-4;
    h.min_lr = 3e-5;
    h.warmup = 2;
    h.total_steps = 40;
    return h;
  }

  // Trains `model` for `steps` steps from seed 1337 and saves it as step `steps`.
  std::string TrainAndSave(Model* model, int64_t steps) {
    model->executor->InitializeParameters(1337);
    Train(model, 1337, 1, steps);
    std::string dir;
    EXPECT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(steps), model->State(), &dir)), "");
    return dir;
  }

  std::string dir_, root_;
  data::Dataset dataset_;
};

TEST_F(CheckpointTest, RoundTripRestoresTheStateBitForBit) {
  Model a;
  const std::string dir = TrainAndSave(&a, 3);
  EXPECT_EQ(dir, root_ + "/step_00000003");

  Model b;
  b.executor->InitializeParameters(99);  // another init, to be overwritten
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  EXPECT_EQ(h.model, "test");
  EXPECT_EQ(h.step, 3);
  EXPECT_EQ(h.seed, 1337u);
  EXPECT_EQ(h.global_batch, kGlobalBatch);
  EXPECT_EQ(h.seq, kSeq);
  // The model card and the schedule come back as they were saved.
  EXPECT_EQ(h.tokenizer, "byte");
  EXPECT_EQ(h.spec, At(3).spec);
  EXPECT_EQ(h.spec_file, "test.hr");
  EXPECT_EQ(h.lr, 3e-4);
  EXPECT_EQ(h.min_lr, 3e-5);
  EXPECT_EQ(h.warmup, 2);
  EXPECT_EQ(h.total_steps, 40);
  Header read;
  ASSERT_EQ(Message(checkpoint::ReadHeader(dir, &read)), "");
  EXPECT_EQ(read.spec, h.spec);
  const std::vector<Tensor> sa = a.State(), sb = b.State();
  ASSERT_EQ(sa.size(), 12u);  // 4 parameters x (value, exp_avg, exp_avg_sq)
  bool moments_nonzero = false;
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(TensorBytes(sa[i]), TensorBytes(sb[i]))
        << sa[i].name << " " << checkpoint::TensorKindName(sa[i].kind);
    if (sa[i].kind == checkpoint::TensorKind::kExpAvgSq && sa[i].data[0] != 0)
      moments_nonzero = true;
  }
  EXPECT_TRUE(moments_nonzero);

  // The files are what checkpoint.h describes.
  const std::string manifest = ReadAll(dir + "/manifest.txt");
  const std::string tensors = ReadAll(dir + "/tensors.bin");
  const size_t last = manifest.rfind('\n', manifest.size() - 2) + 1;
  EXPECT_EQ(manifest.substr(last), "manifest_checksum fnv1a64w " +
                                       Hex(ReferenceChecksum(manifest.substr(0, last))) + "\n");
  const std::string head =
      "heiretsu-checkpoint 4\nmodel test\nstep 3\ndata_position 4\nseed 1337\nglobal_batch 4\n"
      "seq 8\ntokenizer byte\nlr 0.00029999999999999997\nmin_lr 3.0000000000000001e-05\n"
      "warmup 2\ntotal_steps 40\nloss_scaling none\nloss_scale 1\nloss_scale_clean_steps 0\n"
      "loss_scale_overflows 0\nupdates 3\nspec_file test.hr\nspec_lines 4\n| model \"test\" {\n| \n"
      "|   vocab = 16\n| }\nfiles 1\nfile tensors.bin " +
      std::to_string(tensors.size()) + " fnv1a64w " + Hex(ReferenceChecksum(tensors)) +
      "\ntensors 12\n"
      "tensor wte value f32 [16,8] tensors.bin 0 512\n"
      "tensor wte exp_avg f32 [16,8] tensors.bin 512 512\n"
      "tensor wte exp_avg_sq f32 [16,8] tensors.bin 1024 512\n"
      "tensor norm.weight value f32 [8] tensors.bin 1536 32\n"
      "tensor norm.weight exp_avg f32 [8] tensors.bin 1600 32\n";
  EXPECT_EQ(manifest.substr(0, head.size()), head);
  EXPECT_EQ(tensors.substr(1536, 32), TensorBytes(sa[3]));
  EXPECT_EQ(tensors.substr(1568, 32), std::string(32, '\0'));  // padding to 64 bytes
}

TEST_F(CheckpointTest, ResumedRunLogsBitIdenticalLosses) {
  Model whole;
  whole.executor->InitializeParameters(1337);
  const std::vector<exec::StepResult> expected = Train(&whole, 1337, 1, 20);

  Model first;
  const std::string dir = TrainAndSave(&first, 10);
  first.executor.reset();  // nothing of the first run survives but the files

  Model second;
  std::string found;
  std::vector<std::string> warnings;
  ASSERT_EQ(Message(checkpoint::FindLatestCheckpoint(root_, &found, &warnings)), "");
  EXPECT_EQ(found, dir);
  EXPECT_TRUE(warnings.empty());
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(found, "test", second.State(), &h)), "");
  const std::vector<exec::StepResult> resumed = Train(&second, h.seed, h.step + 1, 20);

  ASSERT_EQ(resumed.size(), 10u);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].loss, expected[10 + i].loss) << "step " << 11 + i;
    EXPECT_EQ(resumed[i].grad_norm, expected[10 + i].grad_norm) << "step " << 11 + i;
  }
  EXPECT_NE(expected[10].loss, expected[19].loss);
  const std::vector<Tensor> sw = whole.State(), ss = second.State();
  for (size_t i = 0; i < sw.size(); ++i) EXPECT_EQ(TensorBytes(sw[i]), TensorBytes(ss[i]));
}

TEST_F(CheckpointTest, CorruptTensorsAreRefused) {
  Model a;
  const std::string dir = TrainAndSave(&a, 2);
  const std::string good = ReadAll(dir + "/tensors.bin");
  std::string bad = good;
  bad[100] ^= 0x10;
  WriteAll(dir + "/tensors.bin", bad);

  Model b;
  Header h;
  const std::string message = dir + "/tensors.bin: checksum " + Hex(ReferenceChecksum(bad)) +
                              " does not match " + Hex(ReferenceChecksum(good)) + " in " + dir +
                              "/manifest.txt (the checkpoint is corrupt)";
  auto err = checkpoint::LoadCheckpoint(dir, "test", b.State(), &h);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->kind, data::DataError::Kind::kBadInput);
  EXPECT_EQ(err->message, message);

  std::string found;
  std::vector<std::string> warnings;
  EXPECT_EQ(Message(checkpoint::FindLatestCheckpoint(root_, &found, &warnings)),
            root_ + ": no complete checkpoint in it (1 incomplete or corrupt)");
  EXPECT_EQ(warnings, std::vector<std::string>{"skipping " + message});

  WriteAll(dir + "/tensors.bin", good.substr(0, good.size() - 4));
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)),
            dir + "/tensors.bin: " + std::to_string(good.size() - 4) + " bytes, but " + dir +
                "/manifest.txt says " + std::to_string(good.size()));
}

TEST_F(CheckpointTest, MissingOrEditedManifestIsRefused) {
  Model a;
  const std::string dir = TrainAndSave(&a, 2);
  const std::string manifest = ReadAll(dir + "/manifest.txt");
  Header h;

  // Pretend the tensor data starts elsewhere: the manifest's own checksum catches it.
  std::string edited = manifest;
  const size_t at = edited.find(" 512 512\n");
  ASSERT_NE(at, std::string::npos);
  edited.replace(at, 4, " 516");
  WriteAll(dir + "/manifest.txt", edited);
  const size_t last = edited.rfind('\n', edited.size() - 2) + 1;
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", a.State(), &h)),
            dir + "/manifest.txt: checksum " + Hex(ReferenceChecksum(edited.substr(0, last))) +
                " of its lines does not match " + Hex(ReferenceChecksum(manifest.substr(0, last))) +
                " on its last line (the manifest is corrupt or was edited)");

  WriteAll(dir + "/manifest.txt", manifest.substr(0, last));
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", a.State(), &h)),
            dir +
                "/manifest.txt: truncated or not a checkpoint manifest (its last line is not "
                "'manifest_checksum fnv1a64w HEX')");

  ASSERT_EQ(::unlink((dir + "/manifest.txt").c_str()), 0);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", a.State(), &h)),
            dir + ": no manifest.txt: an incomplete checkpoint (its save did not finish)");
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir_ + "/absent", "test", a.State(), &h)),
            dir_ + "/absent: cannot open checkpoint directory: No such file or directory");
}

// Format 2 (before model cards): the same manifest without the lines from tokenizer
// to the spec's last loads, with an empty card and schedule; the same lines under
// format 4's version line are refused (they are required there).
TEST_F(CheckpointTest, AFormat2CheckpointLoadsWithoutAModelCard) {
  Model a;
  const std::string dir = TrainAndSave(&a, 2);
  const std::string manifest = ReadAll(dir + "/manifest.txt");
  std::string v2 = manifest.substr(0, manifest.find("tokenizer "));
  v2 += manifest.substr(manifest.find("files "));
  v2 = v2.substr(0, v2.rfind("manifest_checksum "));
  const std::string v4_without_card = v2;
  v2.replace(0, std::string("heiretsu-checkpoint 4").size(), "heiretsu-checkpoint 2");
  WriteManifest(dir, v2);
  Model b;
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  EXPECT_EQ(h.step, 2);
  EXPECT_EQ(h.spec, "");
  EXPECT_EQ(h.tokenizer, "");
  EXPECT_EQ(h.lr, 0);
  const std::vector<Tensor> sa = a.State(), sb = b.State();
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(TensorBytes(sa[i]), TensorBytes(sb[i]));
  WriteManifest(dir, v4_without_card);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)),
            dir + "/manifest.txt:8: expected 'tokenizer ...', got 'files 1'");
}

// Format 3 (before loss scaling): the manifest without the three loss_scale lines
// loads with scale 1 and nothing counted; a format 4 one must have them, and a scale
// that is not a power of two is refused.
TEST_F(CheckpointTest, AFormat3CheckpointLoadsWithoutALossScale) {
  Model a;
  const std::string dir = TrainAndSave(&a, 2);
  const std::string manifest = ReadAll(dir + "/manifest.txt");
  const size_t from = manifest.find("loss_scaling "), to = manifest.find("spec_file ");
  std::string v3 = manifest.substr(0, from) + manifest.substr(to);
  v3 = v3.substr(0, v3.rfind("manifest_checksum "));
  const std::string v4_without_scale = v3;
  v3.replace(0, std::string("heiretsu-checkpoint 4").size(), "heiretsu-checkpoint 3");
  WriteManifest(dir, v3);
  Model b;
  Header h;
  h.loss_scaling = "dynamic";
  h.loss_scale = 8;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  EXPECT_EQ(h.loss_scaling, "none");
  EXPECT_EQ(h.loss_scale, 1);
  EXPECT_EQ(h.loss_scale_overflows, 0);
  EXPECT_EQ(h.lr, 3e-4);
  WriteManifest(dir, v4_without_scale);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)),
            dir + "/manifest.txt:13: expected 'loss_scaling ...', got 'spec_file test.hr'");
  std::string odd = manifest.substr(0, manifest.rfind("manifest_checksum "));
  odd.replace(odd.find("loss_scale 1\n"), 13, "loss_scale 3\n");
  WriteManifest(dir, odd);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)),
            dir + "/manifest.txt:14: loss_scale: 3.000000 is not a power of two in [1, 2^24]");
}

TEST_F(CheckpointTest, AnotherModelIsRefused) {
  Model a;
  const std::string dir = TrainAndSave(&a, 1);
  Header h;
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "other", a.State(), &h)),
            dir + "/manifest.txt: model 'test', but the plan's model is 'other'");

  Variant renamed;
  renamed.head = "head.weight";
  Model b(renamed);
  // Tensor lines start at line 22, in plan order: wte, norm.weight, norm.bias x 3 kinds.
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)),
            dir +
                "/manifest.txt:36: tensor 'lm_head.weight' (value) is not in the plan "
                "(model 'test')");

  Variant narrower;
  narrower.c = 4;
  Model c(narrower);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", c.State(), &h)),
            dir + "/manifest.txt:27: tensor 'wte' (value) has shape [16,8], the plan's is [16,4]");

  Variant larger;
  larger.extra_param = true;
  Model d(larger);
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", d.State(), &h)),
            dir + "/manifest.txt: has no tensor 'extra' (value), which the plan needs");
}

TEST_F(CheckpointTest, FindLatestSkipsIncompleteAndCorruptNewerOnes) {
  Model a;
  a.executor->InitializeParameters(1337);
  std::string dir10, dir20, dir30;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(10), a.State(), &dir10)), "");
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(20), a.State(), &dir20)), "");
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(30), a.State(), &dir30)), "");
  // step 30: its save "crashed" before the manifest; step 20: a flipped bit.
  ASSERT_EQ(::unlink((dir30 + "/manifest.txt").c_str()), 0);
  std::string bytes = ReadAll(dir20 + "/tensors.bin");
  bytes[7] ^= 1;
  WriteAll(dir20 + "/tensors.bin", bytes);
  // Names that are not checkpoints are ignored.
  fs::create_directories(root_ + "/step_99");
  fs::create_directories(root_ + "/notes");

  std::string found;
  std::vector<std::string> warnings;
  ASSERT_EQ(Message(checkpoint::FindLatestCheckpoint(root_, &found, &warnings)), "");
  EXPECT_EQ(found, dir10);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0], "skipping " + dir30 +
                             ": no manifest.txt: an incomplete checkpoint (its save did not "
                             "finish)");
  EXPECT_EQ(warnings[1].substr(0, 9 + dir20.size() + 22),
            "skipping " + dir20 + "/tensors.bin: checksum");

  // A checkpoint directory itself may be given.
  warnings.clear();
  ASSERT_EQ(Message(checkpoint::FindLatestCheckpoint(dir10, &found, &warnings)), "");
  EXPECT_EQ(found, dir10);

  EXPECT_EQ(Message(checkpoint::FindLatestCheckpoint(dir_ + "/absent", &found, &warnings)),
            dir_ + "/absent: cannot open checkpoint directory: No such file or directory");
  fs::create_directories(dir_ + "/empty");
  EXPECT_EQ(Message(checkpoint::FindLatestCheckpoint(dir_ + "/empty", &found, &warnings)),
            dir_ + "/empty: no checkpoint in it (no step_NNNNNNNN directory)");
}

TEST_F(CheckpointTest, SavingAStepAgainReplacesIt) {
  Model a;
  a.executor->InitializeParameters(1337);
  std::string dir;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(5), a.State(), &dir)), "");
  Train(&a, 1337, 1, 1);  // changes the state
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(5), a.State(), &dir)), "");
  Model b;
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  const std::vector<Tensor> sa = a.State(), sb = b.State();
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(TensorBytes(sa[i]), TensorBytes(sb[i]));
}

// Rewrites `dir`'s tensors.bin with `bytes` and both checksums to match, as a runtime
// that did not check values would have written it.
void RewriteTensorsConsistently(const std::string& dir, const std::string& bytes) {
  WriteAll(dir + "/tensors.bin", bytes);
  std::string manifest = ReadAll(dir + "/manifest.txt");
  const size_t sum = manifest.find(" fnv1a64w ", manifest.find("\nfile tensors.bin ")) + 10;
  manifest.replace(sum, 16, Hex(ReferenceChecksum(bytes)));
  const size_t last = manifest.rfind('\n', manifest.size() - 2) + 1;
  WriteManifest(dir, manifest.substr(0, last));
}

TEST_F(CheckpointTest, NonFiniteStateIsNeverSaved) {
  Model a;
  a.executor->InitializeParameters(1337);
  std::string dir;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(4), a.State(), &dir)), "");
  const std::string before = ReadAll(dir + "/tensors.bin");
  std::vector<Tensor> state = a.State();
  state[3].data[5] = std::nanf("");  // norm.weight (value)
  state[4].data[0] = INFINITY;       // norm.weight (exp_avg)
  auto err = checkpoint::SaveCheckpoint(root_, At(4), state, &dir);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->kind, Error::Kind::kFailure);
  EXPECT_EQ(err->message, "not saving checkpoint " + root_ +
                              "/step_00000004: tensor 'norm.weight' (value) holds 1 values that "
                              "are not finite (the first at index 5); a checkpoint is never "
                              "written from non-finite state");
  // The older checkpoint of that step is untouched, and no new step appears.
  EXPECT_EQ(ReadAll(dir + "/tensors.bin"), before);
  Header h;
  Model b;
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  EXPECT_FALSE(checkpoint::SaveCheckpoint(root_, At(5), state, &dir) == std::nullopt);
  EXPECT_FALSE(fs::exists(root_ + "/step_00000005"));
}

TEST_F(CheckpointTest, ResumeSkipsNonFiniteAndMismatchedCheckpointsAlike) {
  Model a;
  a.executor->InitializeParameters(1337);
  std::string dir10, dir20, dir30;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(10), a.State(), &dir10)), "");
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(20), a.State(), &dir20)), "");
  // step 20: NaN values with checksums that match (a run that diverged, saved by a
  // runtime that did not check); step 30: another model width.
  std::string bytes = ReadAll(dir20 + "/tensors.bin");
  const float nan = std::nanf("");
  std::memcpy(bytes.data() + 64, &nan, 4);
  RewriteTensorsConsistently(dir20, bytes);
  Variant narrower;
  narrower.c = 4;
  Model c(narrower);
  c.executor->InitializeParameters(1);
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(30), c.State(), &dir30)), "");

  std::string found;
  std::vector<std::string> warnings;
  ASSERT_EQ(Message(checkpoint::FindLatestCheckpoint(root_, &found, &warnings)), "");
  EXPECT_EQ(found, dir30);  // complete and intact: only resume knows the plan
  warnings.clear();
  EXPECT_EQ(Message(checkpoint::FindLatestCheckpoint(dir20, &found, &warnings)),
            dir20 + "/tensors.bin: 1 of its values are not finite (NaN or infinity): the "
                    "checkpoint of a diverged run is never resumed");

  Model b;
  Header h;
  std::vector<std::string> skipped;
  ASSERT_EQ(Message(checkpoint::ResumeNewest(root_, "test", b.State(), nullptr, &found, &h,
                                             &skipped)),
            "");
  EXPECT_EQ(found, dir10);
  EXPECT_EQ(h.step, 10);
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_EQ(skipped[0], "skipping " + dir30 +
                            "/manifest.txt:27: tensor 'wte' (value) has shape [16,4], the "
                            "plan's is [16,8]");
  EXPECT_EQ(skipped[1], "skipping " + dir20 +
                            "/tensors.bin: 1 of its values are not finite (NaN or infinity): the "
                            "checkpoint of a diverged run is never resumed");

  // The caller's own condition is one more reason to pass a checkpoint over.
  skipped.clear();
  auto only_10 = [](const std::string& d, const Header& hd) -> Status {
    if (hd.step == 10) return std::nullopt;
    return Error::BadInput(d + ": not step 10");
  };
  EXPECT_EQ(Message(checkpoint::ResumeNewest(dir30, "test", c.State(), only_10, &found, &h,
                                             &skipped)),
            dir30 + ": not step 10");
  EXPECT_EQ(Message(checkpoint::ResumeNewest(root_, "test", c.State(), only_10, &found, &h,
                                             &skipped)),
            root_ + ": none of its 3 checkpoints can be resumed by this run (each is named "
                    "above with the reason)");
}

TEST_F(CheckpointTest, AStepDirectoryWithoutManifestIsNamedIncomplete) {
  Model a;
  const std::string dir = TrainAndSave(&a, 2);
  ASSERT_EQ(::unlink((dir + "/manifest.txt").c_str()), 0);
  std::string found;
  std::vector<std::string> warnings;
  EXPECT_EQ(Message(checkpoint::FindLatestCheckpoint(dir, &found, &warnings)),
            dir + ": no manifest.txt: an incomplete checkpoint (its save did not finish)");
  Header h;
  EXPECT_EQ(Message(checkpoint::ResumeNewest(dir + "/", "test", a.State(), nullptr, &found, &h,
                                             &warnings)),
            dir + "/: no manifest.txt: an incomplete checkpoint (its save did not finish)");
}

TEST_F(CheckpointTest, SavingRemovesTemporariesOfDeadWritersOnly) {
  Model a;
  a.executor->InitializeParameters(1337);
  std::string dir;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(3), a.State(), &dir)), "");
  // A writer that died (a child that exited), one alive (this process), and a step
  // directory holding nothing but a dead writer's temporary.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  const std::string dead = dir + "/tensors.bin.tmp." + std::to_string(child) + ".0";
  const std::string alive = dir + "/tensors.bin.tmp." + std::to_string(::getpid()) + ".7";
  const std::string lone_dir = root_ + "/step_00000004";
  const std::string lone = lone_dir + "/manifest.txt.tmp." + std::to_string(child) + ".1";
  fs::create_directories(lone_dir);
  for (const std::string& f : {dead, alive, lone}) WriteAll(f, "partial");
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(6), a.State(), &dir)), "");
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(alive));
  EXPECT_FALSE(fs::exists(lone_dir));
  EXPECT_TRUE(fs::exists(root_ + "/step_00000003/manifest.txt"));
}

// The tensors of `state` from `begin` to `end`: one writer's part.
std::vector<Tensor> Slice(const std::vector<Tensor>& state, size_t begin, size_t end) {
  return std::vector<Tensor>(state.begin() + begin, state.begin() + end);
}

// Saves `state` as two writers would: wte and the norm (9 tensors) in tensors.bin by
// this process, the head (3) in tensors.1.bin by another (a child process), then the
// manifest by this one. Returns the step directory.
std::string SaveAsTwoWriters(const std::string& root, const Header& header,
                             const std::vector<Tensor>& state) {
  const std::vector<Tensor> part0 = Slice(state, 0, 9), part1 = Slice(state, 9, 12);
  EXPECT_EQ(Message(checkpoint::CheckSavable(root, header, part0)), "");
  EXPECT_EQ(Message(checkpoint::CheckSavable(root, header, part1)), "");
  std::string dir;
  EXPECT_EQ(Message(checkpoint::PrepareCheckpoint(root, header, &dir)), "");
  const pid_t child = ::fork();
  if (child == 0) {
    checkpoint::TensorFile ignored;
    ::_exit(checkpoint::WriteTensorFile(dir, checkpoint::TensorFileName(1), part1, &ignored) ? 1
                                                                                             : 0);
  }
  int status = -1;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(status, 0);
  checkpoint::TensorFile written;
  EXPECT_EQ(Message(checkpoint::WriteTensorFile(dir, checkpoint::kTensorsName, part0, &written)),
            "");
  std::vector<Tensor> others = part1;
  for (Tensor& t : others) t.data = nullptr;  // the committer does not hold them
  std::string committed;
  EXPECT_EQ(Message(checkpoint::CommitCheckpoint(
                root, header,
                {checkpoint::Part{checkpoint::kTensorsName, part0, written},
                 checkpoint::Part{checkpoint::TensorFileName(1), others, std::nullopt}},
                &committed)),
            "");
  EXPECT_EQ(committed, dir);
  return dir;
}

TEST_F(CheckpointTest, TwoWritersMakeOneCheckpointThatLoadsWholeAndInParts) {
  EXPECT_EQ(checkpoint::TensorFileName(0), "tensors.bin");
  EXPECT_EQ(checkpoint::TensorFileName(1), "tensors.1.bin");
  Model a;
  a.executor->InitializeParameters(1337);
  Train(&a, 1337, 1, 3);
  const std::vector<Tensor> sa = a.State();
  const std::string dir = SaveAsTwoWriters(root_, At(3), sa);

  // The files are what checkpoint.h describes: writer 0's tensors.bin is laid out as if
  // it were the only writer, writer 1's file holds the head from offset 0.
  const std::string t0 = ReadAll(dir + "/tensors.bin"), t1 = ReadAll(dir + "/tensors.1.bin");
  ASSERT_EQ(t1.size(), 3u * 512);
  EXPECT_EQ(t1.substr(0, 512), TensorBytes(sa[9]));
  EXPECT_EQ(t1.substr(1024, 512), TensorBytes(sa[11]));
  const std::string manifest = ReadAll(dir + "/manifest.txt");
  EXPECT_NE(manifest.find("files 2\nfile tensors.bin " + std::to_string(t0.size()) +
                          " fnv1a64w " + Hex(ReferenceChecksum(t0)) +
                          "\nfile tensors.1.bin 1536 fnv1a64w " + Hex(ReferenceChecksum(t1)) +
                          "\ntensors 12\n"),
            std::string::npos)
      << manifest;
  EXPECT_NE(manifest.find("\ntensor norm.bias exp_avg_sq f32 [8] tensors.bin 1856 32\n"
                          "tensor lm_head.weight value f32 [16,8] tensors.1.bin 0 512\n"),
            std::string::npos)
      << manifest;
  {
    std::string one;
    ASSERT_EQ(Message(checkpoint::SaveCheckpoint(dir_ + "/single", At(3), Slice(sa, 0, 9), &one)),
              "");
    EXPECT_EQ(ReadAll(one + "/tensors.bin"), t0);
  }

  // Whole: one process loads both files.
  Model b;
  b.executor->InitializeParameters(99);
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
  EXPECT_EQ(h.step, 3);
  const std::vector<Tensor> sb = b.State();
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(TensorBytes(sa[i]), TensorBytes(sb[i])) << i;

  // In parts: a process that holds only the head (as the stage-1 rank), through resume's
  // one rule; the tensors it does not hold are checked, not read.
  Model c;
  c.executor->InitializeParameters(99);
  std::vector<Tensor> sc = c.State();
  const std::string untouched = TensorBytes(sc[0]);
  for (size_t i = 0; i < 9; ++i) sc[i].data = nullptr;
  std::string found;
  std::vector<std::string> skipped;
  ASSERT_EQ(Message(checkpoint::ResumeNewest(root_, "test", sc, nullptr, &found, &h, &skipped)),
            "");
  EXPECT_EQ(found, dir);
  EXPECT_TRUE(skipped.empty());
  const std::vector<Tensor> sc_all = c.State();
  for (size_t i = 9; i < 12; ++i) EXPECT_EQ(TensorBytes(sa[i]), TensorBytes(sc_all[i])) << i;
  EXPECT_EQ(TensorBytes(sc_all[0]), untouched);
  EXPECT_NE(TensorBytes(sc_all[0]), TensorBytes(sa[0]));

  // Exactly the model's tensors: a model without the head cannot take this checkpoint,
  // even where the head is another process's.
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", Slice(sb, 0, 9), &h)),
            dir + "/manifest.txt:37: tensor 'lm_head.weight' (value) is not in the plan "
                  "(model 'test')");

  // Saved again at the same step by one writer: the other layout's file goes.
  std::string again;
  ASSERT_EQ(Message(checkpoint::SaveCheckpoint(root_, At(3), sa, &again)), "");
  EXPECT_EQ(again, dir);
  EXPECT_FALSE(fs::exists(dir + "/tensors.1.bin"));
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
}

TEST_F(CheckpointTest, AMissingOrCorruptSecondFileMakesTheCheckpointUnloadable) {
  Model a;
  a.executor->InitializeParameters(1337);
  Train(&a, 1337, 1, 2);
  const std::string older = SaveAsTwoWriters(root_, At(1), a.State());
  const std::string dir = SaveAsTwoWriters(root_, At(2), a.State());
  const std::string good = ReadAll(dir + "/tensors.1.bin");
  std::string bad = good;
  bad[700] ^= 0x04;
  WriteAll(dir + "/tensors.1.bin", bad);
  const std::string corrupt = dir + "/tensors.1.bin: checksum " + Hex(ReferenceChecksum(bad)) +
                              " does not match " + Hex(ReferenceChecksum(good)) + " in " + dir +
                              "/manifest.txt (the checkpoint is corrupt)";
  Model b;
  Header h;
  EXPECT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), corrupt);
  // A process that loads only tensors.bin still refuses it under resume's rule: every
  // file of a candidate is checked, so all processes of a job pick the same one.
  std::vector<Tensor> stage0 = b.State();
  for (size_t i = 9; i < 12; ++i) stage0[i].data = nullptr;
  std::string found;
  std::vector<std::string> skipped;
  ASSERT_EQ(
      Message(checkpoint::ResumeNewest(root_, "test", stage0, nullptr, &found, &h, &skipped)),
      "");
  EXPECT_EQ(found, older);
  EXPECT_EQ(skipped, std::vector<std::string>{"skipping " + corrupt});

  ASSERT_EQ(::unlink((dir + "/tensors.1.bin").c_str()), 0);
  const std::string missing = dir + "/tensors.1.bin: cannot open: No such file or directory";
  auto err = checkpoint::LoadCheckpoint(dir, "test", b.State(), &h);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->kind, Error::Kind::kBadInput);
  EXPECT_EQ(err->message, missing);
  std::vector<std::string> warnings;
  ASSERT_EQ(Message(checkpoint::FindLatestCheckpoint(root_, &found, &warnings)), "");
  EXPECT_EQ(found, older);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "skipping " + err->message);
  EXPECT_EQ(Message(checkpoint::ResumeNewest(dir, "test", stage0, nullptr, &found, &h, &skipped)),
            missing);
}

TEST_F(CheckpointTest, TheCommitterRefusesAnotherWritersMissingOrDamagedFile) {
  Model a;
  a.executor->InitializeParameters(1337);
  const std::vector<Tensor> sa = a.State();
  const std::vector<Tensor> part0 = Slice(sa, 0, 9), part1 = Slice(sa, 9, 12);
  std::string dir;
  ASSERT_EQ(Message(checkpoint::PrepareCheckpoint(root_, At(4), &dir)), "");
  checkpoint::TensorFile written;
  ASSERT_EQ(Message(checkpoint::WriteTensorFile(dir, "tensors.bin", part0, &written)), "");
  const std::vector<checkpoint::Part> parts = {
      {"tensors.bin", part0, written}, {"tensors.1.bin", part1, std::nullopt}};
  // Writer 1 died before its rename: no manifest is written.
  auto err = checkpoint::CommitCheckpoint(root_, At(4), parts, &dir);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->kind, Error::Kind::kFailure);
  EXPECT_EQ(err->message.substr(0, dir.size() + 15), dir + "/tensors.1.bin:");
  EXPECT_FALSE(fs::exists(dir + "/manifest.txt"));
  // Writer 1's file is short, or holds what its state must not.
  checkpoint::TensorFile w1;
  ASSERT_EQ(Message(checkpoint::WriteTensorFile(dir, "tensors.1.bin", Slice(sa, 9, 11), &w1)), "");
  EXPECT_EQ(Message(checkpoint::CommitCheckpoint(root_, At(4), parts, &dir)),
            dir + "/tensors.1.bin: 1024 bytes, but its writer's 3 tensors take 1536");
  std::string nan_bytes = TensorBytes(sa[9]) + TensorBytes(sa[10]) + TensorBytes(sa[11]);
  const float inf = INFINITY;
  std::memcpy(nan_bytes.data() + 8, &inf, 4);
  WriteAll(dir + "/tensors.1.bin", nan_bytes);
  EXPECT_EQ(Message(checkpoint::CommitCheckpoint(root_, At(4), parts, &dir)),
            "not saving checkpoint " + dir + ": " + dir +
                "/tensors.1.bin holds 1 values that are not finite");
  EXPECT_FALSE(fs::exists(dir + "/manifest.txt"));
  // Once the file is right, the commit makes a loadable checkpoint.
  ASSERT_EQ(Message(checkpoint::WriteTensorFile(dir, "tensors.1.bin", part1, &w1)), "");
  ASSERT_EQ(Message(checkpoint::CommitCheckpoint(root_, At(4), parts, &dir)), "");
  Model b;
  Header h;
  ASSERT_EQ(Message(checkpoint::LoadCheckpoint(dir, "test", b.State(), &h)), "");
}

TEST(Checkpoint, DirectoryNames) {
  EXPECT_EQ(checkpoint::CheckpointDirName(0), "step_00000000");
  EXPECT_EQ(checkpoint::CheckpointDirName(1234), "step_00001234");
  EXPECT_EQ(checkpoint::CheckpointDirName(123456789), "step_123456789");
}

}  // namespace
}  // namespace heiretsu
