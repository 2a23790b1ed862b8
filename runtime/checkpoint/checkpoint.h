// Checkpoints of the training state (docs/architecture.md §3): every parameter's value and AdamW
// moments, stored as logical tensors by name with their global shape, so that any
// layout can load what any other layout saved.
//
// A checkpoint is a directory ROOT/step_NNNNNNNN (the step, at least 8 digits) holding
//  - one tensor file per writer: tensors.bin (writer 0; the only one when one process
//    writes, e.g. pp = 1) and tensors.W.bin for writer W > 0 (heiretsu-rank: writer W
//    is the leader of pipeline stage W). Each holds its writer's tensors as raw
//    little-endian float32, each starting at a multiple of 64 bytes of its file (zero
//    padding between them), in the order the manifest lists them; and
//  - manifest.txt: text, one item per line:
//        heiretsu-checkpoint 4
//        model NAME
//        step S                 optimizer steps done
//        data_position P        the step the next run starts at (S + 1)
//        seed N                 of parameter initialization and the data order
//        global_batch G         sequences per step
//        seq T                  tokens per sequence
//        tokenizer NAME         byte, gpt2 or none (the plan's model card)
//        lr X                   the run's learning-rate schedule (%.17g): peak,
//        min_lr X               floor,
//        warmup N               warmup steps and
//        total_steps N          the step it decays to min_lr at (--steps)
//        loss_scaling MODE      the loss scaler (exec/loss_scale.h): none, fixed or
//        loss_scale X           dynamic; its scale (a power of two), the clean steps
//        loss_scale_clean_steps N   since it changed and the overflows it skipped
//        loss_scale_overflows N
//        updates N              the AdamW updates applied (step minus the skipped
//                               steps: AdamW's bias correction counts these)
//        spec_file NAME         the model card's spec: its file name (- for none) and
//        spec_lines L           its text, L lines each written as "| " + the line
//        | ...
//        files F
//        file FILE BYTES fnv1a64w HEX                   (F lines: each tensor file, its
//                                                       size and checksum, see below)
//        tensors K
//        tensor NAME KIND f32 [D0,D1,...] FILE OFFSET LENGTH    (K lines; KIND is value,
//                                                   exp_avg or exp_avg_sq; FILE one of the
//                                                   files above, OFFSET within it)
//        manifest_checksum fnv1a64w HEX   of all the lines above it
// Both checksums are 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime
// 0x100000001b3) taken over 8-byte little-endian words rather than bytes, which is 8
// times faster and still changes with any change of one word; a last partial word is
// zero-padded (sizes are checked on their own). The manifest has its own so that a
// damaged offset or shape cannot make a checkpoint load the wrong bytes. A checkpoint
// with one writer has the layout of format 1 (tensors.bin byte for byte the same);
// format 3 manifests (without the loss_scale lines: scale 1, nothing counted) and
// format 2 ones (without the lines from tokenizer to the spec either) are read, format
// 1 ones are not.
//
// Saving (SaveCheckpoint for one process; PrepareCheckpoint, WriteTensorFile and
// CommitCheckpoint for several writers): the committer (the process that writes the
// manifest) checks its tensors, removes what dead writers left, creates the
// directory and removes an older manifest of the same step; then every writer writes
// its tensor file under a temporary name, syncs it and renames it; then, once every
// writer is done, the committer reads back and checksums the files it did not write
// and writes the manifest the same way: the manifest's rename commits the checkpoint.
// A crash at any point leaves no manifest, or an older one removed before any file
// changed, so never a loadable mix. A directory without manifest.txt, whose files do
// not match their sizes and checksums, or whose tensors hold a NaN or an infinity
// (checked as the checksum is), is never loaded; state that is not finite is never
// saved.
//
// Errors are returned, never printed, as data::DataError: kBadInput (a missing, corrupt
// or mismatched checkpoint: exit 2) or kFailure (the system failed a write: exit 1).
#ifndef HEIRETSU_RUNTIME_CHECKPOINT_CHECKPOINT_H_
#define HEIRETSU_RUNTIME_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/data/shards.h"
#include "runtime/exec/executor.h"

namespace heiretsu::checkpoint {

inline constexpr int kFormatVersion = 4;
inline constexpr char kManifestName[] = "manifest.txt";
inline constexpr char kTensorsName[] = "tensors.bin";

enum class TensorKind { kValue, kExpAvg, kExpAvgSq };

// "value", "exp_avg" or "exp_avg_sq", as the manifest spells them.
const char* TensorKindName(TensorKind kind);

// A shape as the manifest spells it: "[D0,D1,...]".
std::string ShapeText(const std::vector<int64_t>& shape);

// One logical tensor of the training state and the memory that holds it on this rank.
struct Tensor {
  std::string name;  // the parameter's logical name
  TensorKind kind;
  std::vector<int64_t> shape;  // global shape
  // numel(shape) floats. Null in a list given to LoadCheckpoint or ResumeNewest: a
  // tensor of the model that this process does not hold (checked, not read).
  float* data;
};

// The tensors a checkpoint of `executor`'s single-rank plan holds: for each parameter in
// plan order, its value, exp_avg and exp_avg_sq.
std::vector<Tensor> TrainingState(exec::Executor* executor);

// The same list for `plan` without an executor: every data pointer is null.
std::vector<Tensor> PlanState(const plan::fb::Plan& plan);

// What a checkpoint says about the run besides its tensors.
struct Header {
  std::string model;
  int64_t step = 0;  // optimizer steps done; the next run starts at step + 1
  uint64_t seed = 0;
  int64_t global_batch = 0;
  int64_t seq = 0;
  // The plan's model card (plan.fbs): what `heiretsu sample` and `export` compile
  // the model from. Empty when the plan or a format 2 checkpoint has none.
  std::string tokenizer;
  std::string spec;       // the spec's text, its lines ending in '\n'
  std::string spec_file;  // its file name
  // The learning-rate schedule that saved it (0 everywhere: format 2, not recorded).
  double lr = 0, min_lr = 0;
  int64_t warmup = 0, total_steps = 0;
  // The loss scaler's mode ("none", "fixed", "dynamic") and state
  // (exec::LossScaler; format 4, else none, 1, 0, 0).
  std::string loss_scaling = "none";
  double loss_scale = 1;
  int64_t loss_scale_clean_steps = 0, loss_scale_overflows = 0;
  // The AdamW updates applied (format 4; -1: not recorded, as many as steps).
  int64_t updates = -1;
};

// Reads the header of the checkpoint in `dir` (its manifest, checked; no tensor file
// is read): the model card and schedule that `sample`, `export` and a resume's notes
// use.
std::optional<data::DataError> ReadHeader(const std::string& dir, Header* header);

// "step_" and `step` in at least 8 digits.
std::string CheckpointDirName(int64_t step);
// The step a directory name says (CheckpointDirName's inverse), or -1 for any other.
int64_t StepOfName(const std::string& name);

// Writes the checkpoint of `header.step` under `root` (creating directories as needed)
// with one writer, this process, and sets `*dir` to its directory. A complete
// checkpoint of the same step already there is replaced; its manifest goes first, so a
// crash midway leaves it incomplete rather than mixed. Refuses (kFailure, before
// anything is written) when any tensor holds a NaN or an infinity: a checkpoint is
// never written from non-finite state.
std::optional<data::DataError> SaveCheckpoint(const std::string& root, const Header& header,
                                              const std::vector<Tensor>& tensors, std::string* dir);

// Saving with several writers, in the order of the format's description above; the
// caller orders the phases across processes (heiretsu-rank: barriers among the stage
// leaders) and every process must reach the same files (a shared file system).
//
// The name of writer `writer`'s tensor file: tensors.bin for 0, tensors.W.bin else.
std::string TensorFileName(int writer);

// What a writer wrote: the file's name in the checkpoint directory, size, checksum.
struct TensorFile {
  std::string name;
  int64_t bytes = 0;
  uint64_t checksum = 0;
};

// Whether `tensors` may be saved in the checkpoint of `header.step` under `root`:
// names a manifest can hold (kBadInput otherwise) and every value finite (kFailure,
// naming the tensor, the count and the first index). Every writer checks its own
// tensors before anything is written.
Status CheckSavable(const std::string& root, const Header& header,
                    const std::vector<Tensor>& tensors);

// The committer, before any writer starts: removes dead writers' temporaries under
// `root`, creates the step directory (`*dir`) and removes the manifest and the tensor
// files of an older checkpoint of the same step, so nothing of it can be loaded mixed
// with the new files.
Status PrepareCheckpoint(const std::string& root, const Header& header, std::string* dir);

// A writer: writes `tensors` (in this order, laid out as above) to `file` in `dir`
// (created by PrepareCheckpoint) through a temporary file that is synced and renamed,
// and sets `*written`. The tensors must have passed CheckSavable.
Status WriteTensorFile(const std::string& dir, const std::string& file,
                       const std::vector<Tensor>& tensors, TensorFile* written);

// One writer's part of a checkpoint, as the committer knows it: its file and its
// tensors in file order (their data is not read), and, when the committer wrote it
// itself, what WriteTensorFile said (else the file is read back).
struct Part {
  std::string file;
  std::vector<Tensor> tensors;
  std::optional<TensorFile> written;
};

// The committer, after every writer's WriteTensorFile returned: checks each file that
// `written` does not describe (its size must be what its tensors take; its checksum is
// computed and its values must be finite: kFailure otherwise, naming the file), then
// writes and renames the manifest listing every part, and syncs the directories. No
// tensor may be in two parts.
Status CommitCheckpoint(const std::string& root, const Header& header,
                        const std::vector<Part>& parts, std::string* dir);

// Removes what writers that died left under `root`: in every step_NNNNNNNN directory,
// the temporary files NAME.tmp.PID.N of processes that no longer exist, then the
// directory itself if that leaves it empty. SaveCheckpoint calls it before each save;
// files of live writers are never touched.
void RemoveStaleTemporaries(const std::string& root);

// Sets `*dir` to the newest complete checkpoint under `root` (its manifest parses, each
// of its tensor files has the size and checksum the manifest says, and holds only
// finite values); `root` may also be a
// checkpoint directory itself. Each newer one skipped (incomplete, corrupt) adds a line
// to `*warnings` saying why. Fails when `root` is unreadable or holds no complete one.
std::optional<data::DataError> FindLatestCheckpoint(const std::string& root, std::string* dir,
                                                    std::vector<std::string>* warnings);

// Whether the run can continue from checkpoint `dir` with `header` (the run's global
// batch and sequence length, say); nullopt: it can.
using AcceptCheckpoint = std::function<Status(const std::string& dir, const Header& header)>;

// Resume's one rule: loads into `tensors` the newest checkpoint under `root` that this
// run can resume, i.e. complete (its manifest is there), intact (the sizes and
// checksums of all its files, also those this process does not load, so that every
// process of a job decides alike),
// finite (no NaN or infinity), matching the plan (model, tensors and shapes, as
// LoadCheckpoint checks) and accepted by `accept` (may be empty). Every newer one is
// skipped, with a line in `*skipped` saying why; so damaged and mismatched checkpoints
// are treated alike: passed over for an older one. `root` may be one checkpoint
// (holding a manifest, or named step_NNNNNNNN): then it is the only candidate and its
// own error is returned. Sets `*dir` and `*header`; fails (kBadInput) when nothing
// under `root` can be resumed.
Status ResumeNewest(const std::string& root, const std::string& model,
                    const std::vector<Tensor>& tensors, const AcceptCheckpoint& accept,
                    std::string* dir, Header* header, std::vector<std::string>* skipped);

// Reads the checkpoint in `dir` into `tensors` and sets `*header`. `tensors` is the
// whole model's training state (heiretsu-rank: the union over every program of the
// plan directory); those with null data are checked but not read. Before reading any
// tensor it checks that the model is `model`, that the checkpoint holds exactly these
// tensors (by name and kind, in any order, from any number of files) with these
// shapes, and the sizes of the files it reads: those holding a tensor with data. Each
// of them is read whole and its checksum checked as the data streams in, so after a
// checksum error the tensors' contents are unspecified.
std::optional<data::DataError> LoadCheckpoint(const std::string& dir, const std::string& model,
                                              const std::vector<Tensor>& tensors, Header* header);

}  // namespace heiretsu::checkpoint

#endif  // HEIRETSU_RUNTIME_CHECKPOINT_CHECKPOINT_H_
