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

#include "runtime/base/error.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan_generated.h"

namespace heiretsu::plan {

// Bumped whenever plan.fbs changes meaning.
inline constexpr uint32_t kPlanVersion = 8;

// Most microbatches per step a plan may ask for: the bound keeps a corrupt count
// from turning one step into an endless loop.
inline constexpr int64_t kMaxMicrobatches = 65536;

// The value of model-card fact `key` (Plan.config: a hyperparameter such as "heads",
// or an architecture fact such as "norm"; docs/language.md), or nullopt when the
// plan has none of that name.
std::optional<std::string> ConfigValue(const fb::Plan& plan, const std::string& key);

// File name of a plan directory's decode program (docs/architecture.md, "Sampling"):
// one rank's forward with KV caches, which `heiretsu sample` and `run --sample-every`
// run.
inline constexpr char kDecodeFileName[] = "decode.hplan";

// File name of the program of pipeline stage `stage` inside a plan directory.
std::string ProgramFileName(int stage);

// One entry of a program's schedule with what it runs. `first`: this is the unit's
// first run of the step (it may write gradients instead of adding to them:
// Instruction::overwrite_weight_grads); `last`: its last (its bucket instructions
// run then: IsBucket).
struct ScheduledRun {
  const fb::Run* run;
  const fb::Unit* unit;
  bool first;
  bool last;
};
// The schedule of a verified program, in order: what the executor runs in one
// optimizer step and what the collective check and explain count.
std::vector<ScheduledRun> ScheduleOf(const fb::Plan& plan);

// Whether `op` is a gradient bucket's collective (bucket_all_reduce,
// bucket_reduce_scatter): it runs once per step, in its unit's last run, in the
// background, and is complete before the next unit that is not a microbatch's.
inline bool IsBucket(fb::Op op) {
  return op == fb::Op_BucketAllReduce || op == fb::Op_BucketReduceScatter;
}

// Whether units of `kind` run once per microbatch (forward and backward kinds) rather
// than once per step (comm, update).
bool PerMicrobatch(fb::UnitKind kind);

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

// Reads `path` and verifies it. Fails (bad input) with a message naming the file.
Status LoadPlan(const std::string& path, LoadedPlan* out);

// Loads every program of a plan directory (program-0.hplan .. program-(P-1).hplan,
// P = the plans' `programs`) and checks they belong together: the same model,
// mesh, batch geometry and vocabulary, program S at stage S. `out` is indexed by
// stage. Fails (bad input) with a message naming the file (or the directory).
Status LoadPlanDirectory(const std::string& dir, std::vector<LoadedPlan>* out);

// Whether a program has this input or output (plan.fbs: tokens, targets, loss).
inline bool Has(uint32_t buffer) { return buffer != kNoBuffer; }

// The verification alone, for a plan file's bytes (the trailer included) in memory.
Status VerifyPlan(const std::string& path, const std::vector<uint8_t>& bytes);

// A rank's coordinate on each mesh axis (indexed by MeshAxis: dp, pp, tp, ep) and
// the size of each axis, by the rule of plan.fbs: tp fastest, then ep, dp, pp.
struct MeshCoordinates {
  int coord[kNumAxes] = {0, 0, 0, 0, 0};
  int size[kNumAxes] = {1, 1, 1, 1, 1};
};
MeshCoordinates CoordinatesOf(const fb::Mesh& mesh, int rank);
// The global rank at `c` (the inverse of CoordinatesOf).
int RankAt(const MeshCoordinates& c);
// The ranks of `rank`'s group over `axis` (those sharing its other coordinates; for
// kAxisData its pp and tp), in axis order, so a rank's place in its group is its
// coordinate on the axis.
std::vector<int> GroupOf(const fb::Mesh& mesh, int rank, int axis);
// The size of the group over `axis` (kAxisData: dp x ep).
int AxisSize(const fb::Mesh& mesh, int64_t axis);


// The coordinates of a plan's rank: the mesh as plan.fbs states it.
inline MeshCoordinates CoordinatesOf(const fb::Plan& plan, int rank) {
  return CoordinatesOf(*plan.mesh(), rank);
}
// Number of ranks of the mesh.
int64_t WorldSize(const fb::Mesh& mesh);

// Bytes per element of `dtype`.
int64_t DTypeSize(fb::DType dtype);
// "f32", "i32", "bf16" or "f16" (the MLIR element types' spelling), "?" otherwise.
const char* DTypeName(fb::DType dtype);

// Whether `dtype` is a 16-bit float (BF16, F16): storage a backend widens to float32
// for the instructions it runs (backend.h).
inline bool IsHalf(fb::DType dtype) { return dtype == fb::DType_BF16 || dtype == fb::DType_F16; }

// The precision a plan was compiled for (heiretsu compile --precision), read from
// its buffers, which are the fact: "fp16" when one is F16, "bf16" when one is BF16,
// else "fp32".
const char* StoragePrecision(const fb::Plan& plan);

// Number of elements of a buffer (product of its shape), or -1 if that overflows.
int64_t NumElements(const fb::Buffer& buffer);

// The arena offset of every buffer of a verified plan as activation slot `slot`
// (< plan.slots()) sees it, indexed like plan.buffers(): a slotted buffer's copy
// `slot`, offset + slot * slot_bytes (plan.fbs); every other buffer's one copy.
std::vector<uint64_t> SlotOffsets(const fb::Plan& plan, uint32_t slot);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_PLAN_H_
