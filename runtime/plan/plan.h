// Loading and verifying plan files. A plan that is truncated, corrupted, of another
// version or inconsistent (a buffer outside the arena, an instruction whose buffers
// do not match its opcode's signature) is refused with a message naming the file
// and what is wrong, before anything runs.
#ifndef HEIRETSU_RUNTIME_PLAN_PLAN_H_
#define HEIRETSU_RUNTIME_PLAN_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan/plan_generated.h"

namespace heiretsu::plan {

// Bumped whenever plan.fbs changes meaning.
inline constexpr uint32_t kPlanVersion = 3;

// Most microbatches per step a plan may ask for: the bound keeps a corrupt count
// from turning one step into an endless loop.
inline constexpr int64_t kMaxMicrobatches = 65536;

// File name of rank program `program` inside a plan directory.
std::string ProgramFileName(int program);

// A plan file is a size-prefixed FlatBuffer (FinishSizePrefixedPlanBuffer), so a
// truncated file is recognized as such, followed by an 8-byte trailer: the 64-bit
// FNV-1a hash (offset basis 0xcbf29ce484222325, prime 0x100000001b3, over bytes),
// little-endian, of every byte before it. FNV-1a changes with any change of one byte,
// so every single-byte corruption is refused before the contents are believed.
inline constexpr size_t kPlanTrailerBytes = 8;
struct LoadedPlan {
  std::string path;
  std::vector<uint8_t> bytes;  // owns the buffer `plan` points into
  const fb::Plan* plan = nullptr;
};

// The 64-bit FNV-1a hash of `size` bytes (the plan trailer's checksum; also the
// plan's fingerprint at rendezvous).
uint64_t Fnv1a64(const uint8_t* data, size_t size);

// Appends the trailer to a finished size-prefixed FlatBuffer: what a plan writer does
// last (the compiler's emitter, tests that build plans).
void SealPlan(std::vector<uint8_t>* bytes);

// Reads `path` and verifies it. On failure returns the message (naming the file).
std::optional<std::string> LoadPlan(const std::string& path, LoadedPlan* out);

// The verification alone, for a plan file's bytes (the trailer included) in memory.
std::optional<std::string> VerifyPlan(const std::string& path, const std::vector<uint8_t>& bytes);

// A rank's coordinate on each mesh axis (indexed by MeshAxis: dp, pp, tp, ep) and
// the size of each axis, by the rule of plan.fbs: tp fastest, then ep, dp, pp.
struct MeshCoordinates {
  int coord[4] = {0, 0, 0, 0};
  int size[4] = {1, 1, 1, 1};
};
MeshCoordinates CoordinatesOf(const fb::Mesh& mesh, int rank);
// The global rank at `c` (the inverse of CoordinatesOf).
int RankAt(const MeshCoordinates& c);
// The ranks of `rank`'s group over `axis` (those sharing its other coordinates), in
// axis order, so a rank's place in its group is its coordinate on the axis.
std::vector<int> GroupOf(const fb::Mesh& mesh, int rank, int axis);

// Where a rank's tensor-parallel block of parameter `p` (block `coord` of `parts`
// along p.tp_dim) lies in the flattened logical tensor: `outer` runs of `run`
// elements, run o starting at (o * parts + coord) * run. A parameter without
// tp_dim is one run of all its elements.
struct TpBlock {
  int64_t outer = 1, run = 1;
  int64_t Begin(int64_t o, int64_t coord, int64_t parts) const { return (o * parts + coord) * run; }
};
TpBlock TpBlockOf(const fb::Param& p, int parts);

// Bytes per element of `dtype`.
int64_t DTypeSize(fb::DType dtype);

// Number of elements of a buffer (product of its shape), or -1 if that overflows.
int64_t NumElements(const fb::Buffer& buffer);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_PLAN_H_
