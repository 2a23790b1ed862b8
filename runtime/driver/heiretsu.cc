// heiretsu: the user's driver (DESIGN.md §1). Links no MLIR: `compile` runs the
// compiler binary heiretsu-compile that sits beside this one. Commands whose layers
// are not built yet say so and exit 1.
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitFailure = 1;

const char kUsage[] =
    "usage: heiretsu <command> [args]\n"
    "\n"
    "commands:\n"
    "  compile SPEC [flags] -o PLAN_DIR   compile a model spec (see 'heiretsu compile --help')\n"
    "  run PLAN_DIR [flags]               run a compiled plan on every rank\n"
    "  train SPEC [flags]                 compile, then run\n"
    "  explain PLAN_DIR                   per-rank memory, communication, schedule\n"
    "  data prepare --tokenizer byte|gpt2 FILES... -o DIR\n";

// Directory holding this executable, so sibling binaries are found wherever the
// build or install tree lives.
std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  std::string path(buf);
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

int RunSibling(const std::string& tool, const std::vector<std::string>& args) {
  std::string path = SelfDir() + "/" + tool;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("heiretsu: fork");
    return kExitFailure;
  }
  if (pid == 0) {
    execv(path.c_str(), argv.data());
    std::fprintf(stderr, "heiretsu: cannot run %s: %s\n", path.c_str(), std::strerror(errno));
    _exit(kExitFailure);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      std::perror("heiretsu: waitpid");
      return kExitFailure;
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::fprintf(stderr, "heiretsu: %s died with signal %d\n", tool.c_str(), WTERMSIG(status));
  return kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitBadInput;
  }
  std::string cmd = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "compile") return RunSibling("heiretsu-compile", rest);
  if (cmd == "run" || cmd == "train" || cmd == "explain" || cmd == "data") {
    std::fprintf(stderr,
                 "heiretsu %s: not built yet: the runtime (plans, executor, data, "
                 "launcher) is the next milestone; see the status table in README.md\n",
                 cmd.c_str());
    return kExitFailure;
  }
  std::fprintf(stderr, "heiretsu: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return kExitBadInput;
}
