// The simulated pipeline timeline; see timeline.h.
#include "runtime/plan/timeline.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace heiretsu::plan {
namespace {

bool IsForward(const fb::Unit& u) { return u.kind() == fb::UnitKind_Forward; }
bool IsWeight(const fb::Unit& u) { return u.kind() == fb::UnitKind_BackwardWeight; }

// "F3" / "B3" / "W3" (a split backward's weight part) / the unit's name.
std::string Label(const TimedRun& r) {
  if (r.microbatch < 0) return r.unit->name() ? r.unit->name()->str() : "?";
  return (IsForward(*r.unit) ? "F" : IsWeight(*r.unit) ? "W" : "B") +
         std::to_string(r.microbatch) +
         (r.unit->chunk() > 0 ? "." + std::to_string(r.unit->chunk()) : "");
}

}  // namespace

Status SimulateTimeline(const std::vector<LoadedPlan>& programs, double forward, double backward,
                        Timeline* out) {
  const size_t pp = programs.size();
  std::vector<std::vector<ScheduledRun>> runs(pp);
  out->chunks = 1;
  out->split = false;
  for (size_t s = 0; s < pp; ++s) {
    runs[s] = ScheduleOf(*programs[s].plan);
    for (const fb::Unit* u : *programs[s].plan->units()) {
      out->chunks = std::max<int64_t>(out->chunks, u->chunk() + 1);
      out->split |= u->kind() == fb::UnitKind_BackwardWeight;
    }
  }
  const int64_t last = static_cast<int64_t>(pp) * out->chunks - 1;  // the model's last chunk
  // End of (model chunk, forward?, microbatch): a forward unit's or the backward
  // (input) unit's run of that microbatch.
  std::map<std::tuple<int64_t, bool, int64_t>, double> done;
  std::vector<size_t> next(pp, 0);
  std::vector<double> clock(pp, 0.0);
  out->stages.assign(pp, {});
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t s = 0; s < pp; ++s) {
      while (next[s] < runs[s].size()) {
        const ScheduledRun& r = runs[s][next[s]];
        const int64_t m = r.run->microbatch();
        const bool fwd = IsForward(*r.unit), weight = IsWeight(*r.unit);
        const bool split = r.unit->kind() == fb::UnitKind_BackwardInput || weight;
        double ready = clock[s];
        const int64_t g = r.unit->chunk() * static_cast<int64_t>(pp) + static_cast<int64_t>(s);
        if (m >= 0 && !weight) {  // nobody sends what a weight-gradient pass needs
          // What the stage's recv of this run waits for: the neighbouring model
          // chunk's end of the same pass of the same microbatch.
          const bool has_peer = fwd ? g > 0 : g < last;
          if (has_peer) {
            auto it = done.find({fwd ? g - 1 : g + 1, fwd, m});
            if (it == done.end()) break;  // not yet placed: come back later
            ready = std::max(ready, it->second);
          }
        }
        const double cost = m < 0 ? 0.0 : fwd ? forward : split ? backward / 2 : backward;
        out->stages[s].push_back({r.unit, m, ready, ready + cost});
        clock[s] = ready + cost;
        if (m >= 0 && !weight) done[{g, fwd, m}] = clock[s];
        ++next[s];
        progress = true;
      }
    }
  }
  for (size_t s = 0; s < pp; ++s)
    if (next[s] < runs[s].size())
      return Error::BadInput("the schedules of the plan cannot all run: stage " +
                             std::to_string(s) + " waits forever at run " +
                             std::to_string(next[s]));
  double busy = 0;
  out->length = 0;
  for (size_t s = 0; s < pp; ++s) {
    out->length = std::max(out->length, clock[s]);
    for (const TimedRun& r : out->stages[s]) busy += r.end - r.start;
  }
  out->bubble = out->length > 0 ? 1.0 - busy / (static_cast<double>(pp) * out->length) : 0.0;
  return std::nullopt;
}

double FormulaBubble(int64_t pp, int64_t microbatches, bool split, int64_t chunks) {
  return static_cast<double>(pp - 1) /
         static_cast<double>((split ? 3 : chunks) * microbatches + pp - 1);
}

std::string TimelineGrid(const Timeline& t, double unit) {
  const int64_t columns = static_cast<int64_t>(std::ceil(t.length / unit - 1e-9));
  size_t width = 2;
  for (const auto& stage : t.stages)
    for (const TimedRun& r : stage)
      if (r.microbatch >= 0) width = std::max(width, Label(r).size());
  std::string out;
  for (size_t s = 0; s < t.stages.size(); ++s) {
    std::vector<std::string> cells(static_cast<size_t>(columns), ".");
    for (const TimedRun& r : t.stages[s]) {
      if (r.microbatch < 0) continue;
      const int64_t a = static_cast<int64_t>(std::llround(r.start / unit));
      const int64_t b = static_cast<int64_t>(std::llround(r.end / unit));
      for (int64_t c = a; c < b && c < columns; ++c) cells[static_cast<size_t>(c)] = Label(r);
    }
    std::string row = "  stage " + std::to_string(s) + " |";
    for (const std::string& c : cells) row += c + std::string(width - c.size() + 1, ' ');
    while (!row.empty() && row.back() == ' ') row.pop_back();
    out += row + "\n";
  }
  return out;
}

std::string TimelineMermaid(const Timeline& t) {
  std::string out = "gantt\n  dateFormat X\n  axisFormat %s\n";
  for (size_t s = 0; s < t.stages.size(); ++s) {
    out += "  section stage " + std::to_string(s) + "\n";
    for (const TimedRun& r : t.stages[s]) {
      if (r.microbatch < 0) continue;
      char line[128];
      std::snprintf(line, sizeof line, "  %s : %g, %g\n", Label(r).c_str(), r.start, r.end);
      out += line;
    }
  }
  return out;
}

}  // namespace heiretsu::plan
