// The trace of `heiretsu run --trace`; see trace.h.
#include "runtime/exec/trace.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>

namespace heiretsu::exec {
namespace {

constexpr const char* kHead = "{\"traceEvents\":[";
constexpr const char* kTail = "],\"displayTimeUnit\":\"ms\"}";

const char* kAxisNames[] = {"dp", "pp", "tp", "ep"};

void AppendEscaped(std::string* out, const char* text) {
  for (const char* c = text; *c; ++c) {
    const unsigned char u = static_cast<unsigned char>(*c);
    if (u == '"' || u == '\\') {
      *out += '\\';
      *out += *c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      *out += buf;
    } else {
      *out += *c;
    }
  }
}

std::string Quoted(const char* text) {
  std::string out = "\"";
  AppendEscaped(&out, text);
  return out + "\"";
}

// Nanoseconds as microseconds with three decimals, exactly.
std::string Micros(int64_t ns) {
  char buf[32];
  const char* sign = ns < 0 ? "-" : "";
  const uint64_t a = ns < 0 ? 0 - static_cast<uint64_t>(ns) : static_cast<uint64_t>(ns);
  std::snprintf(buf, sizeof buf, "%s%llu.%03llu", sign, static_cast<unsigned long long>(a / 1000),
                static_cast<unsigned long long>(a % 1000));
  return buf;
}

std::string Number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

std::string EventLine(const TraceProcess& process, const TraceEvent& e, double bubble) {
  std::string name = e.name;
  if (e.category == TraceCategory::kStep) name = "step " + std::to_string(e.step);
  if (e.category == TraceCategory::kUnit && e.microbatch >= 0)
    name += " " + std::to_string(e.microbatch);
  std::string line =
      "{\"name\":" + Quoted(name.c_str()) + ",\"cat\":\"" + TraceCategoryName(e.category) +
      "\",\"ph\":\"X\",\"pid\":" + std::to_string(process.pid) +
      ",\"tid\":" + std::to_string(e.tid) + ",\"ts\":" + Micros(e.start_ns) +
      ",\"dur\":" + Micros(e.end_ns - e.start_ns) + ",\"args\":{\"step\":" + std::to_string(e.step);
  switch (e.category) {
    case TraceCategory::kStep:
      line += ",\"bubble\":" + Number(bubble);
      break;
    case TraceCategory::kUnit:
      line += ",\"unit\":" + Quoted(e.name) + ",\"microbatch\":" + std::to_string(e.microbatch) +
              ",\"slot\":" + std::to_string(e.slot) + ",\"chunk\":" + std::to_string(e.chunk) +
              ",\"stage\":" + std::to_string(process.stage);
      break;
    default:
      if (e.axis >= 0 && e.axis < 4)
        line += std::string(",\"axis\":\"") + kAxisNames[e.axis] + "\"";
      if (e.buffer) line += ",\"buffer\":" + Quoted(e.buffer);
      if (e.peer >= 0) line += ",\"peer\":" + std::to_string(e.peer);
      if (e.slot >= 0) line += ",\"slot\":" + std::to_string(e.slot);
      if (e.blocked) line += ",\"blocked\":true";
      break;
  }
  return line + "}}";
}

std::string MetadataLine(int pid, int tid, const char* what, const std::string& value) {
  return "{\"name\":\"" + std::string(what) + "\",\"ph\":\"M\",\"pid\":" + std::to_string(pid) +
         ",\"tid\":" + std::to_string(tid) + ",\"args\":{" + value + "}}";
}

Status WriteFile(const std::string& path, const std::vector<std::string>& lines) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "w"), std::fclose);
  if (!file) return Error::Failure(path + ": cannot write the trace: " + std::strerror(errno));
  std::fprintf(file.get(), "%s\n", kHead);
  for (size_t i = 0; i < lines.size(); ++i)
    std::fprintf(file.get(), "%s%s\n", lines[i].c_str(), i + 1 < lines.size() ? "," : "");
  std::fprintf(file.get(), "%s\n", kTail);
  if (std::fflush(file.get()) != 0 || std::ferror(file.get()))
    return Error::Failure(path + ": cannot write the trace: " + std::strerror(errno));
  if (std::fclose(file.release()) != 0)
    return Error::Failure(path + ": cannot write the trace: " + std::strerror(errno));
  return std::nullopt;
}

}  // namespace

const char* TraceCategoryName(TraceCategory category) {
  switch (category) {
    case TraceCategory::kStep:
      return "step";
    case TraceCategory::kUnit:
      return "unit";
    case TraceCategory::kInstr:
      return "instr";
    case TraceCategory::kP2p:
      return "p2p";
    case TraceCategory::kCollective:
      return "collective";
  }
  return "?";
}

std::vector<TraceEvent> Tracer::Events() const {
  std::vector<TraceEvent> all = events_;
  all.insert(all.end(), background_.begin(), background_.end());
  // A parent (step, run) starts before its children but is recorded after them.
  std::stable_sort(all.begin(), all.end(), [](const TraceEvent& a, const TraceEvent& b) {
    return a.start_ns != b.start_ns ? a.start_ns < b.start_ns : a.end_ns > b.end_ns;
  });
  return all;
}

double MeasuredBubble(const std::vector<TraceEvent>& events, int64_t step) {
  const TraceEvent* whole = nullptr;
  std::vector<const TraceEvent*> runs;
  for (const TraceEvent& e : events) {
    if (e.step != step) continue;
    if (e.category == TraceCategory::kStep) whole = &e;
    if (e.category == TraceCategory::kUnit && e.microbatch >= 0) runs.push_back(&e);
  }
  if (!whole || whole->end_ns <= whole->start_ns) return std::numeric_limits<double>::quiet_NaN();
  int64_t busy = 0, of_step = 0;
  for (const TraceEvent* run : runs) busy += run->end_ns - run->start_ns;
  for (const TraceEvent& e : events)
    if (e.step == step && e.category == TraceCategory::kUnit && e.microbatch < 0)
      of_step += e.end_ns - e.start_ns;
  const int64_t pipeline = whole->end_ns - whole->start_ns - of_step;
  if (pipeline <= 0) return std::numeric_limits<double>::quiet_NaN();
  for (const TraceEvent& e : events) {
    if (e.step != step || e.category != TraceCategory::kP2p || !e.blocked) continue;
    for (const TraceEvent* run : runs)
      if (e.start_ns >= run->start_ns && e.end_ns <= run->end_ns) {
        busy -= e.end_ns - e.start_ns;
        break;
      }
  }
  const double bubble = 1.0 - static_cast<double>(busy) / static_cast<double>(pipeline);
  return std::clamp(bubble, 0.0, 1.0);
}

Status WriteTraceFile(const std::string& path, const TraceProcess& process,
                      const std::vector<TraceEvent>& events) {
  const int pid = process.pid;
  std::vector<std::string> lines = {
      MetadataLine(pid, 0, "process_name", "\"name\":" + Quoted(process.name.c_str())),
      MetadataLine(pid, 0, "process_sort_index", "\"sort_index\":" + std::to_string(pid)),
  };
  for (auto [tid, name] :
       {std::pair{kTraceSchedule, "schedule"}, std::pair{kTraceInstructions, "instructions"},
        std::pair{kTraceBuckets, "gradient buckets"}}) {
    lines.push_back(
        MetadataLine(pid, tid, "thread_name", std::string("\"name\":\"") + name + "\""));
    lines.push_back(
        MetadataLine(pid, tid, "thread_sort_index", "\"sort_index\":" + std::to_string(tid)));
  }
  for (const TraceEvent& e : events)
    lines.push_back(EventLine(
        process, e, e.category == TraceCategory::kStep ? MeasuredBubble(events, e.step) : 0.0));
  return WriteFile(path, lines);
}

Status MergeTraceFiles(const std::vector<std::string>& inputs, const std::string& path,
                       std::vector<std::vector<double>>* bubbles) {
  std::vector<std::string> lines;
  bubbles->assign(inputs.size(), {});
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::ifstream in(inputs[i]);
    if (!in) return Error::Failure(inputs[i] + ": cannot read the trace: " + std::strerror(errno));
    std::vector<std::string> mine;
    std::string line;
    while (std::getline(in, line)) mine.push_back(line);
    if (mine.size() < 2 || mine.front() != kHead || mine.back() != kTail)
      return Error::Failure(inputs[i] + ": not a trace file of heiretsu run --trace");
    for (size_t k = 1; k + 1 < mine.size(); ++k) {
      std::string& event = mine[k];
      if (!event.empty() && event.back() == ',') event.pop_back();
      // The step events, as EventLine writes them: their measured bubble.
      if (event.find("\"cat\":\"step\"") != std::string::npos) {
        const size_t at = event.find("\"bubble\":");
        char* end = nullptr;
        const double bubble =
            at == std::string::npos ? 0 : std::strtod(event.c_str() + at + 9, &end);
        if (end && end != event.c_str() + at + 9) (*bubbles)[i].push_back(bubble);  // not null
      }
      lines.push_back(std::move(event));
    }
  }
  const std::string partial = path + ".partial";
  if (auto err = WriteFile(partial, lines)) return err;
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(partial.c_str());
    return Error::Failure(path + ": cannot write the trace: " + std::strerror(e));
  }
  return std::nullopt;
}

}  // namespace heiretsu::exec
