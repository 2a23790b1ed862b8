// Unit tests of `heiretsu compile` option parsing: the batch identity
// G = B x M x dp, defaults, and refusals naming the flag and value.
#include "runtime/cli/CompileOptions.h"

#include <gtest/gtest.h>

namespace heiretsu::cli {
namespace {

std::optional<std::string> Parse(std::vector<std::string> args, CompileOptions* out) {
  args.insert(args.begin(), "spec.hr");
  return ParseCompileOptions(args, out);
}

TEST(CompileOptions, DefaultsAreOneSequencePerRank) {
  CompileOptions o;
  ASSERT_EQ(Parse({"--dp", "4"}, &o), std::nullopt);
  EXPECT_EQ(o.micro_batch_size, 1);
  EXPECT_EQ(o.microbatches, 1);
  EXPECT_EQ(o.global_batch, 4);
  EXPECT_EQ(o.world_size(), 4);
}

TEST(CompileOptions, AnyTwoOfBatchMicrobatchesGlobalGiveTheThird) {
  CompileOptions a;
  ASSERT_EQ(Parse({"--dp", "2", "--micro-batch-size", "4", "--microbatches", "3"}, &a),
            std::nullopt);
  EXPECT_EQ(a.global_batch, 24);

  CompileOptions b;
  ASSERT_EQ(Parse({"--dp", "2", "--global-batch", "24", "--microbatches", "3"}, &b),
            std::nullopt);
  EXPECT_EQ(b.micro_batch_size, 4);

  CompileOptions c;
  ASSERT_EQ(Parse({"--dp", "2", "--global-batch", "24", "--micro-batch-size", "4"}, &c),
            std::nullopt);
  EXPECT_EQ(c.microbatches, 3);

  CompileOptions d;
  ASSERT_EQ(Parse({"--dp", "2", "--global-batch", "24", "--micro-batch-size", "4",
                   "--microbatches", "3"},
                  &d),
            std::nullopt);
  EXPECT_EQ(d.global_batch, 24);
}

TEST(CompileOptions, InconsistentBatchIsRefusedWithTheValues) {
  CompileOptions o;
  auto err = Parse({"--dp", "2", "--global-batch", "25", "--microbatches", "3"}, &o);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(*err, "--global-batch 25 is not divisible by --microbatches 3 x --dp 2");
}

TEST(CompileOptions, MeshProductOverflowIsRefused) {
  CompileOptions o;
  auto err = Parse({"--dp", "2147483647", "--tp", "2147483647", "--pp", "2147483647",
                    "--ep", "2147483647"},
                   &o);
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->find("is too large"), std::string::npos) << *err;
}

TEST(CompileOptions, GlobalBatchOverflowIsRefused) {
  CompileOptions o;
  auto err = Parse({"--dp", "65536", "--micro-batch-size", "65536"}, &o);
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->find("is too large"), std::string::npos) << *err;
}

TEST(CompileOptions, NumbersMustBePlainPositiveDecimals) {
  for (const char* bad : {"0", "-1", "+1", "1e3", "0x10", "", " 1", "1.0", "3000000000"}) {
    CompileOptions o;
    auto err = Parse({"--tp", bad}, &o);
    EXPECT_TRUE(err.has_value()) << "accepted --tp '" << bad << "'";
  }
}

TEST(CompileOptions, ChoicesAndFlags) {
  CompileOptions o;
  ASSERT_EQ(Parse({"--schedule", "zb-h1", "--zero", "1", "--precision", "bf16", "--recompute",
                   "selective", "--sequence-parallel", "--tp", "2", "--emit", "plan", "-o", "out"},
                  &o),
            std::nullopt);
  EXPECT_EQ(o.schedule, "zb-h1");
  EXPECT_EQ(o.zero, 1);
  EXPECT_EQ(o.precision, "bf16");
  EXPECT_EQ(o.recompute, "selective");
  EXPECT_TRUE(o.sequence_parallel);
  EXPECT_EQ(o.output, "out");
}

TEST(CompileOptions, StrictIsAFlagOfItsOwn) {
  CompileOptions plain;
  ASSERT_EQ(Parse({"--tp", "2", "--sequence-parallel"}, &plain), std::nullopt);
  EXPECT_FALSE(plain.strict);
  CompileOptions strict;
  ASSERT_EQ(Parse({"--strict"}, &strict), std::nullopt);
  EXPECT_TRUE(strict.strict);
  EXPECT_FALSE(strict.sequence_parallel);  // --strict is not --sequence-parallel
  // `heiretsu train` hands it to the compiler: a compile flag without a value.
  bool takes_value = true;
  EXPECT_TRUE(IsCompileFlag("--strict", &takes_value));
  EXPECT_FALSE(takes_value);
  EXPECT_NE(std::string(CompileUsage()).find("[--strict]"), std::string::npos);
}

TEST(CompileOptions, TwoSpecsAreRefused) {
  CompileOptions o;
  auto err = Parse({"other.hr"}, &o);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(*err, "more than one spec given: 'spec.hr' and 'other.hr'");
}

TEST(CompileOptions, OutputWithoutEmitIsThePlanDirectory) {
  CompileOptions dir;
  ASSERT_EQ(Parse({"-o", "plans"}, &dir), std::nullopt);
  EXPECT_EQ(dir.emit, "plan");
  CompileOptions text;
  ASSERT_EQ(Parse({}, &text), std::nullopt);
  EXPECT_EQ(text.emit, "mlir");
  CompileOptions file;
  ASSERT_EQ(Parse({"--emit", "summary", "-o", "s.txt"}, &file), std::nullopt);
  EXPECT_EQ(file.emit, "summary");
}

TEST(CompileOptions, StageLayersAndVirtualStages) {
  CompileOptions o;
  ASSERT_EQ(Parse({"--pp", "3", "--stage-layers", "2,1,3,1,1,1", "--virtual-stages", "2",
                   "--schedule", "interleaved", "--microbatches", "6"},
                  &o),
            std::nullopt);
  EXPECT_EQ(o.stage_layers, (std::vector<int64_t>{2, 1, 3, 1, 1, 1}));
  EXPECT_EQ(o.virtual_stages, 2);
  CompileOptions chunks;
  EXPECT_EQ(Parse({"--pp", "2", "--stage-layers", "2,2", "--virtual-stages", "2", "--schedule",
                   "interleaved", "--microbatches", "2"},
                  &chunks),
            "--stage-layers gives 2 stages but --pp is 2 with --virtual-stages 2: give one layer "
            "count per model chunk (4)");
  CompileOptions virt;
  EXPECT_EQ(Parse({"--pp", "2", "--virtual-stages", "2"}, &virt),
            "--virtual-stages 2 needs --schedule interleaved (virtual stages are its model "
            "chunks)");
  CompileOptions multiple;
  EXPECT_EQ(Parse({"--pp", "2", "--virtual-stages", "2", "--schedule", "interleaved",
                   "--microbatches", "3"},
                  &multiple),
            "--schedule interleaved needs --microbatches (3) to be a multiple of --pp (2)");
  CompileOptions none;
  EXPECT_EQ(Parse({"--pp", "2", "--schedule", "interleaved", "--microbatches", "2"}, &none),
            "--schedule interleaved runs several model chunks per stage: it needs --pp > 1 and "
            "--virtual-stages > 1 (got --pp 2 --virtual-stages 1)");
  CompileOptions count;
  EXPECT_EQ(Parse({"--pp", "2", "--stage-layers", "4"}, &count),
            "--stage-layers gives 1 stages but --pp is 2: give one layer count per stage");
  for (const char* bad : {"", "1,", ",1", "1,,2", "0,2", "a"}) {
    CompileOptions b;
    EXPECT_EQ(Parse({"--pp", "2", "--stage-layers", bad}, &b),
              std::string("--stage-layers: expected layer counts N,N,... (positive integers), "
                          "got '") + bad + "'");
  }
}

TEST(CompileOptions, WhatIsNotBuiltIsRefusedByName) {
  struct Case {
    std::vector<std::string> args;
    std::string starts;
  };
  const Case cases[] = {
      {{"--recompute", "full"}, "--recompute full is not built yet"},
  };
  for (const Case& c : cases) {
    CompileOptions o;
    ASSERT_EQ(Parse(c.args, &o), std::nullopt) << c.args[0];
    std::optional<std::string> err = CheckBuilt(o);
    ASSERT_TRUE(err.has_value()) << c.args[0];
    EXPECT_EQ(err->rfind(c.starts, 0), 0u) << *err;
  }
  CompileOptions built;
  ASSERT_EQ(Parse({"--dp", "2", "--tp", "2", "--sequence-parallel", "--zero", "1"}, &built),
            std::nullopt);
  EXPECT_EQ(CheckBuilt(built), std::nullopt);
  for (const char* schedule : {"1f1b", "gpipe", "zb-h1"}) {
    CompileOptions pipeline;
    ASSERT_EQ(Parse({"--pp", "2", "--schedule", schedule, "--stage-layers", "3,1"}, &pipeline),
              std::nullopt);
    EXPECT_EQ(CheckBuilt(pipeline), std::nullopt) << schedule;
  }
  CompileOptions interleaved;
  ASSERT_EQ(Parse({"--pp", "2", "--schedule", "interleaved", "--virtual-stages", "2",
                   "--microbatches", "4"},
                  &interleaved),
            std::nullopt);
  EXPECT_EQ(CheckBuilt(interleaved), std::nullopt);
}

}  // namespace
}  // namespace heiretsu::cli
