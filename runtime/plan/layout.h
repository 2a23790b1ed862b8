// The one mapping between a parameter's logical tensor and a rank's local block of
// it (plan.fbs: Param.splits). Dimension `dim` of the logical shape, split over mesh
// axis `axis`, is cut into size(axis) contiguous blocks; the rank at coordinate i on
// that axis holds block i. Every user of split parameters goes through here:
// initialization (values from their logical indices), checkpoint gather and
// scatter, the verifier and `heiretsu explain`.
#ifndef HEIRETSU_RUNTIME_PLAN_LAYOUT_H_
#define HEIRETSU_RUNTIME_PLAN_LAYOUT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan/plan.h"

namespace heiretsu::plan {

struct Block {
  std::vector<int64_t> global;  // the logical shape
  std::vector<int64_t> local;   // this rank's block's shape
  std::vector<int64_t> offset;  // where the block starts, per dimension
  int64_t global_numel() const;
  int64_t local_numel() const;
  bool whole() const { return global == local; }
};

// Checks `p`'s splits against its shape and `mesh` (dimensions and axes in range,
// each used once, the dimension divisible by the axis' size); the message says
// what is wrong.
std::optional<std::string> CheckSplits(const fb::Param& p, const fb::Mesh& mesh);

// The block of `p` that the rank at `coords` holds (the splits must be valid).
Block BlockOf(const fb::Param& p, const MeshCoordinates& coords);

// Calls run(logical_begin, local_begin, length) for the block's contiguous runs,
// in local order (flattened, row-major indices).
void ForEachRun(const Block& block,
                const std::function<void(int64_t logical, int64_t local, int64_t n)>& run);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_LAYOUT_H_
