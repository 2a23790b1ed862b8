// Logical tensors for checkpoints of a rank whose training state is split: a
// parameter's value and moments may be a block of the logical tensor (split over
// mesh axes: runtime/plan/layout.h) and its moments a ZeRO-1 dp shard of that
// block. For each such tensor a host copy of the logical tensor stands in the
// checkpoint's entry; Gather fills the copies from every rank's piece before a save
// (every rank takes part), Scatter cuts this rank's pieces out of them after a load.
//
// Who writes what (checkpoint.h, saving with several writers): writer s is the leader
// of pipeline stage s, its rank whose dp, tp and ep coordinates are 0 (after Gather it
// holds the logical tensors of its program); it writes TensorFileName(s) with the
// tensors of program s that no earlier stage's program holds, in plan order. For
// pp = 1 that is rank 0 alone. The stage leaders are exactly rank 0's pp group.
#ifndef HEIRETSU_RUNTIME_RANK_LOGICAL_STATE_H_
#define HEIRETSU_RUNTIME_RANK_LOGICAL_STATE_H_

#include <optional>
#include <string>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/layout.h"
#include "runtime/rank/groups.h"

namespace heiretsu::rank {

// Whether the rank at `coords` leads its pipeline stage (dp, tp and ep coordinates 0).
bool IsStageLeader(const plan::MeshCoordinates& coords);

// The checkpoint's parts, one per program of the plan directory (stage order), by
// the rule above; their tensors have null data. Fails (naming the tensor) when two
// programs hold a tensor with different shapes: not one model.
Status StageParts(const std::vector<plan::LoadedPlan>& programs,
                  std::vector<checkpoint::Part>* parts);

// The tensors of `part` as `state` (this rank's, with data) holds them, in the
// part's order: what its writer saves. Each must be in `state`.
std::vector<checkpoint::Tensor> PartState(const checkpoint::Part& part,
                                          const std::vector<checkpoint::Tensor>& state);

// The whole model's training state, what a checkpoint must hold exactly: every
// part's tensors, those of `state` with their data, the others with null data
// (checked, not loaded: checkpoint::LoadCheckpoint).
std::vector<checkpoint::Tensor> ModelState(const std::vector<checkpoint::Part>& parts,
                                           const std::vector<checkpoint::Tensor>& state);

class LogicalState {
 public:
  LogicalState(const plan::fb::Plan& plan, exec::Executor* executor, const Groups& groups);

  // Points the checkpoint entries of split tensors at the host copies.
  void Redirect(std::vector<checkpoint::Tensor>* state);
  Status Gather();
  void Scatter();

 private:
  struct Entry {
    const plan::fb::Param* param;
    plan::Block block;         // this rank's block of the logical tensor
    bool split, dp_shard;      // value a block; moments a ZeRO-1 shard of it
    std::vector<float> value, m, v;  // logical tensors
  };

  Status GatherOne(const Entry& e, const float* local, bool dp_shard,
                                       std::vector<float>* logical);
  void ScatterOne(const Entry& e, const std::vector<float>& logical, bool dp_shard, float* local);

  exec::Executor* executor_;
  const Groups& groups_;
  std::vector<Entry> entries_;
};

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_LOGICAL_STATE_H_
