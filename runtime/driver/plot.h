// `heiretsu plot`: training curves from the metrics files that `heiretsu run --metrics`
// writes (runtime/rank/metrics.h), drawn by gnuplot (Debian's gnuplot-nox, which
// scripts/setup-deps.sh installs).
//
//   heiretsu plot METRICS.jsonl [MORE.jsonl ...] -o OUT.png|OUT.svg [--title TEXT]
//                 [--size W,H]
//
// One picture of four panels against the step: loss (val_loss beside it, dashed, where
// the run measured it), lr, tokens_per_s and grad_norm. Each file is one run, one colour
// in every panel; the legend (in the loss panel) names a run by its file name, or by
// the path as given when two files share a name. The format follows OUT's extension:
// .png (gnuplot's pngcairo terminal, else its libgd png one; 1000 x 680 pixels unless
// --size says) or .svg (1200 x 800).
//
// Contract:
// - Every line of a file that is not blank must be one JSON object whose top level
//   has a number `step` (an integer >= 0) and a `loss` that is a number or null (null:
//   a step not applied, not drawn). `val_loss`, `lr`, `tokens_per_s` and `grad_norm`
//   are optional; each is a number or null where given. Other fields are read past,
//   nested values included. A step that appears twice keeps its later line (a resumed
//   run appends to its metrics file and logs the steps after its checkpoint again).
// - Bad input exits 2 naming FILE:LINE (and, for text that is not JSON, the byte of
//   the line where the reader stopped), as do a file that cannot be read or holds no
//   line, and bad flags. gnuplot missing from PATH exits 1 saying how to install it;
//   gnuplot failing exits 1 with its messages and keeps its script for a look.
// - OUT is written beside itself and renamed into place, so it is either the whole new
//   picture or what was there before.
#ifndef HEIRETSU_RUNTIME_DRIVER_PLOT_H_
#define HEIRETSU_RUNTIME_DRIVER_PLOT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::driver {

// The values of one step (NaN: not in the line, or null).
struct MetricsPoint {
  double loss, val_loss, lr, tokens_per_s, grad_norm;
};

// One metrics file: its steps in order, each from the last line naming it.
struct MetricsRun {
  std::string path;
  std::map<int64_t, MetricsPoint> steps;
  int64_t lines = 0;  // non-blank lines read
};

// Reads `path` into `*run` by the contract above.
Status ReadMetricsFile(const std::string& path, MetricsRun* run);

// The usage text of `heiretsu plot`.
extern const char kPlotUsage[];

// `heiretsu plot` on the words after `plot`: prints what it wrote, or the error
// (prefixed "heiretsu: plot: "), and returns the exit code.
int PlotCommand(const std::vector<std::string>& args);

}  // namespace heiretsu::driver

#endif  // HEIRETSU_RUNTIME_DRIVER_PLOT_H_
