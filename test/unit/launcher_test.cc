// Unit tests of the job launcher behind `heiretsu run` (issue #4): output prefixed by rank
// and never mixed within a line, the whole job torn down quickly when any rank fails, one
// message naming the rank and its exit code or signal, Ctrl-C forwarded, no process left
// behind; and RankFromEnvironment for the torchrun, Open MPI, Slurm and PMI variables.
// The workers are /bin/sh scripts.
#include "runtime/launch/launcher.h"

#include <fcntl.h>
#include <sys/file.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace heiretsu::launch {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Whether `pid` no longer runs: gone, or a zombie its new parent has yet to reap (a
// process that has just closed its files may take a moment to get there).
bool Gone(pid_t pid) {
  for (int i = 0; i < 100; ++i) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren != std::string::npos && stat.compare(paren, 4, ") Z ") == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

struct Result {
  int code = -1;
  std::string out, err;
  double seconds = 0;
};

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "launcher_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result Run(LaunchSpec spec) {
    const std::string out_path = dir_ + "/out.txt", err_path = dir_ + "/err.txt";
    spec.out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    spec.err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (spec.temp_root.empty()) spec.temp_root = dir_;
    const auto start = std::chrono::steady_clock::now();
    Result r;
    r.code = LaunchJob(spec);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    close(spec.out_fd);
    close(spec.err_fd);
    r.out = ReadFile(out_path);
    r.err = ReadFile(err_path);
    return r;
  }

  // Runs `script` with /bin/sh on `world` ranks; $D in the script is the test's directory.
  Result RunScript(int world, const std::string& script, int grace_ms = 5000) {
    LaunchSpec spec;
    spec.program = "/bin/sh";
    spec.args = {"-c", "D='" + dir_ + "'\n" + script};
    spec.world_size = world;
    spec.kill_grace_ms = grace_ms;
    return Run(spec);
  }

  // The pids the workers recorded with the Record* snippets below.
  std::vector<pid_t> RecordedPids() {
    std::vector<pid_t> pids;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const std::string name = entry.path().filename();
      if (name.rfind("pid.", 0) == 0 && name.find(".tmp") == std::string::npos) {
        pids.push_back(std::stoi(ReadFile(entry.path())));
      }
    }
    return pids;
  }

  std::string dir_;
};

// Shell snippets. The shell's own pid, written atomically to $D/pid.$RANK:
const char kRecordShell[] = "echo $$ > $D/pid.$RANK.tmp && mv $D/pid.$RANK.tmp $D/pid.$RANK\n";
// A `sleep 60` child of the shell, recorded as $D/pid.child.$RANK, which the shell waits
// for: killing only the rank's own process would leave it behind.
const char kSleepInChild[] =
    "sleep 60 & echo $! > $D/pid.child.$RANK.tmp && mv $D/pid.child.$RANK.tmp "
    "$D/pid.child.$RANK\nwait\n";

// Waits until ranks `ranks` (a shell word list) have recorded `what` (pid or pid.child).
std::string AwaitRecords(const std::string& what, const std::string& ranks) {
  return "for r in " + ranks + "; do until [ -e $D/" + what + ".$r ]; do sleep 0.01; done; done\n";
}

TEST_F(LauncherTest, PrefixesEveryLineWithItsRank) {
  Result r = RunScript(3, "echo hello $RANK; echo err $RANK >&2; printf 'tail %s' $RANK");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Sorted(Lines(r.out)),
            (std::vector<std::string>{"[rank 0] hello 0", "[rank 0] tail 0", "[rank 1] hello 1",
                                      "[rank 1] tail 1", "[rank 2] hello 2", "[rank 2] tail 2"}));
  EXPECT_EQ(Sorted(Lines(r.err)),
            (std::vector<std::string>{"[rank 0] err 0", "[rank 1] err 1", "[rank 2] err 2"}));
  EXPECT_EQ(r.out.back(), '\n');  // the partial last lines were ended
}

TEST_F(LauncherTest, WithoutPrefixLinesPassUnchanged) {
  LaunchSpec spec;
  spec.program = "/bin/sh";
  spec.args = {"-c", "echo out; echo err >&2"};
  spec.world_size = 2;
  spec.prefix_output = false;
  Result r = Run(spec);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "out\nout\n");
  EXPECT_EQ(r.err, "err\nerr\n");
}

TEST_F(LauncherTest, LinesFromManyRanksNeverMix) {
  // Each echo is its own write, and a line is written in two pieces, so the ranks'
  // writes interleave finely; every line must still come out whole and in order.
  Result r = RunScript(4,
                       "i=0; while [ $i -lt 1500 ]; do printf 'line %s %s ' $RANK $i; "
                       "echo abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done");
  EXPECT_EQ(r.code, 0) << r.err;
  const std::regex line(R"(\[rank (\d)\] line (\d) (\d+) abcdefghijklmnopqrstuvwxyz)");
  std::map<int, int> next;
  const std::vector<std::string> lines = Lines(r.out);
  EXPECT_EQ(lines.size(), 4u * 1500);
  for (const std::string& l : lines) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, line)) << l;
    ASSERT_EQ(m[1], m[2]) << l;
    const int rank = std::stoi(m[1]);
    ASSERT_EQ(std::stoi(m[3]), next[rank]++) << l;
  }
}

TEST_F(LauncherTest, LongLinesArePassedOnInPieces) {
  Result r = RunScript(1, "head -c 200000 /dev/zero | tr '\\0' x");
  EXPECT_EQ(r.code, 0) << r.err;
  size_t xs = 0;
  for (const std::string& l : Lines(r.out)) {
    ASSERT_EQ(l.rfind("[rank 0] ", 0), 0u);
    xs += l.size() - std::string("[rank 0] ").size();
  }
  EXPECT_EQ(xs, 200000u);
  EXPECT_GT(Lines(r.out).size(), 1u);
}

TEST_F(LauncherTest, FailingRankStopsTheJobAndNamesItsCode) {
  Result r = RunScript(3, std::string(kRecordShell) + "if [ $RANK = 1 ]; then\n" +
                              AwaitRecords("pid.child", "0 2") +
                              "echo bye >&2; sleep 0.2; exit 3\nfi\n" + kSleepInChild);
  EXPECT_EQ(r.code, 1);
  EXPECT_LT(r.seconds, 5) << "the others sleep 60 s";
  EXPECT_EQ(Count(r.err, "heiretsu:"), 1u) << r.err;
  EXPECT_NE(r.err.find("[rank 1] bye\nheiretsu: rank 1 exited with code 3; stopping the job\n"),
            std::string::npos)
      << r.err;
  const std::vector<pid_t> pids = RecordedPids();
  EXPECT_EQ(pids.size(), 5u);  // 3 shells, 2 sleeps
  for (pid_t pid : pids) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, RankKilledBySignalIsNamed) {
  Result r = RunScript(3, std::string(kRecordShell) + "if [ $RANK = 0 ]; then\n" +
                              AwaitRecords("pid", "1 2") + "kill -KILL $$\nfi\nsleep 60\n");
  EXPECT_EQ(r.code, 1);
  EXPECT_LT(r.seconds, 5);
  EXPECT_EQ(r.err, "heiretsu: rank 0 was killed by signal 9 (Killed); stopping the job\n");
  for (pid_t pid : RecordedPids()) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, RankIgnoringSigtermIsKilledAfterTheGrace) {
  Result r = RunScript(3,
                       "trap '' TERM\n" + std::string(kRecordShell) + "if [ $RANK = 1 ]; then\n" +
                           AwaitRecords("pid", "0 2") + "exit 1\nfi\nsleep 60\n",
                       /*grace_ms=*/500);
  EXPECT_EQ(r.code, 1);
  EXPECT_GE(r.seconds, 0.5);
  EXPECT_LT(r.seconds, 3);
  EXPECT_EQ(r.err,
            "heiretsu: rank 1 exited with code 1; stopping the job\n"
            "heiretsu: ranks 0, 2 did not exit within 500 ms of being told to stop; killing "
            "them\n");
  const std::vector<pid_t> pids = RecordedPids();
  EXPECT_EQ(pids.size(), 3u);
  for (pid_t pid : pids) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, AStoppedRankIsNamedAsTheSilentOne) {
  // Rank 1 stops itself (SIGSTOP); rank 0 then fails, as a peer's collective timeout
  // would. The launcher tells the stopped rank from the one that exited.
  Result r = RunScript(2, std::string(kRecordShell) +
                              "if [ $RANK = 1 ]; then kill -STOP $$; fi\n" +
                              AwaitRecords("pid", "1") +
                              "i=0; until grep -q ') T ' /proc/$(cat $D/pid.1)/stat || [ $i = 500 ]; "
                              "do sleep 0.01; i=$((i + 1)); done\nexit 1\n",
                       /*grace_ms=*/300);
  EXPECT_EQ(r.code, 1);
  const std::vector<pid_t> pids = RecordedPids();
  ASSERT_EQ(pids.size(), 2u);
  const pid_t stopped = std::stoi(ReadFile(dir_ + "/pid.1"));
  EXPECT_EQ(r.err, "heiretsu: rank 0 exited with code 1; stopping the job\n"
                   "heiretsu: rank 1 (pid " + std::to_string(stopped) +
                       ") is alive but stopped (state T: SIGSTOP, or held by a debugger): it "
                       "stopped answering its peers\n"
                       "heiretsu: rank 1 (stopped) did not exit within 300 ms of being told to "
                       "stop; killing it\n");
  for (pid_t pid : pids) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, JobDirectoriesOfDeadLaunchersAreRemovedAtTheNextStart) {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  const std::string dead = dir_ + "/heiretsu-job-" + std::to_string(child) + "-abc123";
  const std::string alive = dir_ + "/heiretsu-job-" + std::to_string(getpid()) + "-def456";
  const std::string old_style = dir_ + "/heiretsu-job-Xy12Zq";
  const std::string other = dir_ + "/heiretsu-jobs";
  // A dead pid, but its lock is held: a launcher in another PID namespace sharing the
  // directory, whose pid means nothing here.
  const std::string locked = dir_ + "/heiretsu-job-" + std::to_string(child) + "-lck999";
  for (const std::string& d : {dead, alive, old_style, other, locked})
    fs::create_directories(d + "/store");
  const int lock = open((locked + "/owner.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(lock, 0);
  ASSERT_EQ(flock(lock, LOCK_EX), 0);
  Result r = RunScript(1, "true");
  close(lock);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(locked + "/store"));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(alive + "/store"));
  EXPECT_TRUE(fs::exists(old_style));
  EXPECT_TRUE(fs::exists(other));
}

TEST_F(LauncherTest, BadTmpdirIsBadInput) {
  const char* saved = getenv("TMPDIR");
  const std::string keep = saved ? saved : "";
  setenv("TMPDIR", (dir_ + "/absent").c_str(), 1);
  LaunchSpec spec;
  spec.program = "/bin/true";
  spec.temp_root = "";
  const std::string err_path = dir_ + "/err.txt";
  spec.err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int code = LaunchJob(spec);
  close(spec.err_fd);
  if (saved) setenv("TMPDIR", keep.c_str(), 1); else unsetenv("TMPDIR");
  EXPECT_EQ(code, 2);
  EXPECT_EQ(ReadFile(err_path), "heiretsu: TMPDIR='" + dir_ +
                                    "/absent' is not a directory: No such file or directory (set "
                                    "it to an existing directory, or unset it)\n");
}

TEST_F(LauncherTest, BadInputExitCodeTwoPropagates) {
  Result r = RunScript(3, "if [ $RANK = 2 ]; then echo 'bad plan' >&2; exit 2; fi; sleep 60");
  EXPECT_EQ(r.code, 2);
  EXPECT_LT(r.seconds, 5);
  EXPECT_EQ(r.err, "[rank 2] bad plan\nheiretsu: rank 2 exited with code 2; stopping the job\n");
}

TEST_F(LauncherTest, CtrlCIsForwardedToTheWorkers) {
  // Rank 0 sends SIGINT to the launcher (this process), as a terminal's Ctrl-C would.
  // Ranks 0 and 2 ignore SIGTERM, so only the forwarded SIGINT can stop them before the
  // grace; rank 1 traps SIGINT to show that it is the signal that came. They loop on
  // builtins: a shell that a signal reaches while it forks a command can lose it.
  Result r =
      RunScript(3,
                "if [ $RANK = 1 ]; then trap 'echo got INT; exit 0' INT; else trap '' TERM; "
                "fi\n" +
                    std::string(kRecordShell) + "if [ $RANK = 0 ]; then\n" +
                    AwaitRecords("pid", "1 2") + "kill -INT $PPID\nfi\nwhile :; do :; done\n");
  EXPECT_EQ(r.code, 130);
  EXPECT_LT(r.seconds, 4) << "the workers should stop on SIGINT, not after the grace";
  EXPECT_EQ(r.err, "heiretsu: received signal 2 (Interrupt); stopping the job\n");
  EXPECT_EQ(r.out, "[rank 1] got INT\n");
  for (pid_t pid : RecordedPids()) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, SecondCtrlCKillsAtOnce) {
  Result r = RunScript(2,
                       "trap '' INT TERM\n" + std::string(kRecordShell) +
                           "if [ $RANK = 0 ]; then\n" + AwaitRecords("pid", "1") +
                           "kill -INT $PPID; sleep 0.3; kill -INT $PPID\nfi\nsleep 60\n",
                       /*grace_ms=*/20000);
  EXPECT_EQ(r.code, 130);
  EXPECT_LT(r.seconds, 5);
  EXPECT_EQ(r.err,
            "heiretsu: received signal 2 (Interrupt); stopping the job\n"
            "heiretsu: received signal 2 again; killing the job\n");
  for (pid_t pid : RecordedPids()) EXPECT_TRUE(Gone(pid)) << pid;
}

TEST_F(LauncherTest, ProgramThatCannotRunIsReported) {
  LaunchSpec spec;
  spec.program = dir_ + "/no-such-worker";
  spec.world_size = 2;
  Result r = Run(spec);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "heiretsu: cannot start rank 0: cannot run " + spec.program +
                       ": No such file or directory; stopping the job\n");
}

TEST_F(LauncherTest, BadSpecIsRefused) {
  LaunchSpec spec;
  spec.program = "/bin/true";
  spec.world_size = 0;
  Result r = Run(spec);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "heiretsu: world size 0 is not at least 1\n");
}

TEST_F(LauncherTest, RankEnvironmentAndAFreshStorePerJob) {
  // Rank 0 reports what the store held at its start, then leaves a file in it.
  const std::string script =
      "echo $RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT "
      "$HEIRETSU_STORE\n"
      "if [ $RANK = 0 ]; then test -d \"$HEIRETSU_STORE\" && echo files $(ls -A "
      "\"$HEIRETSU_STORE\" | wc -l); touch \"$HEIRETSU_STORE/left\"; fi\n";
  std::vector<std::string> stores;
  for (int job = 0; job < 2; ++job) {
    Result r = RunScript(2, script);
    ASSERT_EQ(r.code, 0) << r.err;
    const std::vector<std::string> lines = Sorted(Lines(r.out));
    ASSERT_EQ(lines.size(), 3u) << r.out;
    std::smatch m0, m1;
    const std::regex env(R"(\[rank (\d)\] (\d) 2 (\d) 2 127\.0\.0\.1 (\d+) (\S+))");
    ASSERT_TRUE(std::regex_match(lines[0], m0, env)) << lines[0];
    ASSERT_TRUE(std::regex_match(lines[2], m1, env)) << lines[2];
    EXPECT_EQ(lines[1], "[rank 0] files 0");
    EXPECT_EQ(m0[1], "0");
    EXPECT_EQ(m0[2], "0");
    EXPECT_EQ(m0[3], "0");
    EXPECT_EQ(m1[1], "1");
    EXPECT_EQ(m1[2], "1");
    EXPECT_EQ(m1[3], "1");
    EXPECT_EQ(m0[4], m1[4]);
    const int port = std::stoi(m0[4]);
    EXPECT_GT(port, 0);
    EXPECT_LT(port, 65536);
    EXPECT_EQ(m0[5], m1[5]);
    const std::string store = m0[5];
    EXPECT_EQ(store.rfind(dir_ + "/heiretsu-job-", 0), 0u) << store;
    EXPECT_EQ(fs::path(store).filename(), "store");
    EXPECT_FALSE(fs::exists(store));
    EXPECT_FALSE(fs::exists(fs::path(store).parent_path()));
    stores.push_back(store);
  }
  EXPECT_NE(stores[0], stores[1]);
}

// Sets the launcher variables of a test and restores the process's afterwards.
class RankEnvTest : public ::testing::Test {
 protected:
  static constexpr const char* kVars[] = {"RANK",
                                          "WORLD_SIZE",
                                          "LOCAL_RANK",
                                          "OMPI_COMM_WORLD_RANK",
                                          "OMPI_COMM_WORLD_SIZE",
                                          "OMPI_COMM_WORLD_LOCAL_RANK",
                                          "SLURM_PROCID",
                                          "SLURM_NTASKS",
                                          "SLURM_LOCALID",
                                          "PMI_RANK",
                                          "PMI_SIZE",
                                          "MPI_LOCALRANKID"};

  void SetUp() override {
    for (const char* v : kVars) {
      if (const char* value = getenv(v)) saved_[v] = value;
    }
    Clear();
  }
  void TearDown() override {
    Clear();
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

  void Clear() {
    for (const char* v : kVars) unsetenv(v);
  }

  void Set(const std::map<std::string, std::string>& vars) {
    for (const auto& [name, value] : vars) setenv(name.c_str(), value.c_str(), 1);
  }

  // The error for the variables set, or "" when they were accepted.
  std::string Error() {
    std::optional<RankEnv> env;
    const Status err = RankFromEnvironment(&env);
    EXPECT_EQ(env, std::nullopt);
    if (err) EXPECT_EQ(err->exit_code(), kExitBadInput);
    return err ? err->message : "";
  }

  std::map<std::string, std::string> saved_;
};

TEST_F(RankEnvTest, NoneSetIsASingleRank) {
  std::optional<RankEnv> env = RankEnv{};
  EXPECT_EQ(RankFromEnvironment(&env), std::nullopt);
  EXPECT_EQ(env, std::nullopt);
}

TEST_F(RankEnvTest, ReadsEachFamily) {
  struct Case {
    std::map<std::string, std::string> vars;
    int rank, world, local;
    std::string source;
  };
  const Case cases[] = {
      {{{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}}, 3, 8, 1, "torchrun"},
      {{{"OMPI_COMM_WORLD_RANK", "5"},
        {"OMPI_COMM_WORLD_SIZE", "6"},
        {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}},
       5,
       6,
       2,
       "Open MPI"},
      {{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_LOCALID", "0"}}, 0, 1, 0, "Slurm"},
      {{{"PMI_RANK", "7"}, {"PMI_SIZE", "16"}, {"MPI_LOCALRANKID", "3"}}, 7, 16, 3, "PMI"},
      // Without a local rank variable the rank stands in (one machine).
      {{{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}}, 2, 4, 2, "PMI"},
  };
  for (const Case& c : cases) {
    Clear();
    Set(c.vars);
    std::optional<RankEnv> env;
    const Status err = RankFromEnvironment(&env);
    ASSERT_TRUE(env.has_value()) << c.source << ": " << (err ? err->message : "");
    EXPECT_EQ(env->rank, c.rank) << c.source;
    EXPECT_EQ(env->world_size, c.world) << c.source;
    EXPECT_EQ(env->local_rank, c.local) << c.source;
    EXPECT_EQ(env->source, c.source);
    EXPECT_EQ(err, std::nullopt);
  }
}

TEST_F(RankEnvTest, TorchrunVariablesComeFirst) {
  // `heiretsu run` inside an srun allocation: the launcher's own RANK counts.
  Set({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"RANK", "2"}, {"WORLD_SIZE", "4"}});
  std::optional<RankEnv> env;
  const Status err = RankFromEnvironment(&env);
  ASSERT_TRUE(env.has_value()) << (err ? err->message : "");
  EXPECT_EQ(env->rank, 2);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->source, "torchrun");
}

TEST_F(RankEnvTest, RejectsBadValues) {
  Set({{"RANK", "4"}, {"WORLD_SIZE", "4"}});
  EXPECT_EQ(Error(), "RANK=4 is not below WORLD_SIZE=4 (torchrun launcher variables)");
  Set({{"RANK", "abc"}});
  EXPECT_EQ(Error(), "RANK='abc' is not a non-negative integer (torchrun launcher variables)");
  for (const char* bad : {"-1", "1x", " 1", "", "99999999999"}) {
    Set({{"RANK", bad}});
    EXPECT_NE(Error().find("is not a non-negative integer"), std::string::npos) << bad;
  }
  Set({{"RANK", "0"}, {"WORLD_SIZE", "0"}});
  EXPECT_EQ(Error(), "WORLD_SIZE=0 is not at least 1 (torchrun launcher variables)");
  Set({{"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}});
  EXPECT_EQ(Error(), "LOCAL_RANK=2 is not below WORLD_SIZE=2 (torchrun launcher variables)");
  unsetenv("WORLD_SIZE");
  EXPECT_EQ(Error(), "RANK is set but WORLD_SIZE is not (torchrun launcher variables)");
  unsetenv("RANK");
  Set({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(Error(), "SLURM_PROCID=3 is not below SLURM_NTASKS=2 (Slurm launcher variables)");
  Set({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "two"}});
  EXPECT_EQ(Error(),
            "OMPI_COMM_WORLD_SIZE='two' is not a non-negative integer (Open MPI launcher "
            "variables)");
}

}  // namespace
}  // namespace heiretsu::launch
