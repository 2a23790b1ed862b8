// Connecting a rank's groups; see groups.h.
#include "runtime/rank/groups.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/plan/plan.h"

namespace heiretsu::rank {

Status ConnectGroups(const plan::fb::Mesh& mesh, int rank, exec::Executor* executor, Groups* out) {
  if (plan::WorldSize(mesh) == 1) return std::nullopt;
  const char* store = std::getenv("HEIRETSU_STORE");
  if (!store || !*store)
    return Error::BadInput(
        "a multi-rank run needs HEIRETSU_STORE, a directory shared by the ranks for "
        "rendezvous ('heiretsu run' sets it)");
  const plan::MeshCoordinates coords = plan::CoordinatesOf(mesh, rank);
  for (int axis : {plan::kAxisDp, plan::kAxisPp, plan::kAxisTp, plan::kAxisEp}) {
    if (coords.size[axis] == 1) continue;
    const std::vector<int> members = plan::GroupOf(mesh, rank, axis);
    comm::GlooOptions g;
    g.store_dir = store;
    // Named by axis and first member: unique within the job.
    g.group = std::string(plan::AxisName(axis)) + "." + std::to_string(members[0]);
    g.rank = coords.coord[axis];
    g.size = coords.size[axis];
    // The address this rank listens on: loopback unless the job spans machines.
    if (const char* addr = std::getenv("HEIRETSU_ADDR"); addr && *addr) g.hostname = addr;
    if (const char* t = std::getenv("HEIRETSU_COMM_TIMEOUT_MS"))
      g.timeout = std::chrono::milliseconds(std::max(1L, std::atol(t)));
    std::string error;
    out->axis[axis] = comm::ConnectGloo(g, &error);
    if (!out->axis[axis]) return Error::Failure(error);
    executor->set_communicator(axis, out->axis[axis].get());
  }
  return std::nullopt;
}

}  // namespace heiretsu::rank
