// The job launcher behind `heiretsu run` (docs/architecture.md §1): starts every rank of a job on
// this machine, prefixes their output with the rank, forwards Ctrl-C, and tears the whole
// job down when any rank fails; and the other half of that contract, RankFromEnvironment,
// by which a worker learns its rank from this launcher or from mpirun, srun or torchrun.
//
// Workers run in one process group of their own, so a Ctrl-C at the terminal reaches the
// launcher alone and each worker sees the forwarded signal exactly once; signals go to
// the whole group, which takes down what a worker started too. Each worker also dies
// with SIGKILL if the launcher itself is killed (PR_SET_PDEATHSIG), so no rank outlives
// it; what a worker started is then the worker's to stop.
//
// Exit code of LaunchJob:
//   0        every rank exited with code 0;
//   2        the first rank to fail exited with code 2 (bad input, docs/architecture.md §1: a bad
//            plan or flag seen by the workers stays exit 2 for the user);
//   128 + S  the launcher received signal S (SIGINT: 130, SIGTERM: 143, SIGHUP: 129)
//            before any rank failed;
//   1        anything else: a rank exited with another code or was killed by a signal,
//            or the launcher could not start the job.
#ifndef HEIRETSU_RUNTIME_LAUNCH_LAUNCHER_H_
#define HEIRETSU_RUNTIME_LAUNCH_LAUNCHER_H_

#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::launch {

struct LaunchSpec {
  std::string program;            // path of the worker executable; PATH is not searched
  std::vector<std::string> args;  // its arguments (argv[1]...)
  int world_size = 1;
  // Where the job's directory (heiretsu-job-PID-XXXXXX, PID the launcher's, holding
  // the rendezvous store) is made; empty: $TMPDIR (which must then be a directory:
  // exit 2 otherwise), else /tmp. The job's directory is removed when the job ends,
  // and those of launchers that died are removed when the next job starts.
  std::string temp_root;
  // After the first failure (or a forwarded signal) the other ranks get this long to
  // exit before SIGKILL. 5 s, so that with detection and delivery every process is gone
  // well within 10 s of a rank's death.
  int kill_grace_ms = 5000;
  bool prefix_output = true;  // "[rank N] " before every line of a worker's output
  // Where the workers' stdout and stderr lines and the launcher's own messages go.
  int out_fd = STDOUT_FILENO;
  int err_fd = STDERR_FILENO;
};

// Runs the job to its end and returns the exit code above. Each rank r runs `program`
// with stdin from /dev/null and, added to the launcher's environment,
//   RANK=r  WORLD_SIZE=n  LOCAL_RANK=r  LOCAL_WORLD_SIZE=n
//   MASTER_ADDR=127.0.0.1  MASTER_PORT=<a free port>
//   HEIRETSU_STORE=<job dir>/store   (empty and fresh for each job, for Gloo's FileStore)
// Its stdout and stderr lines go to out_fd and err_fd whole (a line is never mixed with
// another), a last line without a newline is ended at exit. When a rank exits with a
// non-zero code or by a signal, one line says so on err_fd, e.g.
//   heiretsu: rank 1 exited with code 3; stopping the job
//   heiretsu: rank 2 was killed by signal 9 (Killed); stopping the job
// followed by a line naming each other rank that is alive but stopped (SIGSTOP, a
// debugger), the usual reason a peer's collective timed out, e.g.
//   heiretsu: rank 1 (pid 4242) is alive but stopped (state T: ...): it stopped
//             answering its peers
// and the others get SIGTERM, then SIGKILL after kill_grace_ms; the ranks still alive
// then are named ("rank 1 (stopped) did not exit within 5000 ms ..."). SIGINT, SIGTERM or SIGHUP
// to the launcher are forwarded to the workers, which then get the same grace; a second
// such signal kills them at once. Every worker is reaped before LaunchJob returns.
//
// LaunchJob installs process-wide handlers for SIGINT, SIGTERM, SIGHUP and SIGCHLD while it
// runs (the previous ones come back afterwards), so one job runs at a time per process,
// and nothing else in the process may reap children it did not start (waitpid(-1)).
int LaunchJob(const LaunchSpec& spec);

// Removes the job directories heiretsu-job-PID-* under `root` whose launcher PID is no
// longer alive (a launcher killed by SIGKILL cannot remove its own). LaunchJob calls it
// before each job; directories of live launchers, and names of any other form, are
// never touched.
void RemoveStaleJobDirectories(const std::string& root);

// A worker's place in its job, as its launcher described it.
struct RankEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // among the ranks on this machine (picks the GPU)
  std::string source;  // the launcher family the values came from, e.g. "torchrun"
};

// Reads the rank from the first of these variable families whose rank variable is set:
//   torchrun, heiretsu run:  RANK, WORLD_SIZE, LOCAL_RANK
//   Open MPI (mpirun):       OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
//                            OMPI_COMM_WORLD_LOCAL_RANK
//   Slurm (srun):            SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
//   PMI (MPICH, Intel MPI):  PMI_RANK, PMI_SIZE, MPI_LOCALRANKID
// RANK comes first because `heiretsu run` sets it: a launcher started inside an srun or
// mpirun allocation gives its workers both families, and its own is the one that counts.
// The size variable must be set with the rank variable; the local rank may be absent,
// and is then taken to be the rank (exact on one machine). Values must be decimal
// integers with 0 <= rank, local rank < world size.
//
// Sets *out to nullopt when no family is set (a single-rank run); fails (bad input)
// naming the variable and its value when the values are bad.
Status RankFromEnvironment(std::optional<RankEnv>* out);

}  // namespace heiretsu::launch

#endif  // HEIRETSU_RUNTIME_LAUNCH_LAUNCHER_H_
