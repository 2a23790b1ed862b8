// The communicators of a rank: one Gloo group per mesh axis of size > 1, and one of
// the data ranks (dp x ep) when both are > 1 (the ranks
// that share this rank's other coordinates, by plan.fbs's rule), connected through
// the job's rendezvous store in axis order on every rank, and handed to the
// executor.
#ifndef HEIRETSU_RUNTIME_RANK_GROUPS_H_
#define HEIRETSU_RUNTIME_RANK_GROUPS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/error.h"
#include "runtime/comm/comm.h"
#include "runtime/comm/job_identity.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/ops.h"

namespace heiretsu::rank {

struct Groups {
  std::unique_ptr<comm::Communicator> axis[plan::kNumAxes];
  // Why an axis's group runs without shared memory although it asked (comm.h).
  std::string no_shm[plan::kNumAxes];
  // Why an axis's shared-memory group cannot use the members' arenas directly.
  std::string no_direct[plan::kNumAxes];
  comm::Communicator* get(int a) const { return axis[a].get(); }
};

// Connects every group of `rank` in `mesh` (nothing for a world of one) through the
// job's store, address and timeout (validated: comm/job_identity.h) and sets them
// on `executor`.
Status ConnectGroups(const plan::fb::Mesh& mesh, int rank, const comm::JobEnvironment& env,
                     exec::Executor* executor, Groups* out);

// Checks that every rank of the job resumed at the same step (each group agrees,
// and the groups connect all ranks). Fails (bad input) naming this rank's
// checkpoint and the step another rank chose.
Status AgreeOnStep(const Groups& groups, int64_t step, const std::string& dir);

// Whether every rank of the job succeeded at a phase, and a barrier of the whole
// job: each group in turn reduces the failure flags, so the last reduction covers
// every rank. Returns this rank's own error, or one naming `what` when only another
// rank failed. Nothing for a world of one (returns `mine`).
Status AgreeAcrossJob(const Groups& groups, const Status& mine, const std::string& what);

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_GROUPS_H_
