// Which rows of the global batch a rank trains on (docs/architecture.md, "Parity"):
// the data ranks are dp x ep (expert parallelism is a data axis too); data rank
// d = dp_coord * ep + ep_coord takes rows [d B M, (d + 1) B M) of the global batch,
// microbatch m of them rows [d B M + m B, d B M + (m + 1) B). The tp ranks of one
// data rank, and every pipeline stage, take the same rows. So the same global
// batch trains the same model on any layout.
#ifndef HEIRETSU_RUNTIME_RANK_DATA_ROWS_H_
#define HEIRETSU_RUNTIME_RANK_DATA_ROWS_H_

#include <cstdint>

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::rank {

struct DataRows {
  int64_t micro_batch = 1;   // B
  int64_t microbatches = 1;  // M
  int64_t data_rank = 0;     // d
  int64_t data_ranks = 1;    // dp x ep

  DataRows(const plan::fb::Plan& p, const plan::MeshCoordinates& c)
      : micro_batch(p.micro_batch_size()),
        microbatches(p.microbatches()),
        data_rank(int64_t{c.coord[plan::kAxisDp]} * c.size[plan::kAxisEp] + c.coord[plan::kAxisEp]),
        data_ranks(int64_t{c.size[plan::kAxisDp]} * c.size[plan::kAxisEp]) {}

  // Sequences per optimizer step over the whole job: G = B x M x dp x ep.
  int64_t global_batch() const { return micro_batch * microbatches * data_ranks; }
  // The first row of microbatch `m` of this rank.
  int64_t FirstRow(int64_t m) const {
    return data_rank * micro_batch * microbatches + m * micro_batch;
  }
};

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_DATA_ROWS_H_
