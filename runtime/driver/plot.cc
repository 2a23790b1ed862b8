// `heiretsu plot`; see plot.h.
#include "runtime/driver/plot.h"

#include "runtime/export/json.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "runtime/base/env.h"

extern char** environ;

namespace heiretsu::driver {

const char kPlotUsage[] =
    "usage: heiretsu plot METRICS.jsonl [MORE.jsonl ...] -o OUT.png|OUT.svg [--title TEXT]\n"
    "                     [--size W,H]\n"
    "\n"
    "Draws the training curves of 'heiretsu run --metrics FILE.jsonl' runs with gnuplot:\n"
    "loss and val_loss, lr, tokens_per_s and grad_norm against the step, one colour per\n"
    "file (the legend names each by its file name). The format follows OUT's extension.\n"
    "  --title TEXT   a title above the panels\n"
    "  --size W,H     the picture's size in pixels (default 1000,680 for PNG, 1200,800 for SVG)\n"
    "Needs gnuplot on PATH (Debian: apt-get install gnuplot-nox).\n";

namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const char kReadsWhat[] = " (heiretsu plot reads the lines of 'heiretsu run --metrics FILE.jsonl')";

// Sets `*out` to member `name` of `line` (an object): a number, or NaN when null or
// absent (absent is refused when `required`).
Status NumberField(const weights::JsonValue& line, const char* name, bool required,
                   const std::string& where, double* out) {
  *out = kNaN;
  const weights::JsonValue* v = line.Find(name);
  if (!v) {
    if (!required) return std::nullopt;
    return Error::BadInput(where + ": no \"" + name +
                           "\" member: every metrics line has step and loss" + kReadsWhat);
  }
  if (v->kind == weights::JsonValue::Kind::kNull) return std::nullopt;
  if (v->kind != weights::JsonValue::Kind::kNumber)
    return Error::BadInput(where + ": \"" + name + "\" is " + v->KindName() +
                           ", expected a number" +
                           (required && std::strcmp(name, "step") == 0 ? "" : " or null"));
  if (!std::isfinite(v->number))
    return Error::BadInput(where + ": \"" + name + "\" is beyond the range of a double");
  *out = v->number;
  return std::nullopt;
}

}  // namespace

Status ReadMetricsFile(const std::string& path, MetricsRun* run) {
  run->path = path;
  run->steps.clear();
  run->lines = 0;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return Error::BadInput(path + ": cannot open: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode))
    return Error::BadInput(path + ": is a directory (give the metrics file, FILE.jsonl)");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::BadInput(path + ": cannot open: " + std::strerror(errno));
  std::string text;
  int64_t number = 0;
  while (std::getline(in, text)) {
    ++number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++run->lines;
    const std::string where = path + ":" + std::to_string(number);
    // The project's one JSON reader (runtime/export/json.h); a line is one object.
    weights::JsonValue line;
    if (auto err = weights::ParseJson(text, &line))
      return Error::BadInput(where + ": not JSON: " + err->message + kReadsWhat);
    if (line.kind != weights::JsonValue::Kind::kObject)
      return Error::BadInput(where + ": " + line.KindName() +
                             ", not an object (each line is one JSON object)" + kReadsWhat);
    double step;
    if (auto err = NumberField(line, "step", true, where, &step)) return err;
    if (std::isnan(step))
      return Error::BadInput(where + ": \"step\" is null, expected an integer >= 0");
    if (step < 0 || step != std::floor(step) || step > 9e15)
      return Error::BadInput(where + ": \"step\" is " + weights::JsonNumber(step) +
                             ", expected an integer >= 0");
    MetricsPoint p;
    if (auto err = NumberField(line, "loss", true, where, &p.loss)) return err;
    if (auto err = NumberField(line, "val_loss", false, where, &p.val_loss)) return err;
    if (auto err = NumberField(line, "lr", false, where, &p.lr)) return err;
    if (auto err = NumberField(line, "tokens_per_s", false, where, &p.tokens_per_s)) return err;
    if (auto err = NumberField(line, "grad_norm", false, where, &p.grad_norm)) return err;
    run->steps[static_cast<int64_t>(step)] = p;  // a later line of the same step wins
  }
  if (in.bad()) return Error::Failure(path + ": cannot read: " + std::strerror(errno));
  if (run->lines == 0)
    return Error::BadInput(path + ": no metrics lines in it (it is empty: did the run get "
                           "--metrics " + path + "?)");
  return std::nullopt;
}

namespace {

// gnuplot's single-quoted string: nothing is special but the quote, written twice.
// Control characters (which would end the command) become '?'.
std::string Quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "''";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out + "'";
}

// What a panel draws of a run.
struct Series {
  const char* field;  // the metrics member, also the data file's suffix
  double MetricsPoint::*value;
  bool breaks;  // a step without a value interrupts the line (a skipped step)
};

constexpr Series kLoss{"loss", &MetricsPoint::loss, true};
constexpr Series kValLoss{"val_loss", &MetricsPoint::val_loss, false};
constexpr Series kLr{"lr", &MetricsPoint::lr, true};
constexpr Series kTokens{"tokens_per_s", &MetricsPoint::tokens_per_s, true};
constexpr Series kGradNorm{"grad_norm", &MetricsPoint::grad_norm, true};

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                "#9467bd", "#8c564b", "#e377c2", "#17becf"};
constexpr size_t kNumColours = sizeof kColours / sizeof kColours[0];

// Writes run `r`'s values of `series` to DIR/run-R.FIELD.dat, one "step value" line
// each; returns how many.
int64_t WriteSeries(const std::string& dir, size_t r, const MetricsRun& run, const Series& series,
                    Status* err) {
  const std::string path = dir + "/run-" + std::to_string(r) + "." + series.field + ".dat";
  std::ofstream out(path);
  int64_t n = 0;
  bool broken = true;
  for (const auto& [step, point] : run.steps) {
    const double v = point.*series.value;
    if (std::isnan(v)) {
      if (series.breaks && !broken) out << "\n";  // a blank line: gnuplot lifts the pen
      broken = true;
      continue;
    }
    char line[64];
    std::snprintf(line, sizeof line, "%lld %.17g\n", static_cast<long long>(step), v);
    out << line;
    broken = false;
    ++n;
  }
  out.close();
  if (!out) *err = Error::Failure(path + ": cannot write: " + std::strerror(errno));
  return n;
}

// The gnuplot executable on PATH, or empty.
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return "";
}

// Runs `program script` in `dir` with its output to `log`; returns its exit status, or
// -1 with `*why` set.
int RunGnuplot(const std::string& program, const std::string& dir, const std::string& script,
               const std::string& log, std::string* why) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addchdir_np(&actions, dir.c_str());
  std::vector<char*> argv = {const_cast<char*>(program.c_str()), const_cast<char*>(script.c_str()),
                             nullptr};
  pid_t pid;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    *why = "cannot run " + program + ": " + std::strerror(rc);
    return -1;
  }
  int status = 0;
  pid_t waited;
  while ((waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (waited < 0) {
    *why = std::string("waitpid: ") + std::strerror(errno);
    return -1;
  }
  if (WIFSIGNALED(status)) {
    *why = "gnuplot died with signal " + std::to_string(WTERMSIG(status));
    return -1;
  }
  return WEXITSTATUS(status);
}

// Copies `from` to `to` through a temporary file beside `to`, renamed into place.
Status Install(const std::string& from, const std::string& to, const std::string& temporary) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
  if (!in) return Error::Failure(from + ": gnuplot wrote no picture");
  out << in.rdbuf();
  out.close();
  if (!out) {
    std::remove(temporary.c_str());
    return Error::Failure(temporary + ": cannot write: " + std::strerror(errno));
  }
  if (std::rename(temporary.c_str(), to.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(temporary.c_str());
    return Error::Failure("-o " + to + ": cannot replace it: " + why);
  }
  return std::nullopt;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int Fail(const Error& err) {
  std::fprintf(stderr, "heiretsu: plot: %s\n", err.message.c_str());
  return err.exit_code();
}

}  // namespace

int PlotCommand(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  std::string out, title, size;
  bool titled = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kPlotUsage, stdout);
      return 0;
    }
    if (a == "-o" || a == "--title" || a == "--size") {
      if (i + 1 >= args.size()) return Fail(Error::BadInput(a + ": missing value (see --help)"));
      (a == "-o" ? out : a == "--title" ? title : size) = args[++i];
      if (a == "--title") titled = true;
      if (a == "-o" && out.empty()) return Fail(Error::BadInput("-o: empty path"));
    } else if (a.size() > 1 && a[0] == '-') {
      return Fail(Error::BadInput("unknown flag '" + a + "' (see --help)"));
    } else {
      files.push_back(a);
    }
  }
  if (files.empty())
    return Fail(Error::BadInput("no metrics file given (usage: heiretsu plot METRICS.jsonl ... -o "
                                "OUT.png|OUT.svg)"));
  if (out.empty())
    return Fail(Error::BadInput("-o OUT.png|OUT.svg is required (the format follows the extension)"));
  const std::string ext = Lower(fs::path(out).extension().string());
  if (ext != ".png" && ext != ".svg")
    return Fail(Error::BadInput("-o " + out + ": the format follows the extension, .png or .svg; '" +
                                fs::path(out).extension().string() + "' is neither"));

  int width = ext == ".png" ? 1000 : 1200, height = ext == ".png" ? 680 : 800;
  if (!size.empty()) {
    // W,H (or WxH): whole pixels, each 100 to 10000.
    const size_t sep = size.find_first_of(",x");
    auto pixels = [](const std::string& text, int* out) {
      if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos)
        return false;
      *out = std::stoi(text);
      return *out >= 100 && *out <= 10000;
    };
    if (sep == std::string::npos || !pixels(size.substr(0, sep), &width) ||
        !pixels(size.substr(sep + 1), &height))
      return Fail(Error::BadInput("--size '" + size +
                                  "': expected W,H in pixels, each 100 to 10000 (e.g. 1000,680)"));
  }

  std::vector<MetricsRun> runs(files.size());
  for (size_t r = 0; r < files.size(); ++r)
    if (auto err = ReadMetricsFile(files[r], &runs[r])) return Fail(*err);

  // Legend names: the file name, or the path as given where two files share one.
  std::vector<std::string> names;
  std::map<std::string, int> uses;
  for (const std::string& f : files) ++uses[fs::path(f).filename().string()];
  for (const std::string& f : files) {
    const std::string base = fs::path(f).filename().string();
    names.push_back(uses[base] > 1 ? f : base);
  }

  std::error_code ec;
  if (fs::is_directory(out, ec))
    return Fail(Error::BadInput("-o " + out + ": is a directory (give a file name ending in " + ext +
                                ")"));
  // The output's temporary name beside it: tried now, so a wrong path is said at once.
  const std::string temporary = out + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream probe(temporary, std::ios::binary | std::ios::trunc);
    if (!probe)
      return Fail(Error::BadInput("-o " + out + ": cannot write there: " + std::strerror(errno)));
  }
  std::remove(temporary.c_str());

  const std::string gnuplot = FindOnPath("gnuplot");
  if (gnuplot.empty())
    return Fail(Error::Failure(
        "gnuplot is not on PATH: install it (Debian: apt-get install gnuplot-nox; "
        "scripts/setup-deps.sh installs it with heiretsu's other packages)"));

  std::string tmp = "/tmp";
  if (auto err = env::Directory("TMPDIR", &tmp)) return Fail(*err);
  std::string dir = tmp + "/heiretsu-plot-XXXXXX";
  if (!::mkdtemp(dir.data()))
    return Fail(Error::Failure("cannot create a temporary directory " + dir + ": " +
                               std::strerror(errno)));
  // Removed on the way out, unless gnuplot failed on what it holds.
  bool keep = false;
  struct Cleanup {
    const std::string& dir;
    const bool& keep;
    ~Cleanup() {
      std::error_code ignored;
      if (!keep) fs::remove_all(dir, ignored);
    }
  } cleanup{dir, keep};

  // The data: one file per run and series, only those with points.
  const std::vector<const Series*> all = {&kLoss, &kValLoss, &kLr, &kTokens, &kGradNorm};
  std::map<std::pair<size_t, const Series*>, int64_t> points;
  int64_t first = INT64_MAX, last = INT64_MIN;
  Status wrote;
  for (size_t r = 0; r < runs.size(); ++r) {
    first = std::min(first, runs[r].steps.begin()->first);
    last = std::max(last, runs[r].steps.rbegin()->first);
    for (const Series* s : all) points[{r, s}] = WriteSeries(dir, r, runs[r], *s, &wrote);
  }
  if (wrote) return Fail(*wrote);
  if (first == last) ++last;  // one step: a range gnuplot can draw

  const std::string picture = std::string("picture") + ext;
  std::ostringstream gp;
  gp << "# heiretsu plot: " << runs.size() << " run(s); data in run-R.FIELD.dat\n";
  const std::string pixels = std::to_string(width) + "," + std::to_string(height);
  if (ext == ".svg") {
    gp << "set terminal svg size " << pixels
       << " dynamic noenhanced font 'sans,11' background '#ffffff'\n";
  } else {
    gp << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "  set terminal pngcairo size "
       << pixels
       << " noenhanced font 'sans,9' background '#ffffff'\n"
          "} else {\n"
          "  set terminal png size "
       << pixels << " noenhanced background '#ffffff'\n}\n";
  }
  gp << "set output " << Quoted(picture) << "\n";
  gp << "set multiplot layout 2,2";
  if (titled) gp << " title " << Quoted(title) << " font ',13'";
  gp << "\nset grid xtics ytics linetype 1 linecolor rgb '#e0e0e0' linewidth 1\n"
        "set xlabel 'step'\nset xrange [" << first << ":" << last
     << "]\n" << (last - first < 10 ? "set xtics 1\n" : "")  // whole steps
     << "set offsets 0, 0, graph 0.05, graph 0.05\n"
        "set key top right opaque box linecolor rgb '#cccccc'\n";

  struct Panel {
    const char* title;
    std::vector<const Series*> series;
    const char* format;  // of the y axis
    bool log;            // a logarithmic y axis (a gradient norm spikes by 100x)
  };
  const Panel panels[] = {
      {"loss", {&kLoss, &kValLoss}, "%g", false},
      {"learning rate (lr)", {&kLr}, "%.1e", false},
      {"throughput (tokens/s)", {&kTokens}, "%.1s%c", false},
      {"gradient norm (grad_norm)", {&kGradNorm}, "%g", true},
  };
  bool legend = true;
  for (const Panel& panel : panels) {
    // Logarithmic only where every value is positive (else gnuplot drops points).
    bool log = panel.log, any = false;
    for (const MetricsRun& run : runs)
      for (const auto& [step, point] : run.steps)
        for (const Series* s : panel.series) {
          if (point.*s->value <= 0) log = false;
          any = any || !std::isnan(point.*s->value);
        }
    log = log && any;
    std::string heading = panel.title;  // "name (field)"; "name (field, log scale)"
    if (log) heading.insert(heading.size() - 1, ", log scale");
    gp << "set title " << Quoted(heading)
       << "\nset format y " << Quoted(panel.format) << "\nset autoscale yfix\nunset label 1\n"
       << (log ? "set logscale y\n" : "unset logscale y\n");
    std::vector<std::string> clauses;
    for (size_t r = 0; r < runs.size(); ++r) {
      const char* colour = kColours[r % kNumColours];
      const int dash = static_cast<int>(r / kNumColours) % 4 + 1;  // after 8 runs, dashes
      for (const Series* s : panel.series) {
        if (points[{r, s}] == 0) continue;
        std::ostringstream c;
        const bool val = s == &kValLoss;
        c << Quoted("run-" + std::to_string(r) + "." + s->field + ".dat") << " using 1:2 with "
          << (val ? "linespoints pt 7 ps 0.7 dt 2" : "lines dt " + std::to_string(dash))
          << " lw 1.5 lc rgb '" << colour << "' ";
        if (legend) {
          c << "title " << Quoted(val ? names[r] + " (val)" : names[r]);
        } else {
          c << "notitle";
        }
        clauses.push_back(c.str());
      }
    }
    if (clauses.empty()) {
      // Nothing to draw (every value null or absent): an empty panel that says so.
      gp << "unset logscale y\nset yrange [0:1]\nunset ytics\n"
            "set label 1 'no values in the metrics' at graph 0.5,0.5 center\n"
            "plot NaN notitle\nset ytics\nset autoscale y\n";
    } else {
      gp << "plot ";
      for (size_t k = 0; k < clauses.size(); ++k) gp << (k ? ", \\\n     " : "") << clauses[k];
      gp << "\n";
    }
    if (legend) gp << "unset key\n";
    legend = false;
  }
  gp << "unset multiplot\nset output\n";
  const std::string script = dir + "/plot.gp";
  {
    std::ofstream f(script);
    f << gp.str();
    f.close();
    if (!f) return Fail(Error::Failure(script + ": cannot write: " + std::strerror(errno)));
  }

  std::string why;
  const std::string log = dir + "/gnuplot.log";
  const int rc = RunGnuplot(gnuplot, dir, "plot.gp", log, &why);
  if (rc != 0) {
    keep = true;
    std::ifstream messages(log);
    std::string line;
    while (std::getline(messages, line)) std::fprintf(stderr, "gnuplot: %s\n", line.c_str());
    return Fail(Error::Failure(
        (rc < 0 ? why : gnuplot + " exited with " + std::to_string(rc)) + " on its script " +
        script + " (kept with its data for a look)"));
  }
  if (auto err = Install(dir + "/" + picture, out, temporary)) return Fail(*err);

  std::string described;
  for (size_t r = 0; r < runs.size(); ++r) {
    const int64_t val = points[{r, &kValLoss}];
    described += (r ? "; " : "") + names[r] + ": " + std::to_string(runs[r].steps.size()) +
                 " step" + (runs[r].steps.size() == 1 ? "" : "s") +
                 (val ? ", " + std::to_string(val) + " val loss" + (val == 1 ? "" : "es") : "");
  }
  std::printf("plot: %s (%zu run%s: %s)\n", out.c_str(), runs.size(), runs.size() == 1 ? "" : "s",
              described.c_str());
  return 0;
}

}  // namespace heiretsu::driver
