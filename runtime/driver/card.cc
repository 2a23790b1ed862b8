#include "runtime/driver/card.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "runtime/base/env.h"

namespace heiretsu::driver {

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Status TempDir::Create(const std::string& prefix) {
  std::string tmp = "/tmp";
  if (auto err = env::Directory("TMPDIR", &tmp)) return Error::BadInput(err->message);
  std::string tmpl = tmp + "/" + prefix + "-XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    return Error::Failure("cannot create a temporary directory " + tmpl + ": " +
                          std::strerror(errno));
  path_ = tmpl;
  return std::nullopt;
}

Status CheckpointSpec(const std::string& src, const TempDir& tmp, std::string* dir,
                      checkpoint::Header* header, std::string* spec_path) {
  std::vector<std::string> warnings;
  Status found = checkpoint::FindLatestCheckpoint(src, dir, &warnings);
  // Why each newer one was passed over, also when none is left.
  for (const std::string& w : warnings) std::fprintf(stderr, "heiretsu: warning: %s\n", w.c_str());
  if (found) return found;
  if (auto err = checkpoint::ReadHeader(*dir, header)) return err;
  if (header->spec.empty())
    return Error::BadInput(*dir + ": this checkpoint carries no model spec (saved before "
                           "checkpoints had model cards, format 2, or from a plan without "
                           "one): resume it once with 'heiretsu run PLAN --resume " + *dir +
                           "' from a plan compiled now, and save again");
  // The manifest's name is a plain file name (checkpoint.h); filename() keeps it one.
  const std::string name = std::filesystem::path(header->spec_file).filename().string();
  *spec_path = tmp.path() + "/" + (name.empty() || name == "." || name == ".." ? "model.hr" : name);
  std::ofstream out(*spec_path, std::ios::binary);
  out << header->spec;
  if (!out.flush())
    return Error::Failure("cannot write " + *spec_path + ": " + std::strerror(errno));
  return std::nullopt;
}

int CompileQuietly(const std::string& compiler, const std::string& spec,
                   const std::string& plan_dir) {
  std::vector<std::string> args = {compiler, spec, "--emit", "plan", "-o", plan_dir};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  // Like system(3): Ctrl-C reaches the compiler, and this process lives on to remove
  // its temporary directory.
  struct sigaction ignore = {}, old_int, old_quit;
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGINT, &ignore, &old_int);
  sigaction(SIGQUIT, &ignore, &old_quit);
  const pid_t pid = ::fork();
  if (pid == 0) {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGQUIT, &old_quit, nullptr);
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, STDOUT_FILENO);
    ::execv(compiler.c_str(), argv.data());
    std::fprintf(stderr, "heiretsu: cannot run %s: %s\n", compiler.c_str(), std::strerror(errno));
    ::_exit(kExitFailure);
  }
  int status = 0;
  if (pid < 0)
    std::perror("heiretsu: fork");
  else
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGQUIT, &old_quit, nullptr);
  return pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : kExitFailure;
}

}  // namespace heiretsu::driver
