// The trace of `heiretsu run --trace FILE.json` (README, "Traces"): what a rank's
// executor did during the traced steps, in time, for Chrome's trace viewer
// (chrome://tracing) and Perfetto (https://ui.perfetto.dev).
//
// Format: the JSON "Trace Event Format", {"traceEvents": [...], "displayTimeUnit":
// "ms"}, one event per line. Complete events ("ph":"X") have name, cat, pid, tid, ts
// and dur, in microseconds (three decimals: nanoseconds), and args; metadata events
// ("ph":"M") name the processes and threads. One process per rank: pid = the global
// rank, named "rank R (stage S, dp D, tp T)" (", ep E" too where ep > 1). Its threads:
//   tid 1 "schedule"          the step ("step N", cat "step", args: step, bubble: the
//                             measured bubble below) and within it one event per
//                             schedule run ("forward 3", cat "unit", args: unit,
//                             microbatch, slot, chunk, stage; a unit of the step,
//                             "update", has microbatch -1 and slot 0); a run's
//                             event starts before it waits for its slot's sends
//                             and ends after its last instruction;
//   tid 2 "instructions"      within each run, one event per instruction (name: the
//                             opcode, plan::OpName), cat "instr" for the backend's,
//                             "p2p" for send and recv (args: buffer, peer, slot),
//                             "collective" for the collectives (args: axis); and the
//                             executor's own work and waits: "fill_microbatch" and
//                             "zero_grads" (cat "instr"), "wait_sends" (cat "p2p": a
//                             run waiting for its slot's pending sends, a unit of the
//                             step for all of them, and once per step "wait_all_sends"
//                             after the microbatch runs), "join_buckets",
//                             "loss_all_reduce" (one per axis) and
//                             "grad_norm_all_reduce" (over pp) (cat "collective");
//                             a send only posts (it does not block: executor.h); a
//                             recv's duration is its blocking time;
//   tid 3 "gradient buckets"  a bucket (plan::IsBucket) as it runs in the
//                             background (cat "collective"), from when it starts
//                             (after the bucket before it) to when it ends; the
//                             instruction track shows where it was posted.
// A wait that had nothing to wait for is not recorded. On a device backend (cuda)
// kernels run asynchronously: an instruction's event is the host's time in it, and
// the device's time shows where the host next waits for the stream (a copy to the
// host: a send, a recv, a collective, the loss); with HEIRETSU_CUDA_CHECK=1 the
// backend waits after every instruction, so its event is its device time
// (bench/gpu/kernel-times.sh sums them by opcode).
//
// Clocks: std::chrono::steady_clock (CLOCK_MONOTONIC), which all ranks on one machine
// share. Each rank's ts counts from the moment it left a barrier of the whole job,
// just before the first traced step, so the ranks' tracks line up to within that
// barrier's exit skew (tens of microseconds on one machine). Across machines the
// clocks are per host and only that barrier aligns them: the skew is the barrier's
// plus the drift over the traced steps.
//
// Each rank writes its events as a trace file of its own, FILE.json.rank-R (valid
// alone), and rank 0 merges the job's files into FILE.json once every rank has
// written its file (rank_main.cc).
//
// Cost: none when not tracing (the executor's Tracer* is null: one pointer check per
// instruction); when tracing, two clock reads per instruction and an event in memory.
// Events are kept in memory until the traced steps end. Thread safety: Add is called
// by the executor's thread, AddBackground by the gradient buckets' (one at a time;
// the executor joins them before a step ends); Events only between steps.
#ifndef HEIRETSU_RUNTIME_EXEC_TRACE_H_
#define HEIRETSU_RUNTIME_EXEC_TRACE_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::exec {

enum class TraceCategory : uint8_t { kStep, kUnit, kInstr, kP2p, kCollective };
// "step", "unit", "instr", "p2p", "collective".
const char* TraceCategoryName(TraceCategory category);

// The tids of a rank's threads (above).
inline constexpr int kTraceSchedule = 1, kTraceInstructions = 2, kTraceBuckets = 3;

struct TraceEvent {
  TraceCategory category = TraceCategory::kInstr;
  int tid = kTraceInstructions;
  // Static text or the plan's strings (a unit's, a buffer's name): they outlive
  // the trace's writing. A step's event is named "step N", a microbatch unit's
  // "NAME M" when written.
  const char* name = "";
  int64_t step = 0;
  int64_t microbatch = -1;       // a unit's microbatch; -1: a unit of the step
  int32_t slot = -1;             // a unit's, a send's or recv's activation slot
  int32_t chunk = 0;             // a unit's virtual chunk (plan.fbs Run.chunk)
  int32_t axis = -1;             // a collective's or send's / recv's mesh axis (plan::MeshAxis)
  int32_t peer = -1;             // a send's or recv's peer: its coordinate on the axis
  const char* buffer = nullptr;  // a send's or recv's buffer
  // Time spent waiting for a peer: a recv, a wait for sends. What the measured
  // bubble does not count as work.
  bool blocked = false;
  int64_t start_ns = 0, end_ns = 0;  // from the tracer's origin
};

class Tracer {
 public:
  using Clock = std::chrono::steady_clock;
  Tracer() : origin_(Clock::now()) {}

  // Times count from `origin` (rank_main.cc: when this rank left the barrier before
  // the first traced step).
  void set_origin(Clock::time_point origin) { origin_ = origin; }
  int64_t Now() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - origin_).count();
  }
  // The step that the events added next belong to.
  void set_step(int64_t step) { step_ = step; }
  int64_t step() const { return step_; }

  // Records `event` (its step: the current one).
  void Add(TraceEvent event) {
    event.step = step_;
    events_.push_back(event);
  }
  // The same from the gradient buckets' thread.
  void AddBackground(TraceEvent event) {
    event.step = step_;
    background_.push_back(event);
  }
  // Every event, ordered by start.
  std::vector<TraceEvent> Events() const;

 private:
  Clock::time_point origin_;
  int64_t step_ = 0;
  std::vector<TraceEvent> events_, background_;
};

// The measured bubble of one rank's step `step`, from its events: the fraction of
// the step's pipeline phase that was not spent working on a microbatch,
//   1 - (time inside microbatch runs - time blocked in recv / waiting for sends
//        inside them) / (step duration - time in the runs of the step's units),
// where the step duration is its "step" event's and the step's units are those
// without a microbatch (update, a tied gradient exchange: every stage runs them
// once, and plan/timeline.h's simulated bubble gives them no time either). So the
// waits between runs, the step's collectives (the loss, joining the buckets) and
// its final wait for sends count as idle: a single-stage run comes out near 0, a
// pipeline near the simulated and the published (pp - 1) / (m + pp - 1) when the
// stages' work is balanced and each rank has its own cores. NaN when `events` has
// no such step or its pipeline phase took no time.
double MeasuredBubble(const std::vector<TraceEvent>& events, int64_t step);

// One rank's process in the trace.
struct TraceProcess {
  int pid = 0;       // the global rank
  int stage = 0;     // its pipeline stage
  std::string name;  // "rank R (stage S, dp D, tp T)"
};

// Writes `events` (Tracer::Events) as a complete trace file of `process`'s events
// at `path`, one event per line (the metadata events first), each step's event
// with its MeasuredBubble in args. Fails naming the path.
Status WriteTraceFile(const std::string& path, const TraceProcess& process,
                      const std::vector<TraceEvent>& events);

// Merges trace files that WriteTraceFile wrote into one at `path` (written beside
// it and renamed into place), and gives for each input the bubbles of its steps,
// in order (the step events' args). Fails naming the file that is missing or not
// such a file.
Status MergeTraceFiles(const std::vector<std::string>& inputs, const std::string& path,
                       std::vector<std::vector<double>>* bubbles);

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_TRACE_H_
