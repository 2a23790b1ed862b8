// The job launcher: one thread, one poll() loop over every worker's stdout and stderr
// pipes and a self-pipe that the signal handlers write to, so that output, worker exits,
// forwarded signals and the kill deadline are all handled without blocking on any one.
//
// Exits are observed with waitid(WNOWAIT), which leaves the worker a zombie: its pid, and
// rank 0's pid as the process group id, then cannot be reused by an unrelated process, so
// signalling them stays safe until everything is reaped at the very end.
#include "runtime/launch/launcher.h"

#include "runtime/base/error.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <iterator>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "runtime/base/env.h"

extern char** environ;

namespace heiretsu::launch {
namespace {

// A worker's exit code when it could not be started (the shell's "command not found").
constexpr int kExitCannotRun = 127;
// A line longer than this is passed on in pieces, so that output without newlines (a
// progress bar drawn with \r) cannot grow the launcher's memory without bound.
constexpr size_t kMaxLine = 64 << 10;
// Reads per drain of a worker's pipe: 16 x 64 KiB covers the largest pipe buffer an
// unprivileged worker can ask for (1 MiB), while a descendant that keeps writing cannot
// hold the loop.
constexpr int kDrainReads = 16;
// After every rank has exited, output still arriving from descendants that escaped the
// process group is passed on for this long.
constexpr std::chrono::milliseconds kLateOutput(1000);
// The signals that stop the job when the launcher receives them.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};
// A job directory is heiretsu-job-PID-XXXXXX, PID the launcher's, holding the lock
// file its launcher keeps locked (flock) while it lives.
constexpr char kJobDirPrefix[] = "heiretsu-job-";
constexpr char kJobLockName[] = "/owner.lock";

// Whether the launcher of job directory `dir` is alive by its lock: the lock is
// held (a launcher in another PID namespace, whose pid means nothing here, is seen
// too). Without a lock file, nothing is known: false.
bool JobLockHeld(const std::string& dir) {
  const int fd = open((dir + kJobLockName).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);  // releases the lock if we took it
  return held;
}

using Clock = std::chrono::steady_clock;

// The write end of the self-pipe, for the signal handler.
int g_wake_fd = -1;

void OnSignal(int signo) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(signo);
  // The pipe is non-blocking: when it is full, the loop has wake-ups enough already.
  (void)!write(g_wake_fd, &byte, 1);
  errno = saved;
}

std::string ErrnoText(int err) { return std::strerror(err); }

// Writes all of `text` (one write when the sink allows, so a line is never split among
// other writers' output).
void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      // A sink someone made non-blocking (a terminal shared with another program).
      pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, -1);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return;  // nowhere left to report to
    }
  }
}

void Say(int fd, const std::string& message) { WriteAll(fd, "heiretsu: " + message + "\n"); }

// Milliseconds from now to `deadline`, rounded up, at least 0: a poll() timeout.
int MsUntil(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : static_cast<int>(left);
}

// The self-pipe and the signal handlers, for the duration of a job; the caller's handlers
// and signal mask come back when it ends.
class SignalWatch {
 public:
  // Returns an error message, or an empty string.
  std::string Install() {
    if (pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0)
      return "cannot create a pipe: " + ErrnoText(errno);
    g_wake_fd = fds_[1];
    struct sigaction action = {};
    action.sa_handler = OnSignal;
    sigemptyset(&action.sa_mask);
    // SA_RESTART: the caller's other threads should not see EINTR because of the job.
    action.sa_flags = SA_RESTART;
    for (size_t i = 0; i < std::size(kStopSignals); ++i) {
      sigaction(kStopSignals[i], &action, &old_stop_[i]);
    }
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, &old_child_);
    // The caller may have blocked these signals; this thread must take them or the loop
    // would never wake for a worker's exit.
    sigset_t take;
    sigemptyset(&take);
    for (int s : kStopSignals) sigaddset(&take, s);
    sigaddset(&take, SIGCHLD);
    pthread_sigmask(SIG_UNBLOCK, &take, &old_mask_);
    installed_ = true;
    return "";
  }

  ~SignalWatch() {
    if (installed_) {
      pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
      for (size_t i = 0; i < std::size(kStopSignals); ++i) {
        sigaction(kStopSignals[i], &old_stop_[i], nullptr);
      }
      sigaction(SIGCHLD, &old_child_, nullptr);
      g_wake_fd = -1;
    }
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }

  int read_fd() const { return fds_[0]; }

  // The signals received since the last call, SIGCHLD left out (exits are checked on
  // every turn of the loop anyway).
  std::vector<int> Take() {
    std::vector<int> signals;
    unsigned char bytes[64];
    ssize_t n;
    while ((n = read(fds_[0], bytes, sizeof bytes)) > 0) {
      for (ssize_t i = 0; i < n; ++i) {
        if (bytes[i] != SIGCHLD) signals.push_back(bytes[i]);
      }
    }
    return signals;
  }

 private:
  int fds_[2] = {-1, -1};
  bool installed_ = false;
  struct sigaction old_stop_[std::size(kStopSignals)];
  struct sigaction old_child_;
  sigset_t old_mask_;
};

// One of a worker's output pipes and the part of a line read from it so far.
struct Stream {
  int fd = -1;  // the read end; -1 once at end of file
  int sink = -1;
  std::string prefix;
  std::string pending;
};

struct Worker {
  pid_t pid = -1;
  bool exited = false;
  Stream out, err;
};

// What a forked child needs, all prepared before fork() so that the child calls only
// async-signal-safe functions.
struct ChildSetup {
  const char* path;
  char* const* argv;
  char* const* envp;
  pid_t pgid;  // 0: lead a new group
  pid_t parent;
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
  int report_fd;  // receives errno when the worker cannot be started
};

[[noreturn]] void StartChild(const ChildSetup& c) {
  // The worker starts with default dispositions whatever the caller ignored or caught,
  // and with nothing blocked (every signal is blocked across fork()).
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) sigaction(s, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // The parent-death signal fires when the forking thread ends; that thread stays in
  // LaunchJob until every worker is reaped, so it fires only if the launcher dies. A
  // launcher that died before this line would never see the report anyway.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 && getppid() != c.parent) _exit(kExitCannotRun);
  if (setpgid(0, c.pgid) == 0 && dup2(c.stdin_fd, STDIN_FILENO) >= 0 &&
      dup2(c.stdout_fd, STDOUT_FILENO) >= 0 && dup2(c.stderr_fd, STDERR_FILENO) >= 0) {
    execve(c.path, c.argv, c.envp);
  }
  const int err = errno;
  (void)!write(c.report_fd, &err, sizeof err);
  _exit(kExitCannotRun);
}

std::string ExitText(const siginfo_t& info) {
  if (info.si_code == CLD_EXITED) return "exited with code " + std::to_string(info.si_status);
  std::string text = "was killed by signal " + std::to_string(info.si_status) + " (" +
                     strsignal(info.si_status) + ")";
  if (info.si_code == CLD_DUMPED) text += ", core dumped";
  return text;
}

class Job {
 public:
  explicit Job(const LaunchSpec& spec) : spec_(spec) {}

  ~Job() {
    for (Worker& w : workers_) {
      for (Stream* s : {&w.out, &w.err}) {
        if (s->fd >= 0) close(s->fd);
      }
    }
  }

  // Starts rank `rank` with `env` (NAME=VALUE strings). Returns an error message, or an
  // empty string.
  std::string Start(int rank, const std::vector<std::string>& env, int stdin_fd) {
    std::vector<char*> argv, envp;
    argv.push_back(const_cast<char*>(spec_.program.c_str()));
    for (const std::string& a : spec_.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    int out[2], err[2], report[2];
    if (pipe2(out, O_CLOEXEC) != 0) return "cannot create a pipe: " + ErrnoText(errno);
    if (pipe2(err, O_CLOEXEC) != 0) {
      const int e = errno;
      CloseAll({out[0], out[1]});
      return "cannot create a pipe: " + ErrnoText(e);
    }
    if (pipe2(report, O_CLOEXEC) != 0) {
      const int e = errno;
      CloseAll({out[0], out[1], err[0], err[1]});
      return "cannot create a pipe: " + ErrnoText(e);
    }
    const ChildSetup setup = {spec_.program.c_str(),
                              argv.data(),
                              envp.data(),
                              pgid_,
                              getpid(),
                              stdin_fd,
                              out[1],
                              err[1],
                              report[1]};
    // Blocked across fork() so that the child never runs the launcher's handlers.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const pid_t pid = fork();
    if (pid == 0) StartChild(setup);
    const int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    CloseAll({out[1], err[1], report[1]});
    if (pid < 0) {
      CloseAll({out[0], err[0], report[0]});
      return "cannot fork: " + ErrnoText(fork_errno);
    }
    // The report pipe closes on a successful exec; an errno arrives if the child failed.
    int child_errno = 0;
    ssize_t n;
    while ((n = read(report[0], &child_errno, sizeof child_errno)) < 0 && errno == EINTR) {
    }
    close(report[0]);
    if (n > 0) {
      CloseAll({out[0], err[0]});
      while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      return "cannot run " + spec_.program + ": " + ErrnoText(child_errno);
    }
    if (pgid_ == 0) pgid_ = pid;
    Worker w;
    w.pid = pid;
    const std::string prefix = spec_.prefix_output ? "[rank " + std::to_string(rank) + "] " : "";
    w.out = {out[0], spec_.out_fd, prefix, ""};
    w.err = {err[0], spec_.err_fd, prefix, ""};
    for (int fd : {out[0], err[0]}) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    workers_.push_back(std::move(w));
    return "";
  }

  // The first failure: says so once, names the ranks that are alive but stopped (the
  // likely reason a peer's collective timed out), and stops the job.
  void Fail(const std::string& message, int exit_code) {
    Say(spec_.err_fd, message + "; stopping the job");
    NameStoppedRanks();
    exit_code_ = exit_code;
    Stop(SIGTERM);
  }

  // Runs the loop until every worker has exited and its output is passed on, reaps them
  // and returns the job's exit code.
  int Wait(SignalWatch* watch) {
    bool all_exited = false;
    Clock::time_point late_output_deadline;
    std::vector<pollfd> fds;
    std::vector<Stream*> streams;
    for (;;) {
      CheckExits();
      if (!all_exited && AllExited()) {
        all_exited = true;
        // What a worker left running dies with the job; the workers' zombies still hold
        // the group id, so the signal cannot reach anyone else.
        Kill();
        late_output_deadline = Clock::now() + kLateOutput;
      }
      if (stopping_ && !killed_ && Clock::now() >= kill_deadline_) {
        NameSilentRanks();
        Kill();
      }

      fds.assign(1, pollfd{watch->read_fd(), POLLIN, 0});
      streams.assign(1, nullptr);
      for (Worker& w : workers_) {
        for (Stream* s : {&w.out, &w.err}) {
          if (s->fd < 0) continue;
          fds.push_back(pollfd{s->fd, POLLIN, 0});
          streams.push_back(s);
        }
      }
      if (all_exited && (fds.size() == 1 || Clock::now() >= late_output_deadline)) break;
      int timeout = -1;
      if (all_exited) {
        timeout = MsUntil(late_output_deadline);
      } else if (stopping_ && !killed_) {
        timeout = MsUntil(kill_deadline_);
      }
      if (poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno == EINTR) continue;
        Say(spec_.err_fd, "poll failed: " + ErrnoText(errno) + "; killing the job");
        exit_code_ = kExitFailure;
        Kill();
        break;
      }
      if (fds[0].revents != 0) {
        for (int signo : watch->Take()) OnLauncherSignal(signo);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) Pump(streams[i], 1);
      }
    }
    for (Worker& w : workers_) {
      while (waitpid(w.pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      for (Stream* s : {&w.out, &w.err}) {
        if (s->fd >= 0) Pump(s, kDrainReads);
        Emit(s, /*at_end=*/true);
      }
    }
    return exit_code_;
  }

 private:
  // Alive (not exited) ranks whose process is stopped: SIGSTOP, a terminal stop, or
  // a debugger. Such a rank is silent to its peers without having failed.
  void NameStoppedRanks() {
    for (size_t r = 0; r < workers_.size(); ++r) {
      const Worker& w = workers_[r];
      if (w.exited) continue;
      const char state = ProcessState(w.pid);
      if (state == 'T' || state == 't')
        Say(spec_.err_fd, "rank " + std::to_string(r) + " (pid " + std::to_string(w.pid) +
                              ") is alive but stopped (state " + std::string(1, state) +
                              ": SIGSTOP, or held by a debugger): it stopped answering its "
                              "peers");
    }
  }

  // At the end of the grace: the ranks that did not exit after SIGTERM, alive but
  // silent (stopped, or stuck where a signal cannot reach them).
  void NameSilentRanks() {
    std::vector<int> silent;
    for (size_t r = 0; r < workers_.size(); ++r)
      if (!workers_[r].exited) silent.push_back(static_cast<int>(r));
    if (silent.empty()) return;
    std::string list;
    for (size_t i = 0; i < silent.size(); ++i) {
      const char state = ProcessState(workers_[silent[i]].pid);
      list += (i ? ", " : "") + std::to_string(silent[i]) +
              (state == 'T' || state == 't' ? " (stopped)" : "");
    }
    Say(spec_.err_fd, std::string(silent.size() == 1 ? "rank " : "ranks ") + list +
                          " did not exit within " + std::to_string(spec_.kill_grace_ms) +
                          " ms of being told to stop; killing " +
                          (silent.size() == 1 ? "it" : "them"));
  }

  // The state letter of /proc/PID/stat (R, S, D, T, t, Z, ...), or '?'.
  static char ProcessState(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return '?';
    char buf[512];
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return '?';
    buf[n] = '\0';
    // "pid (comm) S ...": the command may hold blanks and parentheses; the last ')' ends it.
    const char* end = std::strrchr(buf, ')');
    return end != nullptr && end[1] == ' ' && end[2] != '\0' ? end[2] : '?';
  }

  static void CloseAll(std::initializer_list<int> fds) {
    for (int fd : fds) close(fd);
  }

  bool AllExited() const {
    for (const Worker& w : workers_) {
      if (!w.exited) return false;
    }
    return true;
  }

  // Notes workers that have exited since the last call; the first failure stops the job.
  void CheckExits() {
    for (size_t r = 0; r < workers_.size(); ++r) {
      Worker& w = workers_[r];
      if (w.exited) continue;
      siginfo_t info = {};
      if (waitid(P_PID, w.pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
        continue;
      }
      w.exited = true;
      // The rank's last words (often why it failed) come before the launcher's message.
      for (Stream* s : {&w.out, &w.err}) Pump(s, kDrainReads);
      const bool failed = info.si_code != CLD_EXITED || info.si_status != 0;
      if (failed && !stopping_) {
        const bool bad_input = info.si_code == CLD_EXITED && info.si_status == kExitBadInput;
        Fail("rank " + std::to_string(r) + " " + ExitText(info),
             bad_input ? kExitBadInput : kExitFailure);
      }
    }
  }

  void OnLauncherSignal(int signo) {
    if (AllExited()) return;
    if (!stopping_) {
      Say(spec_.err_fd, "received signal " + std::to_string(signo) + " (" + strsignal(signo) +
                            "); stopping the job");
      exit_code_ = 128 + signo;
      Stop(signo);
    } else if (!killed_) {
      Say(spec_.err_fd, "received signal " + std::to_string(signo) + " again; killing the job");
      Kill();
    }
  }

  // Sends `signo` to the workers and gives them the grace to exit.
  void Stop(int signo) {
    stopping_ = true;
    kill_deadline_ = Clock::now() + std::chrono::milliseconds(spec_.kill_grace_ms);
    if (pgid_ > 0) kill(-pgid_, signo);
  }

  void Kill() {
    stopping_ = true;
    killed_ = true;
    if (pgid_ > 0) kill(-pgid_, SIGKILL);
    // Also by pid, for a worker that moved to a group or session of its own.
    for (const Worker& w : workers_) kill(w.pid, SIGKILL);
  }

  // Reads from `s` up to `reads` times (fewer when the pipe is empty) and passes on the
  // whole lines.
  void Pump(Stream* s, int reads) {
    char buf[64 << 10];
    for (int i = 0; i < reads && s->fd >= 0; ++i) {
      const ssize_t n = read(s->fd, buf, sizeof buf);
      if (n > 0) {
        s->pending.append(buf, static_cast<size_t>(n));
        Emit(s, /*at_end=*/false);
      } else if (n < 0 && errno == EINTR) {
        --i;
      } else if (n < 0 && errno == EAGAIN) {
        return;
      } else {
        close(s->fd);
        s->fd = -1;
        Emit(s, /*at_end=*/true);
      }
    }
  }

  // Writes the complete lines of `s` (at the end: everything, a last partial line ended
  // with a newline) with the rank's prefix, in one write.
  void Emit(Stream* s, bool at_end) {
    std::string text;
    size_t start = 0;
    for (size_t nl; (nl = s->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      text += s->prefix;
      text.append(s->pending, start, nl + 1 - start);
    }
    s->pending.erase(0, start);
    if (!s->pending.empty() && (at_end || s->pending.size() >= kMaxLine)) {
      text += s->prefix + s->pending + "\n";
      s->pending.clear();
    }
    if (!text.empty()) WriteAll(s->sink, text);
  }

  const LaunchSpec& spec_;
  std::vector<Worker> workers_;
  pid_t pgid_ = 0;  // rank 0's pid, once started
  bool stopping_ = false;
  bool killed_ = false;
  Clock::time_point kill_deadline_;
  int exit_code_ = 0;
};

// A port on 127.0.0.1 that nobody listened on a moment ago (as torchrun picks one).
int FreePort(std::string* error) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "cannot open a socket: " + ErrnoText(errno);
    return 0;
  }
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *error = "cannot find a free port on 127.0.0.1: " + ErrnoText(errno);
  } else {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// The launcher's environment less the variables it sets for each rank.
std::vector<std::string> InheritedEnvironment() {
  static const char* const kSet[] = {
      "RANK",        "WORLD_SIZE",  "LOCAL_RANK",    "LOCAL_WORLD_SIZE",
      "MASTER_ADDR", "MASTER_PORT", "HEIRETSU_STORE"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const char* s : kSet) replaced = replaced || name == s;
    if (!replaced) env.push_back(entry);
  }
  return env;
}

// Starts the workers and runs the job; the job directory exists around it.
int RunJob(const LaunchSpec& spec, const std::string& store) {
  std::string error;
  const int port = FreePort(&error);
  if (port == 0) {
    Say(spec.err_fd, error);
    return kExitFailure;
  }
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) {
    Say(spec.err_fd, "cannot open /dev/null: " + ErrnoText(errno));
    return kExitFailure;
  }
  SignalWatch watch;
  if (std::string err = watch.Install(); !err.empty()) {
    close(devnull);
    Say(spec.err_fd, err);
    return kExitFailure;
  }
  const std::vector<std::string> inherited = InheritedEnvironment();
  const std::string world = std::to_string(spec.world_size);
  Job job(spec);
  for (int r = 0; r < spec.world_size; ++r) {
    std::vector<std::string> env = inherited;
    const std::string rank = std::to_string(r);
    for (const std::string& e :
         {"RANK=" + rank, "WORLD_SIZE=" + world, "LOCAL_RANK=" + rank, "LOCAL_WORLD_SIZE=" + world,
          std::string("MASTER_ADDR=127.0.0.1"), "MASTER_PORT=" + std::to_string(port),
          "HEIRETSU_STORE=" + store}) {
      env.push_back(e);
    }
    if (std::string err = job.Start(r, env, devnull); !err.empty()) {
      job.Fail("cannot start rank " + rank + ": " + err, kExitFailure);
      break;
    }
  }
  close(devnull);
  return job.Wait(&watch);
}

// Parses a non-negative decimal int; nothing else (no sign, spaces or trailing text).
bool ParseCount(const char* text, int* out) {
  if (*text == '\0') return false;
  long long value = 0;
  for (const char* p = text; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9') return false;
    value = value * 10 + (*p - '0');
    if (value > INT_MAX) return false;
  }
  *out = static_cast<int>(value);
  return true;
}

}  // namespace

void RemoveStaleJobDirectories(const std::string& root) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kJobDirPrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::strlen(kJobDirPrefix));
    const size_t dash = rest.find('-');
    int pid = 0;
    if (dash == std::string::npos || !ParseCount(rest.substr(0, dash).c_str(), &pid) || pid < 1)
      continue;  // not ours, or from before the pid was in the name
    std::error_code type_ec;
    if (it->is_symlink(type_ec) || !it->is_directory(type_ec)) continue;
    if (kill(pid, 0) == 0 || errno == EPERM) continue;  // its launcher is alive
    if (JobLockHeld(it->path().string())) continue;     // alive in another namespace
    std::error_code rm_ec;
    std::filesystem::remove_all(it->path(), rm_ec);
  }
}

int LaunchJob(const LaunchSpec& spec) {
  if (spec.world_size < 1) {
    Say(spec.err_fd, "world size " + std::to_string(spec.world_size) + " is not at least 1");
    return kExitBadInput;
  }
  if (spec.kill_grace_ms < 0) {
    Say(spec.err_fd, "kill grace " + std::to_string(spec.kill_grace_ms) + " ms is negative");
    return kExitBadInput;
  }
  std::string root = spec.temp_root;
  if (root.empty()) {
    root = "/tmp";
    if (Status err = env::Directory("TMPDIR", &root)) {
      Say(spec.err_fd, err->message);
      return kExitBadInput;
    }
  }
  RemoveStaleJobDirectories(root);
  // The launcher's pid in the name says whose it is (RemoveStaleJobDirectories).
  std::string dir = root + "/" + kJobDirPrefix + std::to_string(getpid()) + "-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    Say(spec.err_fd, "cannot create a job directory in " + root + ": " + ErrnoText(errno));
    return kExitFailure;
  }
  // Held until this function returns (close), and by nobody else: workers do not
  // inherit it (O_CLOEXEC).
  const int lock = open((dir + kJobLockName).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock >= 0) flock(lock, LOCK_EX);
  const std::string store = dir + "/store";
  int code;
  if (mkdir(store.c_str(), 0700) != 0) {
    Say(spec.err_fd, "cannot create " + store + ": " + ErrnoText(errno));
    code = kExitFailure;
  } else {
    code = RunJob(spec, store);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (lock >= 0) close(lock);
  if (ec) Say(spec.err_fd, "cannot remove the job directory " + dir + ": " + ec.message());
  return code;
}

Status RankFromEnvironment(std::optional<RankEnv>* out) {
  struct Family {
    const char* source;
    const char* rank;
    const char* size;
    const char* local_rank;
  };
  static const Family kFamilies[] = {
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
      {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
      {"PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
  };
  out->reset();
  for (const Family& f : kFamilies) {
    const char* rank = getenv(f.rank);
    if (rank == nullptr) continue;
    const std::string where = std::string(" (") + f.source + " launcher variables)";
    auto bad = [&](const std::string& what) -> Status { return Error::BadInput(what + where); };
    const char* size = getenv(f.size);
    if (size == nullptr) return bad(std::string(f.rank) + " is set but " + f.size + " is not");
    const char* local = getenv(f.local_rank);
    RankEnv env;
    env.source = f.source;
    for (auto [name, text, out] :
         {std::tuple{f.rank, rank, &env.rank}, std::tuple{f.size, size, &env.world_size},
          std::tuple{f.local_rank, local, &env.local_rank}}) {
      if (text != nullptr && !ParseCount(text, out)) {
        return bad(std::string(name) + "='" + text + "' is not a non-negative integer");
      }
    }
    if (local == nullptr) env.local_rank = env.rank;
    if (env.world_size < 1) return bad(std::string(f.size) + "=0 is not at least 1");
    for (auto [name, value] :
         {std::pair{f.rank, env.rank}, std::pair{f.local_rank, env.local_rank}}) {
      if (value >= env.world_size) {
        return bad(std::string(name) + "=" + std::to_string(value) + " is not below " + f.size +
                   "=" + std::to_string(env.world_size));
      }
    }
    *out = env;
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace heiretsu::launch
