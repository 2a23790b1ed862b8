// The trace of `heiretsu run --trace` (runtime/exec/trace.h): the measured bubble
// on synthetic events with a known answer, the files a rank writes and rank 0
// merges, and what the executor records for a step of a hand-built plan.
#include "runtime/exec/trace.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/exec/executor.h"
#include "test/unit/plan_builder.h"

namespace heiretsu::exec {
namespace {

TraceEvent Event(TraceCategory category, const char* name, int64_t start, int64_t end,
                 int64_t step = 2) {
  TraceEvent e;
  e.category = category;
  e.tid = category == TraceCategory::kStep || category == TraceCategory::kUnit ? kTraceSchedule
                                                                               : kTraceInstructions;
  e.name = name;
  e.step = step;
  e.start_ns = start;
  e.end_ns = end;
  return e;
}

TraceEvent Unit(const char* name, int64_t microbatch, int64_t start, int64_t end) {
  TraceEvent e = Event(TraceCategory::kUnit, name, start, end);
  e.microbatch = microbatch;
  e.slot = 0;
  return e;
}

TraceEvent Blocked(const char* name, int64_t start, int64_t end) {
  TraceEvent e = Event(TraceCategory::kP2p, name, start, end);
  e.blocked = true;
  return e;
}

// A step of 1000 ns: forward 0 [100, 300) of which a recv blocks [100, 150);
// backward 0 [400, 700) of which a wait for sends blocks [600, 650); a send (posts,
// not blocked) inside; the final wait for all sends [700, 800) outside any
// microbatch run, and the update [800, 1000), a unit of the step, outside the
// pipeline phase. Working: 200 - 50 + 300 - 50 = 400 ns of 1000 - 200, so the
// bubble is 1 - 400 / 800 = 0.5. Events of another step are not counted.
std::vector<TraceEvent> SyntheticStep() {
  std::vector<TraceEvent> events = {
      Event(TraceCategory::kStep, "step", 0, 1000),
      Unit("forward", 0, 100, 300),
      Blocked("recv", 100, 150),
      Event(TraceCategory::kInstr, "linear", 150, 300),
      Unit("backward", 0, 400, 700),
      Event(TraceCategory::kP2p, "send", 420, 430),
      Blocked("wait_sends", 600, 650),
      Blocked("wait_all_sends", 700, 800),
      Unit("update", -1, 800, 1000),
      Event(TraceCategory::kCollective, "join_buckets", 790, 800),
  };
  events.push_back(Event(TraceCategory::kStep, "step", 1000, 1100, 3));
  events.push_back(Unit("forward", 0, 1000, 1100));
  events.back().step = 3;
  return events;
}

TEST(Trace, MeasuredBubbleIsTheIdleFractionOfTheStep) {
  const std::vector<TraceEvent> events = SyntheticStep();
  EXPECT_DOUBLE_EQ(MeasuredBubble(events, 2), 0.5);
  EXPECT_DOUBLE_EQ(MeasuredBubble(events, 3), 0.0);    // busy from start to end
  EXPECT_TRUE(std::isnan(MeasuredBubble(events, 4)));  // no such step
  // Without the microbatch runs the whole pipeline phase is idle; a step that is
  // all update has none.
  EXPECT_DOUBLE_EQ(
      MeasuredBubble({Event(TraceCategory::kStep, "step", 0, 100), Unit("update", -1, 50, 100)}, 2),
      1.0);
  EXPECT_TRUE(std::isnan(
      MeasuredBubble({Event(TraceCategory::kStep, "step", 0, 50), Unit("update", -1, 0, 50)}, 2)));
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(Trace, RankFilesMergeIntoOneTraceWithTheirBubbles) {
  const std::string dir = ::testing::TempDir() + "/heiretsu-trace-test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<TraceEvent> events = SyntheticStep();
  events[3].name = "odd \"name\"\\";  // escaped in JSON
  const std::string rank0 = dir + "/t.json.rank-0", rank1 = dir + "/t.json.rank-1";
  ASSERT_EQ(WriteTraceFile(rank0, {0, 0, "rank 0 (stage 0, dp 0, tp 0)"}, events), std::nullopt);
  ASSERT_EQ(WriteTraceFile(rank1, {1, 1, "rank 1 (stage 1, dp 0, tp 0)"}, {events[0], events[1]}),
            std::nullopt);
  const std::string one = Read(rank0);
  EXPECT_EQ(one.rfind("{\"traceEvents\":[\n", 0), 0u);
  EXPECT_NE(one.find("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{"
                     "\"name\":\"rank 0 (stage 0, dp 0, tp 0)\"}},\n"),
            std::string::npos);
  EXPECT_NE(one.find("{\"name\":\"step 2\",\"cat\":\"step\",\"ph\":\"X\",\"pid\":0,\"tid\":1,"
                     "\"ts\":0.000,\"dur\":1.000,\"args\":{\"step\":2,\"bubble\":0.5000}},\n"),
            std::string::npos);
  EXPECT_NE(one.find("{\"name\":\"forward 0\",\"cat\":\"unit\",\"ph\":\"X\",\"pid\":0,\"tid\":1,"
                     "\"ts\":0.100,\"dur\":0.200,\"args\":{\"step\":2,\"unit\":\"forward\","
                     "\"microbatch\":0,\"slot\":0,\"chunk\":0,\"stage\":0}},\n"),
            std::string::npos);
  EXPECT_NE(one.find("\"name\":\"odd \\\"name\\\"\\\\\""), std::string::npos);
  EXPECT_NE(one.find("\"name\":\"update\",\"cat\":\"unit\""), std::string::npos);  // no number
  EXPECT_NE(one.find("\"name\":\"recv\",\"cat\":\"p2p\""), std::string::npos);
  // The last event has no comma after it.
  EXPECT_NE(one.find("}}\n],\"displayTimeUnit\":\"ms\"}\n"), std::string::npos);
  EXPECT_EQ(one.find("},\n]"), std::string::npos);

  std::vector<std::vector<double>> bubbles;
  const std::string merged = dir + "/t.json";
  ASSERT_EQ(MergeTraceFiles({rank0, rank1}, merged, &bubbles), std::nullopt);
  ASSERT_EQ(bubbles.size(), 2u);
  EXPECT_EQ(bubbles[0], (std::vector<double>{0.5, 0.0}));
  EXPECT_EQ(bubbles[1], (std::vector<double>{0.8}));  // forward 0 alone: 200 of 1000 ns
  const std::string all = Read(merged);
  EXPECT_NE(all.find("\"pid\":0,"), std::string::npos);
  EXPECT_NE(all.find("\"pid\":1,"), std::string::npos);
  EXPECT_EQ(all.find("},\n]"), std::string::npos);
  EXPECT_EQ(all.find("}\n{"), std::string::npos);  // every event but the last ends in a comma
  EXPECT_FALSE(std::filesystem::exists(merged + ".partial"));

  // A file that is not one of these is named.
  std::ofstream(dir + "/other") << "[]\n";
  auto err = MergeTraceFiles({rank0, dir + "/other"}, merged, &bubbles);
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->message.find(dir + "/other: not a trace file"), std::string::npos) << *err;
  err = MergeTraceFiles({dir + "/missing"}, merged, &bubbles);
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->message.find(dir + "/missing: cannot read"), std::string::npos) << *err;
  std::filesystem::remove_all(dir);
}


constexpr auto Fill = testing::FillBigramRule;

TEST(Trace, TheExecutorRecordsTheStepEveryRunAndEveryInstruction) {
  testing::BigramOptions o;
  o.microbatches = 2;
  plan::LoadedPlan p;
  p.path = "bigram.hplan";
  p.bytes = testing::BuildBigram(o);
  ASSERT_EQ(plan::VerifyPlan(p.path, p.bytes), std::nullopt);
  p.plan = plan::fb::GetSizePrefixedPlan(p.bytes.data());
  Executor ex(p);
  ex.InitializeParameters(1);
  Tracer tracer;
  StepOptions so;
  so.lr = 1e-2;
  StepResult r;
  so.step = 1;
  ASSERT_EQ(ex.Step(Fill, so, &r), std::nullopt);  // not traced
  ex.set_tracer(&tracer);
  so.step = 2;
  ASSERT_EQ(ex.Step(Fill, so, &r), std::nullopt);
  ex.set_tracer(nullptr);
  so.step = 3;
  ASSERT_EQ(ex.Step(Fill, so, &r), std::nullopt);  // not traced

  const std::vector<TraceEvent> events = tracer.Events();
  std::vector<std::string> runs;
  int steps = 0, instructions = 0;
  const TraceEvent* step = nullptr;
  for (const TraceEvent& e : events) {
    EXPECT_EQ(e.step, 2);
    EXPECT_LE(e.start_ns, e.end_ns);
    if (e.category == TraceCategory::kStep) {
      ++steps;
      step = &e;
    }
    if (e.category == TraceCategory::kUnit)
      runs.push_back(std::string(e.name) + " " + std::to_string(e.microbatch));
    if (e.category == TraceCategory::kInstr && e.name != std::string("fill_microbatch") &&
        e.name != std::string("zero_grads"))
      ++instructions;
  }
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(runs, (std::vector<std::string>{"forward 0", "backward 0", "forward 1", "backward 1",
                                            "update -1"}));
  size_t planned = 0;
  for (const plan::ScheduledRun& run : plan::ScheduleOf(*p.plan))
    planned += run.unit->instrs()->size();
  EXPECT_EQ(instructions, static_cast<int>(planned));
  // Every instruction lies inside a run, every run inside the step.
  ASSERT_NE(step, nullptr);
  for (const TraceEvent& e : events) {
    EXPECT_GE(e.start_ns, step->start_ns);
    EXPECT_LE(e.end_ns, step->end_ns);
    if (e.category != TraceCategory::kInstr || e.name == std::string("zero_grads")) continue;
    bool inside = false;
    for (const TraceEvent& run : events)
      inside = inside || (run.category == TraceCategory::kUnit && run.start_ns <= e.start_ns &&
                          e.end_ns <= run.end_ns);
    EXPECT_TRUE(inside) << e.name;
  }
  // One rank, no pipeline: idle only in the update and the step's own work.
  const double bubble = MeasuredBubble(events, 2);
  EXPECT_GE(bubble, 0.0);
  EXPECT_LT(bubble, 1.0);
}

}  // namespace
}  // namespace heiretsu::exec
