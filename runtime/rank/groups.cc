// Connecting a rank's groups; see groups.h.
#include "runtime/rank/groups.h"

#include <string>
#include <vector>

#include "runtime/plan/plan.h"

namespace heiretsu::rank {

Status ConnectGroups(const plan::fb::Mesh& mesh, int rank, const comm::JobEnvironment& env,
                     exec::Executor* executor, Groups* out) {
  if (plan::WorldSize(mesh) == 1) return std::nullopt;
  const plan::MeshCoordinates coords = plan::CoordinatesOf(mesh, rank);
  for (int axis : {plan::kAxisDp, plan::kAxisPp, plan::kAxisTp, plan::kAxisEp, plan::kAxisData}) {
    if (coords.size[axis] == 1) continue;
    // The data ranks are a group of their own only when they span two axes.
    if (axis == plan::kAxisData && (coords.size[plan::kAxisDp] == 1 || coords.size[plan::kAxisEp] == 1))
      continue;
    const std::vector<int> members = plan::GroupOf(mesh, rank, axis);
    comm::GroupOptions g;
    g.store_dir = env.store;
    // Named by axis and first member: unique within the job.
    g.group = std::string(plan::AxisName(axis)) + "." + std::to_string(members[0]);
    g.rank = coords.coord[axis];
    g.size = coords.size[axis];
    // The address this rank listens on: loopback unless the job spans machines.
    g.hostname = env.address;
    g.timeout = env.timeout;
    g.job_ranks = members;  // messages name a peer by its job rank too
    g.shared_memory = env.shared_memory;
    if (auto err = comm::ConnectGroup(g, &out->axis[axis], &out->no_shm[axis])) return err;
    executor->set_communicator(axis, out->axis[axis].get());
    if (auto err = executor->ShareArena(*out->axis[axis], &out->no_direct[axis])) return err;
  }
  return std::nullopt;
}

Status AgreeOnStep(const Groups& groups, int64_t step, const std::string& dir) {
  for (int axis = 0; axis < plan::kNumAxes; ++axis) {
    comm::Communicator* c = groups.get(axis);
    if (!c) continue;
    // The largest and (negated) smallest step of the group; exact below 2^24 steps.
    float most[2] = {static_cast<float>(step), -static_cast<float>(step)};
    if (auto err = c->AllReduce(most, 2, comm::ReduceOp::kMax)) return err;
    if (most[0] != static_cast<float>(step) || -most[1] != static_cast<float>(step))
      return Error::BadInput(
          "this rank resumed " + dir + " (step " + std::to_string(step) + ") but a rank of its " +
          plan::AxisName(axis) + " group resumed step " +
          std::to_string(static_cast<int64_t>(most[0] != static_cast<float>(step) ? most[0]
                                                                                  : -most[1])) +
          ": every rank must see the same checkpoint directory");
  }
  return std::nullopt;
}

Status AgreeAcrossJob(const Groups& groups, const Status& mine, const std::string& what) {
  float failed = mine ? 1.f : 0.f;
  for (int axis = 0; axis < plan::kNumAxes; ++axis)
    if (comm::Communicator* c = groups.get(axis))
      if (auto err = c->AllReduce(&failed, 1, comm::ReduceOp::kMax)) return err->Within(what);
  if (mine) return mine;
  if (failed > 0) return Error::Failure(what + ": another rank failed (it says why)");
  return std::nullopt;
}

}  // namespace heiretsu::rank
