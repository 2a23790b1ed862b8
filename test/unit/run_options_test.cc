// Unit tests of `heiretsu run` option parsing (defaults, refusals naming the flag and
// value) and of the learning-rate schedule that resumption depends on.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/cli/RunOptions.h"

namespace heiretsu::cli {
namespace {

std::string Error(std::vector<std::string> args) {
  args.insert(args.begin(), "plan");
  RunOptions o;
  auto err = ParseRunOptions(args, &o);
  return err ? *err : "";
}

TEST(RunOptions, Defaults) {
  RunOptions o;
  ASSERT_EQ(ParseRunOptions({"plan"}, &o), std::nullopt);
  EXPECT_EQ(o.plan_dir, "plan");
  EXPECT_EQ(o.steps, 100);
  EXPECT_EQ(o.lr, 1e-3);
  EXPECT_EQ(o.min_lr, 1e-3 / 10);
  EXPECT_EQ(o.warmup, 10);
  EXPECT_EQ(o.weight_decay, 0.1);
  EXPECT_EQ(o.grad_clip, 1.0);
  EXPECT_EQ(o.seed, 1337u);
  EXPECT_FALSE(o.seed_given);
  EXPECT_EQ(o.log_every, 10);
  EXPECT_EQ(o.save_every, 0);
}

TEST(RunOptions, MinLrFollowsLrUnlessGiven) {
  RunOptions a;
  ASSERT_EQ(ParseRunOptions({"plan", "--lr", "6e-4"}, &a), std::nullopt);
  EXPECT_EQ(a.min_lr, 6e-4 / 10);
  RunOptions b;
  ASSERT_EQ(ParseRunOptions({"--min-lr", "0", "plan", "--lr", "6e-4", "--seed", "0"}, &b),
            std::nullopt);
  EXPECT_EQ(b.min_lr, 0.0);
  EXPECT_TRUE(b.seed_given);
  EXPECT_EQ(b.seed, 0u);
}

TEST(RunOptions, RefusalsNameTheFlagAndValue) {
  EXPECT_EQ(Error({"--lr", "abc"}), "--lr: expected a positive number, got 'abc'");
  EXPECT_EQ(Error({"--lr", "-1e-3"}), "--lr: expected a positive number, got '-1e-3'");
  EXPECT_EQ(Error({"--lr", "0"}), "--lr: expected a positive number, got '0'");
  EXPECT_EQ(Error({"--lr", "nan"}), "--lr: expected a positive number, got 'nan'");
  EXPECT_EQ(Error({"--lr", "1e999"}), "--lr: expected a positive number, got '1e999'");
  EXPECT_EQ(Error({"--lr", "0x1p-3"}), "--lr: expected a positive number, got '0x1p-3'");
  EXPECT_EQ(Error({"--weight-decay", "-0.1"}),
            "--weight-decay: expected a non-negative number, got '-0.1'");
  EXPECT_EQ(Error({"--steps", "0"}), "--steps: expected a positive integer, got '0'");
  EXPECT_EQ(Error({"--steps", "1.5"}), "--steps: expected a positive integer, got '1.5'");
  EXPECT_EQ(Error({"--steps", "4294967296"}),
            "--steps: 4294967296 is larger than the limit 2147483647");
  EXPECT_EQ(Error({"--warmup", "-1"}), "--warmup: expected a non-negative integer, got '-1'");
  EXPECT_EQ(Error({"--seed", "18446744073709551616"}),
            "--seed: expected an integer in [0, 2^64), got '18446744073709551616'");
  EXPECT_EQ(Error({"--min-lr", "0.01", "--lr", "0.001"}),
            "--min-lr 0.01 is larger than --lr 0.001");
  EXPECT_EQ(Error({"--backend", "tpu"}), "--backend: expected cpu|cuda, got 'tpu'");
  EXPECT_EQ(Error({"--save-every", "10"}), "--save-every needs --save-dir DIR");
  EXPECT_EQ(Error({"--metrics", ""}), "--metrics: empty path");
  EXPECT_EQ(Error({"--steps"}), "--steps: missing value");
  EXPECT_EQ(Error({"--stepz", "3"}), "unknown flag '--stepz'");
  EXPECT_EQ(Error({"other"}), "more than one plan directory given: 'plan' and 'other'");
  RunOptions o;
  EXPECT_EQ(ParseRunOptions({"--steps", "3"}, &o), "no plan directory given");
}

// --loss-scale: auto by default; a number is a fixed scale, a power of two in
// [1, 2^24] (exec::LossScaler), and then --loss-scale-init has nothing to set.
TEST(RunOptions, LossScaleModesAndPowersOfTwo) {
  RunOptions o;
  ASSERT_EQ(ParseRunOptions({"plan"}, &o), std::nullopt);
  EXPECT_EQ(o.loss_scale, "auto");
  EXPECT_EQ(o.loss_scale_init, 65536);
  EXPECT_EQ(o.loss_scale_growth_interval, 2000);
  RunOptions fixed;
  ASSERT_EQ(ParseRunOptions({"plan", "--loss-scale", "1024"}, &fixed), std::nullopt);
  EXPECT_EQ(fixed.loss_scale, "fixed");
  EXPECT_EQ(fixed.loss_scale_init, 1024);
  RunOptions dynamic;
  ASSERT_EQ(ParseRunOptions({"plan", "--loss-scale", "dynamic", "--loss-scale-init", "16777216",
                             "--loss-scale-growth-interval", "50"},
                            &dynamic),
            std::nullopt);
  EXPECT_EQ(dynamic.loss_scale_init, 16777216);
  EXPECT_EQ(dynamic.loss_scale_growth_interval, 50);
  for (const char* bad : {"3", "0.5", "33554432", "1e40"})
    EXPECT_NE(Error({"--loss-scale-init", bad}).find("is not a power of two in [1, 2^24]"),
              std::string::npos)
        << bad;
  EXPECT_EQ(Error({"--loss-scale-init", "-4"}),
            "--loss-scale-init: expected a power of two, got '-4'");
  EXPECT_EQ(Error({"--loss-scale", "8", "--loss-scale-init", "4"}),
            "--loss-scale 8 is a fixed scale: --loss-scale-init is for --loss-scale dynamic");
}

TEST(RunOptions, LearningRateWarmsUpThenDecaysToMinLr) {
  RunOptions o;
  o.lr = 1e-3;
  o.min_lr = 1e-4;
  o.warmup = 10;
  o.steps = 110;
  EXPECT_DOUBLE_EQ(LearningRate(o, 1), 1e-4);
  EXPECT_DOUBLE_EQ(LearningRate(o, 5), 5e-4);
  EXPECT_DOUBLE_EQ(LearningRate(o, 10), 1e-3);
  EXPECT_DOUBLE_EQ(LearningRate(o, 60), (1e-3 + 1e-4) / 2);  // halfway through the cosine
  EXPECT_DOUBLE_EQ(LearningRate(o, 110), 1e-4);
  for (int64_t s = 11; s <= 110; ++s) EXPECT_LT(LearningRate(o, s), LearningRate(o, s - 1));
  o.warmup = 0;  // no warmup: the cosine starts at once
  EXPECT_DOUBLE_EQ(LearningRate(o, 110), 1e-4);
  EXPECT_LT(LearningRate(o, 1), 1e-3);
  EXPECT_GT(LearningRate(o, 1), 0.999e-3);
}

TEST(RunOptions, TraceStepsDefaultToTheSecondToFourthStepOfTheRun) {
  RunOptions o;
  ASSERT_EQ(ParseRunOptions({"plan", "--trace", "t.json", "--steps", "10"}, &o), std::nullopt);
  EXPECT_EQ(o.trace, "t.json");
  int64_t first = 0, last = 0;
  ASSERT_EQ(TraceSteps(o, 1, &first, &last), std::nullopt);
  EXPECT_EQ(first, 2);
  EXPECT_EQ(last, 4);
  ASSERT_EQ(TraceSteps(o, 8, &first, &last), std::nullopt);  // resumed at step 8
  EXPECT_EQ(first, 9);
  EXPECT_EQ(last, 10);
  ASSERT_EQ(TraceSteps(o, 10, &first, &last), std::nullopt);  // its only step
  EXPECT_EQ(first, 10);
  EXPECT_EQ(last, 10);
  o.steps = 1;
  ASSERT_EQ(TraceSteps(o, 1, &first, &last), std::nullopt);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(last, 1);

  RunOptions given;
  ASSERT_EQ(ParseRunOptions({"plan", "--trace-steps", "3:5", "--trace", "t.json"}, &given),
            std::nullopt);
  EXPECT_EQ(given.trace_first, 3);
  EXPECT_EQ(given.trace_last, 5);
  ASSERT_EQ(TraceSteps(given, 4, &first, &last), std::nullopt);
  EXPECT_EQ(first, 4);
  EXPECT_EQ(last, 5);
  EXPECT_EQ(TraceSteps(given, 6, &first, &last),
            "--trace-steps 3:5: this run starts at step 6, after them");
  RunOptions one;
  ASSERT_EQ(ParseRunOptions({"plan", "--trace", "t.json", "--trace-steps", "7"}, &one),
            std::nullopt);
  EXPECT_EQ(one.trace_first, 7);
  EXPECT_EQ(one.trace_last, 7);

  RunOptions off;
  ASSERT_EQ(ParseRunOptions({"plan"}, &off), std::nullopt);
  ASSERT_EQ(TraceSteps(off, 1, &first, &last), std::nullopt);
  EXPECT_GT(first, last);

  EXPECT_EQ(Error({"--trace", ""}), "--trace: empty path");
  EXPECT_EQ(Error({"--trace-steps", "2:4"}), "--trace-steps needs --trace FILE.json");
  for (const char* bad : {"4:2", "0:3", "a:b", "2:", ":3", "-1", "2:3:4", "1.5"})
    EXPECT_EQ(Error({"--trace", "t.json", "--trace-steps", bad}),
              std::string("--trace-steps: expected A:B (steps, 1 <= A <= B) or A, got '") + bad +
                  "'");
  EXPECT_EQ(Error({"--trace", "t.json", "--trace-steps", "2:5", "--steps", "4"}),
            "--trace-steps 2:5: past --steps 4");
}

TEST(RunOptions, EveryRunFlagIsKnown) {
  for (const char* flag : {"--data", "--steps", "--lr", "--min-lr", "--warmup", "--weight-decay",
                           "--grad-clip", "--seed", "--backend", "--metrics", "--save-dir",
                           "--save-every", "--resume", "--log-every", "--cache-dir", "--trace",
                           "--trace-steps"})
    EXPECT_TRUE(IsRunFlag(flag)) << flag;
  EXPECT_FALSE(IsRunFlag("--dp"));
  EXPECT_FALSE(IsRunFlag("-o"));
}

}  // namespace
}  // namespace heiretsu::cli
