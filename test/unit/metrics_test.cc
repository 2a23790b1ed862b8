// The progress line's times and the run summary (runtime/rank/metrics.h).
#include "runtime/rank/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace heiretsu::rank {
namespace {

TEST(Duration, TenthsThenSecondsMinutesHours) {
  EXPECT_EQ(Duration(0), "0.0s");
  EXPECT_EQ(Duration(0.04), "0.0s");
  EXPECT_EQ(Duration(3.26), "3.3s");
  EXPECT_EQ(Duration(9.94), "9.9s");
  EXPECT_EQ(Duration(9.96), "10s");  // would print as 10.0s
  EXPECT_EQ(Duration(42.4), "42s");
  EXPECT_EQ(Duration(59.6), "1m00s");
  EXPECT_EQ(Duration(245), "4m05s");
  EXPECT_EQ(Duration(3599.4), "59m59s");
  EXPECT_EQ(Duration(3599.6), "1h00m");
  EXPECT_EQ(Duration(2 * 3600 + 7 * 60 + 29), "2h07m");
  EXPECT_EQ(Duration(2 * 3600 + 7 * 60 + 31), "2h08m");
  EXPECT_EQ(Duration(-1), "0.0s");            // a clock that stepped back
  EXPECT_EQ(Duration(std::nan("")), "0.0s");  // nothing to go on
}

TEST(Progress, MeanStepTimeTimesStepsLeft) {
  const Progress p = Progress::After(10.0, 4, 20);
  EXPECT_DOUBLE_EQ(p.elapsed_seconds, 10.0);
  EXPECT_DOUBLE_EQ(p.eta_seconds, 40.0);
  EXPECT_DOUBLE_EQ(Progress::After(12.0, 20, 20).eta_seconds, 0.0);
}

TEST(ProgressLine, ElapsedAndEtaBeforeTheValidationLoss) {
  exec::StepOptions options;
  options.lr = 3e-3;
  options.step = 3;
  exec::StepResult result;
  result.loss = 4.12344;
  result.grad_norm = 1.23456;
  const StepLine line{options, result, 0.022, 128};
  EXPECT_EQ(ProgressLine(line, 10, Progress::After(65, 3, 10)),
            "step  3/10 | loss 4.1234 | lr 3.00e-03 | grad norm 1.2346 | 5.8k tok/s | 22.0 ms | "
            "elapsed 1m05s | ETA 2m32s");
  result.val_loss = 4.5;
  EXPECT_EQ(ProgressLine(line, 10, Progress::After(65, 3, 10)),
            "step  3/10 | loss 4.1234 | lr 3.00e-03 | grad norm 1.2346 | 5.8k tok/s | 22.0 ms | "
            "elapsed 1m05s | ETA 2m32s | val loss 4.5000");
}

// Steps 11-14 of a resumed run: one skipped, two validations.
TEST(RunSummary, CountsTheRunsSteps) {
  RunSummary s;
  s.first_step = 11;
  s.last_step = 14;
  s.resumed = "ck/step_00000010";
  s.validating = true;
  s.tokens_per_step = 2048;
  s.metrics = "m.jsonl";
  s.checkpoint = "ck/step_00000014";
  const double losses[] = {3.5, std::nan(""), 3.25, 3.0};
  const double vals[] = {std::nan(""), std::nan(""), 3.4, 3.45};
  for (int i = 0; i < 4; ++i) {
    exec::StepOptions options;
    options.step = 11 + i;
    exec::StepResult result;
    result.loss = losses[i];
    result.nonfinite = std::isnan(losses[i]);
    result.val_loss = vals[i];
    s.Add({options, result, 0.5, 2048});
  }
  s.val_seconds = 0.25;
  s.checkpoint_seconds = 0.5;
  s.wall_seconds = 3.0;
  EXPECT_EQ(s.steps, 4);
  EXPECT_EQ(s.skipped, 1);
  EXPECT_EQ(s.tokens, 8192);
  EXPECT_EQ(SummaryText(s),
            "summary:\n"
            "  steps        11-14 (4 steps, resumed from ck/step_00000010; 1 skipped, not finite)\n"
            "  loss         3.5000 -> 3.0000 (step 11 -> 14)\n"
            "  val loss     best 3.4000 at step 13 (2 evaluations)\n"
            "  tokens       8,192 (2,048 per step)\n"
            "  wall time    3.0s (steps 2.0s, validation 0.2s, checkpoints 0.5s, loading and "
            "setup 0.2s)\n"
            "  throughput   4.1k tok/s (the mean over the steps' own time)\n"
            "  checkpoint   ck/step_00000014\n"
            "  metrics      m.jsonl\n");
  // A loss scaler's overflow is skipped too, and named apart.
  exec::StepOptions options;
  options.step = 15;
  exec::StepResult overflow;
  overflow.loss = 3.1;
  overflow.grad_norm = INFINITY;
  overflow.nonfinite = overflow.overflow = true;
  s.last_step = 15;
  s.Add({options, overflow, 0.5, 2048});
  EXPECT_EQ(s.skipped, 2);
  EXPECT_EQ(s.overflowed, 1);
  EXPECT_NE(SummaryText(s).find("(5 steps, resumed from ck/step_00000010; 1 skipped, a gradient "
                                "overflowed; 1 skipped, not finite)"),
            std::string::npos)
      << SummaryText(s);
}

TEST(RunSummary, SaysWhatIsMissingAndHowToGetIt) {
  RunSummary s;
  s.last_step = 1;
  s.tokens_per_step = 64;
  exec::StepOptions options;
  exec::StepResult result;
  result.loss = std::nan("");
  result.nonfinite = true;
  s.Add({options, result, 0.1, 64});
  s.wall_seconds = 0.2;
  const std::string text = SummaryText(s);
  EXPECT_NE(text.find("  loss         none: no step was applied\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  val loss     none: no validation data (--val-data PATH, or *_val_* "
                      "shards in --data DIR)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  checkpoint   none saved (--save-dir DIR saves one at the end)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  metrics      not written (--metrics FILE.jsonl writes one line per step)\n"),
            std::string::npos)
      << text;
}

TEST(ScheduleChanges, NamesEachValueThatDiffers) {
  const LrSchedule saved{6e-4, 6e-5, 50, 1000};
  EXPECT_EQ(ScheduleChanges(saved, saved), "");
  EXPECT_EQ(ScheduleChanges({3e-4, 6e-5, 100, 1000}, saved),
            "lr 3e-4 (checkpoint: 6e-4), warmup 100 (checkpoint: 50)");
  EXPECT_EQ(ScheduleChanges({6e-4, 3e-5, 50, 2000}, saved),
            "min_lr 3e-5 (checkpoint: 6e-5), steps 2000 (checkpoint: 1000)");
  // Every digit it takes to tell them apart; plain below the exponent's range.
  EXPECT_EQ(ScheduleChanges({0.0030000000000000001, 6e-5, 50, 1000}, {0.003000001, 6e-5, 50, 1000}),
            "lr 3e-3 (checkpoint: 3.000001e-3)");
  EXPECT_EQ(ScheduleChanges({0.05, 6e-5, 50, 1000}, {0.5, 6e-5, 50, 1000}),
            "lr 0.05 (checkpoint: 0.5)");
}

}  // namespace
}  // namespace heiretsu::rank
