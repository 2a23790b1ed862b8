// Parameter layouts; see layout.h.
#include "runtime/plan/layout.h"

#include "runtime/plan/ops.h"

namespace heiretsu::plan {
int64_t Block::global_numel() const {
  int64_t n = 1;
  for (int64_t d : global) n *= d;
  return n;
}

int64_t Block::local_numel() const {
  int64_t n = 1;
  for (int64_t d : local) n *= d;
  return n;
}

std::optional<std::string> CheckSplits(const fb::Param& p, const fb::Mesh& mesh) {
  if (!p.splits()) return std::nullopt;
  const int rank = static_cast<int>(p.shape()->size());
  bool dim_used[64] = {}, axis_used[kNumAxes] = {};
  for (const fb::Split* s : *p.splits()) {
    const std::string what = "split of dimension " + std::to_string(s->dim()) + " over axis " +
                             std::to_string(s->axis());
    if (s->dim() < 0 || s->dim() >= rank || rank > 64)
      return what + ": the parameter has " + std::to_string(rank) + " dimensions";
    if (s->axis() < 0 || s->axis() > kAxisEp) return what + ": no such mesh axis";
    if (dim_used[s->dim()] || axis_used[s->axis()])
      return what + ": a dimension or axis is split twice";
    dim_used[s->dim()] = axis_used[s->axis()] = true;
    const int parts = AxisSize(mesh, s->axis());
    if (parts < 1 || p.shape()->Get(s->dim()) % parts != 0)
      return "dimension " + std::to_string(s->dim()) + " (" +
             std::to_string(p.shape()->Get(s->dim())) + ") does not split over " +
             AxisName(s->axis()) + " = " + std::to_string(parts);
  }
  return std::nullopt;
}

Block BlockOf(const fb::Param& p, const MeshCoordinates& coords) {
  Block b;
  b.global.assign(p.shape()->begin(), p.shape()->end());
  b.local = b.global;
  b.offset.assign(b.global.size(), 0);
  if (p.splits())
    for (const fb::Split* s : *p.splits()) {
      const int parts = coords.size[s->axis()];
      b.local[s->dim()] = b.global[s->dim()] / parts;
      b.offset[s->dim()] = b.local[s->dim()] * coords.coord[s->axis()];
    }
  return b;
}

void ForEachRun(const Block& block,
                const std::function<void(int64_t logical, int64_t local, int64_t n)>& run) {
  const int rank = static_cast<int>(block.global.size());
  // The run: the innermost dimensions from the last split one on.
  int last = -1;
  for (int d = 0; d < rank; ++d)
    if (block.local[d] != block.global[d]) last = d;
  if (last < 0) {
    run(0, 0, block.local_numel());
    return;
  }
  int64_t length = 1, inner = 1;  // inner: logical elements per index of `last`
  for (int d = last; d < rank; ++d) length *= block.local[d];
  for (int d = last + 1; d < rank; ++d) inner *= block.global[d];
  // Iterate over the local indices of dimensions [0, last), row-major.
  std::vector<int64_t> index(static_cast<size_t>(last), 0);
  int64_t local = 0;
  while (true) {
    int64_t logical = 0;
    for (int d = 0; d < last; ++d) logical = logical * block.global[d] + block.offset[d] + index[d];
    logical = (logical * block.global[last] + block.offset[last]) * inner;
    run(logical, local, length);
    local += length;
    int d = last - 1;
    for (; d >= 0; --d) {
      if (++index[d] < block.local[d]) break;
      index[d] = 0;
    }
    if (d < 0) break;
  }
}

}  // namespace heiretsu::plan
