// heiretsu-rank: the per-rank runtime worker (docs/architecture.md §1). It loads the
// programs of a plan directory and runs the one of its pipeline stage, with the
// data and optionally a checkpoint: one optimizer step per step number, a JSON
// metrics line per step, a human progress line per log interval, checkpoints on
// request.
//
// A plan for several ranks runs as one such worker per rank (started by `heiretsu run`,
// mpirun, srun or torchrun): the ranks agree on the job (comm/job_identity.h), then
// connect one Gloo group per mesh axis (rank/groups.h); each data rank trains on its
// rows of the global batch (rank/data_rows.h); rank 0 alone logs. A checkpoint is
// written by the owners of its tensors: the leader of each pipeline stage writes its
// stage's tensors, rank 0 commits the manifest (SaveStage below).
//
// Bit-identical resumption (docs/architecture.md §3) rests on three facts kept here:
// the data of step s depends only on (dataset, seed, s), the learning rate only on s
// and the flags, and all other training state (parameters and AdamW moments) is in the
// checkpoint; gradients and activations are recomputed from scratch every step.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/base/env.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/cli/RunOptions.h"
#include "runtime/comm/comm.h"
#include "runtime/comm/job_identity.h"
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/threading.h"
#ifdef HEIRETSU_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/device_memory.h"
#endif
#include "runtime/data/prepare.h"
#include "runtime/data/shards.h"
#include "runtime/exec/executor.h"
#include "runtime/exec/loss_scale.h"
#include "runtime/exec/nonfinite.h"
#include "runtime/exec/trace.h"
#include "runtime/launch/launcher.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"
#include "runtime/rank/data_rows.h"
#include "runtime/rank/groups.h"
#include "runtime/rank/logical_state.h"
#include "runtime/rank/metrics.h"
#include "runtime/rank/sample.h"

namespace heiretsu {
namespace {

// The validation batches' sampler seed: fixed, so every evaluation and every run
// (whatever --seed) measures the same batches.
constexpr uint64_t kValSeed = 0x76616c;

// The one place where an error becomes a message and an exit code.
int Fail(const Error& err) {
  std::fprintf(stderr, "heiretsu-rank: %s\n", err.message.c_str());
  return err.exit_code();
}

// heiretsu's cache: --cache-dir, else data::DefaultCacheDir().
std::optional<std::string> CacheRoot(const cli::RunOptions& o) {
  if (!o.cache_dir.empty()) return o.cache_dir;
  std::string dir = data::DefaultCacheDir();
  if (dir.empty()) return std::nullopt;
  return dir;
}

// llm.c's convention: a shard whose file name has "_val_" in it is validation data.
bool IsValShard(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return path.find("_val_", slash == std::string::npos ? 0 : slash + 1) != std::string::npos;
}

// The part of the default corpus held out for validation: its stream's last tenth.
constexpr int64_t kCorpusValDivisor = 10;

// The dataset of --data, or the default corpus (byte-tokenized, so only for a
// vocabulary of at least 256), with a line saying which. A --data directory's
// *_val_* shards are not trained on: they go to `val_files`; the default corpus's last
// tenth is not trained on either: it goes to `corpus_val`.
int LoadData(const cli::RunOptions& o, int64_t vocab, bool verbose, data::Dataset* dataset,
             std::vector<std::string>* val_files, data::Dataset* corpus_val) {
  std::vector<std::string> files;
  if (!o.data.empty()) {
    std::vector<std::string> listed;
    if (auto err = data::ListShardFiles(o.data, &listed)) return Fail(*err);
    // A shard given by its own path is trained on, whatever its name.
    const bool directory = !(listed.size() == 1 && listed[0] == o.data);
    for (const std::string& f : listed)
      (directory && IsValShard(f) ? *val_files : files).push_back(f);
    if (files.empty())
      return Fail(Error::BadInput(o.data + ": every shard is a validation shard (*_val_*): "
                                  "nothing to train on"));
    if (verbose && !val_files->empty())
      std::printf("data: %zu validation shard%s (*_val_*) in %s held out from training%s\n",
                  val_files->size(), val_files->size() == 1 ? "" : "s", o.data.c_str(),
                  o.val_data.empty() && o.val_every > 0 ? ", used for the validation loss"
                                                        : "");
  } else {
    if (vocab < data::kByteVocab)
      return Fail(Error::BadInput("the default corpus is byte-tokenized (256 token ids), but the plan's "
                  "vocabulary has " +
                      std::to_string(vocab) + ": give token shards with --data PATH"));
    std::optional<std::string> root = CacheRoot(o);
    if (!root)
      return Fail(Error::BadInput("neither HOME nor XDG_CACHE_HOME is set: give --cache-dir DIR or --data PATH"));
    const std::string dir = *root + "/corpus-byte";
    data::PrepareSummary summary;
    if (auto err = data::EnsureDefaultCorpus(dir, &summary)) return Fail(*err);
    if (verbose)
      std::printf("data: default corpus (%lld licence texts, byte-tokenized), %s %s\n",
                  static_cast<long long>(summary.files),
                  summary.reused ? "cached in" : "prepared in", dir.c_str());
    if (auto err = data::LoadDataset(summary.shards, vocab, dataset)) return Fail(*err);
    const int64_t held = dataset->num_tokens() / kCorpusValDivisor;
    const std::string name = dataset->Describe();
    dataset->SplitTail(held, name + " (the first " + std::to_string(dataset->num_tokens() - held) +
                                 " tokens)",
                       name + " (the last " + std::to_string(held) + ")", corpus_val);
    if (verbose)
      std::printf("data: the default corpus's last %lld tokens (a tenth) held out from training%s\n",
                  static_cast<long long>(held),
                  o.val_data.empty() && o.val_every > 0 ? ", used for the validation loss"
                                                        : "");
  }
  if (!o.data.empty())  // (the default corpus is loaded above)
    if (auto err = data::LoadDataset(files, vocab, dataset)) return Fail(*err);
  if (verbose)
    std::printf("data: %s: %lld tokens\n", dataset->Describe().c_str(),
                static_cast<long long>(dataset->num_tokens()));
  return 0;
}

// What every rank of a job must agree on (comm::AgreeOnJob): the plan, by a hash of
// its programs' bytes and the values a message should name, and the run flags that shape the
// training or the collectives (the save steps gather on every rank).
comm::JobIdentity JobIdentityOf(const std::vector<plan::LoadedPlan>& programs,
                                const cli::RunOptions& o, const data::Dataset& dataset) {
  const plan::fb::Plan& p = *programs[0].plan;
  // Of every program of the directory, so the ranks of every stage agree: each file's
  // trailer already is the checksum of all of it (plan.h).
  std::vector<uint8_t> trailers;
  for (const plan::LoadedPlan& program : programs)
    trailers.insert(trailers.end(), program.bytes.end() - plan::kPlanTrailerBytes,
                    program.bytes.end());
  char hash[24], lr[96];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(plan::Fnv1a64(trailers.data(), trailers.size())));
  std::snprintf(lr, sizeof lr, "%.9g..%.9g warmup %lld decay %.9g clip %.9g", o.lr, o.min_lr,
                static_cast<long long>(o.warmup), o.weight_decay, o.grad_clip);
  const plan::fb::Mesh& m = *p.mesh();
  char data_hash[24];
  std::snprintf(data_hash, sizeof data_hash, "%016llx",
                static_cast<unsigned long long>(dataset.Fingerprint()));
  return {
      {"plan", std::string("fingerprint ") + hash},
      {"model", "'" + (p.model() ? p.model()->str() : std::string()) + "'"},
      {"mesh", "dp " + std::to_string(m.dp()) + " tp " + std::to_string(m.tp()) + " pp " +
                   std::to_string(m.pp()) + " ep " + std::to_string(m.ep())},
      {"micro-batch", std::to_string(p.micro_batch_size()) + " x " +
                          std::to_string(p.microbatches()) + " microbatches"},
      {"seq", std::to_string(p.seq())},
      {"--seed", std::to_string(o.seed)},
      {"--steps", std::to_string(o.steps)},
      {"learning rate", lr},
      {"data", std::to_string(dataset.num_tokens()) + " tokens in " +
                   std::to_string(dataset.names().size()) + " shard(s), fingerprint " + data_hash},
      {"checkpoints", o.save_dir.empty() ? "none" : "every " + std::to_string(o.save_every)},
      // Validation runs forwards and collectives on every rank: all or none.
      {"validation", o.val_every == 0 ? "off"
                                      : "every " + std::to_string(o.val_every) + ", " +
                                            std::to_string(o.val_batches) + " batches of " +
                                            (o.val_data.empty() ? "the *_val_* shards" : o.val_data)},
      {"--resume", o.resume.empty() ? "no" : "yes"},
      {"--on-nonfinite", o.on_nonfinite + " (" + std::to_string(o.max_consecutive_skips) + ")"},
      // Tracing adds a barrier and an agreement: every rank traces, or none.
      {"--trace", o.trace.empty() ? "off"
                  : o.trace + (o.trace_first == 0 ? std::string(", default steps")
                                                  : ", steps " + std::to_string(o.trace_first) +
                                                        ":" + std::to_string(o.trace_last))},
  };
}

// The trace (exec/trace.h): each rank writes FILE.rank-R, rank 0 merges them into
// FILE.
std::string TraceFileOf(const std::string& trace, int rank) {
  return trace + ".rank-" + std::to_string(rank);
}

// Before anything slow runs: this rank can create its file, and rank 0 can replace
// FILE (beside it, so the directory is the same).
Status CheckTracePath(const std::string& trace, int rank, bool leader) {
  const std::string mine = TraceFileOf(trace, rank);
  FILE* f = std::fopen(mine.c_str(), "w");
  if (!f)
    return Error::BadInput("--trace " + trace + ": cannot write " + mine + ": " +
                           std::strerror(errno));
  std::fclose(f);
  std::remove(mine.c_str());
  struct stat st;
  if (leader && ::stat(trace.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Error::BadInput("--trace " + trace + ": is a directory");
    if (::access(trace.c_str(), W_OK) != 0)
      return Error::BadInput("--trace " + trace + ": cannot write it: " + std::strerror(errno));
  }
  return std::nullopt;
}

// The name of rank `rank`'s process in the trace.
std::string TraceProcessName(const plan::fb::Mesh& mesh, int rank) {
  const plan::MeshCoordinates c = plan::CoordinatesOf(mesh, rank);
  std::string name = "rank " + std::to_string(rank) + " (stage " +
                     std::to_string(c.coord[plan::kAxisPp]) + ", dp " +
                     std::to_string(c.coord[plan::kAxisDp]) + ", tp " +
                     std::to_string(c.coord[plan::kAxisTp]);
  if (mesh.ep() > 1) name += ", ep " + std::to_string(c.coord[plan::kAxisEp]);
  return name + ")";
}

// After the last traced step: every rank writes its file; once all have (an
// agreement of the whole job), rank 0 merges them into the trace, removes them and
// prints the measured bubble per stage (the mean over its ranks and the steps).
// Files rank 0 cannot read (ranks on other machines without a shared file system)
// stay where they are, each a trace of its own.
Status FinishTrace(const cli::RunOptions& o, const plan::fb::Mesh& mesh, int rank,
                   const exec::Tracer& tracer, const rank::Groups& groups, int64_t first,
                   int64_t last) {
  const plan::MeshCoordinates coords = plan::CoordinatesOf(mesh, rank);
  const exec::TraceProcess process{rank, coords.coord[plan::kAxisPp],
                                   TraceProcessName(mesh, rank)};
  Status wrote = exec::WriteTraceFile(TraceFileOf(o.trace, rank), process, tracer.Events());
  if (auto err = rank::AgreeAcrossJob(groups, wrote, "writing the trace " + o.trace)) return err;
  if (rank != 0) return std::nullopt;
  const int world = static_cast<int>(plan::WorldSize(mesh));
  std::vector<std::string> files;
  for (int r = 0; r < world; ++r) files.push_back(TraceFileOf(o.trace, r));
  std::vector<std::vector<double>> bubbles;
  if (auto err = exec::MergeTraceFiles(files, o.trace, &bubbles)) {
    std::fprintf(stderr, "heiretsu-rank: warning: %s; the ranks' traces stay in %s.rank-R\n",
                 err->message.c_str(), o.trace.c_str());
    return std::nullopt;
  }
  for (const std::string& f : files) std::remove(f.c_str());
  std::vector<double> sum(static_cast<size_t>(mesh.pp()), 0.0);
  std::vector<int> count(sum.size(), 0);
  for (int r = 0; r < world; ++r)
    for (double b : bubbles[static_cast<size_t>(r)]) {
      const size_t stage = static_cast<size_t>(plan::CoordinatesOf(mesh, r).coord[plan::kAxisPp]);
      sum[stage] += b;
      ++count[stage];
    }
  std::string per_stage;
  double mean = 0;
  for (size_t s = 0; s < sum.size(); ++s) {
    const double b = count[s] > 0 ? sum[s] / count[s] : std::nan("");
    char text[32];
    std::snprintf(text, sizeof text, "%s%.2f", s == 0 ? "" : " ", b);
    per_stage += text;
    mean += b / static_cast<double>(sum.size());
  }
  const std::string steps = first == last ? "step " + std::to_string(first)
                                          : "steps " + std::to_string(first) + "-" +
                                                std::to_string(last);
  std::printf("trace: %s (%d rank%s, %s); measured bubble per stage: %s; mean %.2f\n",
              o.trace.c_str(), world, world == 1 ? "" : "s", steps.c_str(), per_stage.c_str(),
              mean);
  return std::nullopt;
}

// Whether every member of `group` succeeded at a phase (also a barrier): each gives
// its own outcome; on failure a member returns its own error, or one naming `what`
// when only another member failed.
Status Agree(comm::Communicator* group, const Status& mine, const std::string& what) {
  float failed = mine ? 1.f : 0.f;
  if (auto err = group->AllReduce(&failed, 1, comm::ReduceOp::kMax)) return err->Within(what);
  if (mine) return mine;
  if (failed > 0)
    return Error::Failure(what + ": another pipeline stage's leader failed (it says why)");
  return std::nullopt;
}

// The save of one checkpoint by the leader of pipeline stage `stage` (checkpoint.h's
// protocol for several writers; the stage leaders are `pp`, rank 0's pp group, null
// for one stage): all check their tensors; rank 0 prepares the directory; each writes
// its stage's file; once all are written (a barrier), rank 0 reads back the others'
// files and commits the manifest. Each phase ends with every leader agreeing that it
// succeeded, so a refusal anywhere (a non-finite stage) writes nothing and stops all.
Status SaveStage(const std::string& root, const checkpoint::Header& header,
                 const std::vector<checkpoint::Part>& parts, int stage,
                 const std::vector<checkpoint::Tensor>& state, comm::Communicator* pp,
                 std::string* dir) {
  const std::vector<checkpoint::Tensor> mine = rank::PartState(parts[stage], state);
  if (!pp) return checkpoint::SaveCheckpoint(root, header, mine, dir);
  *dir = root + "/" + checkpoint::CheckpointDirName(header.step);
  const std::string what = "not saving checkpoint " + *dir;
  if (auto err = Agree(pp, checkpoint::CheckSavable(root, header, mine), what)) return err;
  Status prepared = stage == 0 ? checkpoint::PrepareCheckpoint(root, header, dir) : std::nullopt;
  if (auto err = Agree(pp, prepared, what)) return err;
  checkpoint::TensorFile written;
  Status wrote =
      checkpoint::WriteTensorFile(*dir, checkpoint::TensorFileName(stage), mine, &written);
  if (auto err = Agree(pp, wrote, what)) return err;
  if (stage != 0) return std::nullopt;
  std::vector<checkpoint::Part> all = parts;
  all[0].written = written;
  return checkpoint::CommitCheckpoint(root, header, all, dir);
}

// Whether --resume `root` holds no checkpoint yet, so that the run starts at step 0
// (the requeue pattern `--save-dir ck --resume ck`): `root` does not exist, or is a
// directory with neither a manifest nor a step_NNNNNNNN directory in it (whatever
// else it holds: a metrics file, say). `*why` says which. A root named step_NNNNNNNN
// is one checkpoint, asked for by name: never "none yet". Anything else (checkpoints
// that cannot be resumed, a root that is a file or unreadable) is left to
// checkpoint::ResumeNewest to refuse.
bool NoCheckpointYet(const std::string& root, std::string* why) {
  auto is_step_name = [](const std::string& name) { return checkpoint::StepOfName(name) >= 0; };
  std::string base = root;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  if (is_step_name(base.substr(base.find_last_of('/') + 1))) return false;
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) {
    if (errno != ENOENT) return false;
    *why = "it does not exist yet";
    return true;
  }
  if (!S_ISDIR(st.st_mode)) return false;
  if (::stat((root + "/" + checkpoint::kManifestName).c_str(), &st) == 0) return false;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(root.c_str()), &::closedir);
  if (!dir) return false;
  while (const dirent* e = ::readdir(dir.get())) {
    if (!is_step_name(e->d_name)) continue;
    if (::stat((root + "/" + e->d_name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
  }
  *why = "no step_NNNNNNNN directory in it yet";
  return true;
}

const char* ScalingName(exec::LossScaler::Mode mode) {
  switch (mode) {
    case exec::LossScaler::Mode::kFixed: return "fixed";
    case exec::LossScaler::Mode::kDynamic: return "dynamic";
    case exec::LossScaler::Mode::kNone: break;
  }
  return "none";
}

// The run's loss scaler (exec/loss_scale.h) from --loss-scale and the plan's precision;
// a resumed dynamic run continues its checkpoint's scaler when that was dynamic too
// (and counts its overflows on in any case). The leader says what it chose.
Status MakeLossScaler(const cli::RunOptions& o, const plan::fb::Plan& p,
                      const checkpoint::Header* resumed, bool leader, exec::LossScaler* out) {
  using Mode = exec::LossScaler::Mode;
  const std::string precision = plan::StoragePrecision(p);
  const Mode mode = o.loss_scale == "dynamic" ? Mode::kDynamic
                    : o.loss_scale == "fixed" ? Mode::kFixed
                    : o.loss_scale == "none"  ? Mode::kNone
                    : precision == "fp16"     ? Mode::kDynamic
                                              : Mode::kNone;
  exec::LossScaler::State state{o.loss_scale_init, 0, 0};
  std::string from;
  if (resumed) {
    state.overflows = resumed->loss_scale_overflows;
    if (mode == Mode::kDynamic && resumed->loss_scaling == "dynamic") {
      state.scale = resumed->loss_scale;
      state.clean_steps = resumed->loss_scale_clean_steps;
      from = " (the checkpoint's" +
             std::string(o.loss_scale_init_given ? "; --loss-scale-init is not used" : "") + ")";
    }
  }
  *out = exec::LossScaler(mode, state, o.loss_scale_growth_interval);
  if (leader && (precision != "fp32" || mode != Mode::kNone))
    std::printf("precision: %s activations, fp32 parameters, gradients and AdamW state; loss "
                "scaling %s%s\n",
                precision.c_str(), out->Describe().c_str(), from.c_str());
  if (leader && precision == "fp16" && mode == Mode::kNone)
    std::fprintf(stderr, "heiretsu-rank: warning: an fp16 plan without loss scaling: small "
                 "gradients underflow in float16 (leave --loss-scale out for dynamic)\n");
  return std::nullopt;
}

// The loss scale is multiplied by this on the rank and step a test names, which makes
// an fp16 gradient overflow there (a real one: float16 ends at 65504).
constexpr double kOverflowFactor = 1099511627776.0;  // 2^40

// HEIRETSU_TEST_OVERFLOW_STEP=S (and HEIRETSU_TEST_OVERFLOW_RANK=R, default 0): for
// tests of loss scaling, rank R runs step S's backward at 2^40 times the loss scale,
// so that its gradients overflow in float16 and, through the data-parallel reduction,
// every rank's do. Only an fp16 plan may use it (elsewhere the gradients would not
// overflow, and the ranks' scales would differ).
Status OverflowInjection(const plan::fb::Plan& p, int64_t* step, int64_t* rank) {
  if (auto err = env::Integer("HEIRETSU_TEST_OVERFLOW_STEP", 1, INT32_MAX, "step", step))
    return err;
  if (auto err = env::Integer("HEIRETSU_TEST_OVERFLOW_RANK", 0, INT32_MAX, "rank", rank))
    return err;
  if (*step > 0 && std::string(plan::StoragePrecision(p)) != "fp16")
    return Error::BadInput("HEIRETSU_TEST_OVERFLOW_STEP=" + std::to_string(*step) +
                           ": needs an fp16 plan (this one is " + plan::StoragePrecision(p) +
                           ")");
  return std::nullopt;
}

int Run(const cli::RunOptions& o) {
  const auto run_start = std::chrono::steady_clock::now();
#ifndef HEIRETSU_HAVE_CUDA
  if (o.backend == "cuda")
    return Fail(Error::Failure("--backend cuda: this build has no CUDA backend (no CUDA toolkit was found "
                "when it was built); use --backend cpu"));
#endif
  // This worker's place in the job: from heiretsu run, mpirun, srun or torchrun.
  launch::RankEnv me;
  {
    std::optional<launch::RankEnv> env;
    if (auto err = launch::RankFromEnvironment(&env)) return Fail(*err);
    if (env) me = *env;
  }
  const bool leader = me.rank == 0;  // logs, metrics and commits checkpoints
  comm::JobEnvironment job_env;  // HEIRETSU_* variables, validated like flags
  if (auto err = comm::ReadJobEnvironment(me.world_size > 1, &job_env)) return Fail(*err);

  // Every program of the plan directory; this rank runs the one of its stage.
  std::vector<plan::LoadedPlan> programs;
  if (auto err = plan::LoadPlanDirectory(o.plan_dir, &programs)) return Fail(*err);
  const plan::fb::Mesh& mesh = *programs[0].plan->mesh();
  const int64_t world = plan::WorldSize(mesh);
  if (world != me.world_size)
    return Fail(Error::BadInput(o.plan_dir + ": a plan for " + std::to_string(world) +
                                   " ranks (dp " + std::to_string(mesh.dp()) + ", tp " +
                                   std::to_string(mesh.tp()) + ", pp " + std::to_string(mesh.pp()) +
                                   ", ep " + std::to_string(mesh.ep()) + ") started as " +
                                   std::to_string(me.world_size) +
                                   (me.world_size == 1 ? " rank (use heiretsu run)" : " ranks")));
  const plan::MeshCoordinates coords = plan::CoordinatesOf(mesh, me.rank);
  const plan::LoadedPlan& loaded = programs[static_cast<size_t>(coords.coord[plan::kAxisPp])];
  const plan::fb::Plan& p = *loaded.plan;
  const std::string model = p.model() ? p.model()->str() : "";
  const rank::DataRows rows(p, coords);
  const int64_t batch = p.micro_batch_size(), seq = p.seq();
  const int64_t global_batch = rows.global_batch();
  const int64_t tokens_per_step = global_batch * seq;
  if (leader) {
    // The logical model: each tensor once (a tied one is held by two stages), whole.
    int64_t num_values = 0;
    std::set<std::string> names;
    for (const plan::LoadedPlan& program : programs)
      for (const plan::fb::Param* param : *program.plan->params()) {
        if (!names.insert(param->name()->str()).second) continue;
        int64_t n = 1;
        for (int64_t d : *param->shape()) n *= d;
        num_values += n;
      }
    const size_t tensors = names.size();
    std::printf("plan: %s: model '%s', %zu program%s, %zu parameter tensors, %lld parameters\n",
                o.plan_dir.c_str(), model.c_str(), programs.size(),
                programs.size() == 1 ? "" : "s", tensors, static_cast<long long>(num_values));
    std::printf("threads: %s\n", cpu::DescribeThreads().c_str());
    std::printf(
        "batch: %lld sequences of %lld tokens per step (dp %d x ep %d x %lld microbatches of "
        "%lld)\n",
        static_cast<long long>(global_batch), static_cast<long long>(seq), mesh.dp(), mesh.ep(),
        static_cast<long long>(p.microbatches()), static_cast<long long>(batch));
    if (o.backend == "cpu") {
      std::string advice;
      std::printf("blas: %s\n", cpu::DescribeBlas(&advice).c_str());
      if (!advice.empty()) std::fprintf(stderr, "heiretsu-rank: warning: %s\n", advice.c_str());
    }
  }

  // The checkpoint's parts, one per stage's leader; the model's tensors are theirs.
  std::vector<checkpoint::Part> parts;
  if (auto err = rank::StageParts(programs, &parts)) return Fail(*err);
  // --resume on a directory without a checkpoint yet starts at step 0 (and writes its
  // metrics afresh); decided now, before the metrics file opens.
  std::string no_checkpoint;
  const bool resuming = !o.resume.empty() && !NoCheckpointYet(o.resume, &no_checkpoint);
  // Opened before the slow work, so a wrong path is reported at once.
  rank::MetricsWriter metrics;
  if (leader)
    if (auto err = metrics.Open(o.metrics, resuming)) return Fail(*err);
  if (!o.trace.empty())
    if (auto err = CheckTracePath(o.trace, me.rank, leader)) return Fail(*err);

  data::Dataset dataset;
  std::vector<std::string> val_files;
  data::Dataset val_dataset;  // the default corpus's held-out part, else loaded below
  if (int code = LoadData(o, p.vocab(), leader, &dataset, &val_files, &val_dataset)) return code;
  // Validation data: --val-data, else the *_val_* shards of --data or the default
  // corpus's held-out part.
  if (!o.val_data.empty()) {
    val_files.clear();
    val_dataset = data::Dataset();
    if (auto err = data::ListShardFiles(o.val_data, &val_files)) return Fail(*err);
  }
  const bool validating =
      (!val_files.empty() || val_dataset.num_tokens() > 0) && o.val_every > 0;
  if (validating) {
    if (!val_files.empty())
      if (auto err = data::LoadDataset(val_files, p.vocab(), &val_dataset)) return Fail(*err);
    if (leader)
      std::printf("val: %s: %lld tokens; the loss over %lld batches every %lld steps\n",
                  val_dataset.Describe().c_str(), static_cast<long long>(val_dataset.num_tokens()),
                  static_cast<long long>(o.val_batches), static_cast<long long>(o.val_every));
  }

  // The CPU backend's arena in a memory file when the job may have other ranks on
  // this machine to share it with (comm.h, Communicator::ShareArena).
  std::unique_ptr<exec::Backend> backend =
      exec::MakeCpuBackend(me.world_size > 1 && job_env.shared_memory);
#ifdef HEIRETSU_HAVE_CUDA
  if (o.backend == "cuda") {
    // One GPU per rank on this machine by local rank (ranks beyond the GPU count
    // share them; their collectives are staged through host memory over Gloo).
    int devices = 0;
    if (auto err = cuda::DeviceCount(&devices)) return Fail(*err);
    if (devices == 0)
      return Fail(Error::Failure("--backend cuda: this process sees no CUDA device"));
    const int device = me.local_rank % devices;
    // The device has room for the arena and what the backend takes beyond it, or a
    // clear error before anything is allocated.
    const cuda::CudaExtras beyond = cuda::ProgramExtras(p, plan::PrepareUnits(p, coords));
    std::string summary;
    if (auto err = cuda::CheckDeviceMemory(device, p.arena_bytes(), beyond.total(), &summary))
      return Fail(*err);
    if (me.local_rank == 0) std::printf("cuda: %s\n", summary.c_str());
    if (auto err = cuda::MakeCudaBackend(device, &backend)) return Fail(*err);
  }
#endif
  exec::Executor executor(loaded, std::move(backend), me.rank);
  if (me.world_size > 1) {
    // Every rank runs the same plan with the same flags, or none starts.
    if (auto err = comm::AgreeOnJob(job_env, me.rank, me.world_size,
                                    JobIdentityOf(programs, o, dataset), [](const std::string& m) {
                                      std::fprintf(stderr, "heiretsu-rank: %s\n", m.c_str());
                                    }))
      return Fail(*err);
  }
  rank::Groups groups;
  if (auto err = rank::ConnectGroups(mesh, me.rank, job_env, &executor, &groups)) return Fail(*err);
  if (leader)
    for (int axis = 0; axis < plan::kNumAxes; ++axis)
      if (const comm::Communicator* c = groups.get(axis)) {
        std::string line = c->transport();
        if (!groups.no_shm[axis].empty()) line += " (no shared memory: " + groups.no_shm[axis] + ")";
        if (!groups.no_direct[axis].empty())
          line += " (not between the arenas: " + groups.no_direct[axis] + ")";
        if (const std::string direct = executor.DirectSummary(axis); !direct.empty())
          line += "; " + direct;
        std::printf("comm: %s group of %d over %s\n", plan::AxisName(axis), c->size(), line.c_str());
      }
  std::vector<checkpoint::Tensor> state = checkpoint::TrainingState(&executor);
  // Split tensors (blocks over mesh axes, ZeRO-1 moment shards) are saved and loaded
  // as logical tensors through host copies, gathered from every rank before a save
  // and cut out again after a load.
  rank::LogicalState logical(p, &executor, groups);
  logical.Redirect(&state);
  uint64_t seed = o.seed;
  int64_t first_step = 1;
  std::string resumed;  // the checkpoint this run continues
  checkpoint::Header resumed_header;  // its header
  int64_t updates = 0;  // AdamW updates applied (StepOptions::update)
  if (resuming) {
    // One rule (README, "Reliability"): the newest checkpoint this run can resume is
    // loaded; newer ones, damaged or mismatched alike, are skipped and named.
    std::string dir;
    std::vector<std::string> skipped;
    checkpoint::Header header;
    auto same_batch = [&](const std::string& d, const checkpoint::Header& h) -> Status {
      if (h.global_batch == global_batch && h.seq == seq) return std::nullopt;
      // A step-0 checkpoint of no batch (heiretsu import) has no data position to
      // carry over: any batch geometry continues it.
      if (h.step == 0 && h.global_batch == 0 && h.seq == 0) return std::nullopt;
      return Error::BadInput(d + ": comes from a run of global batch " +
                             std::to_string(h.global_batch) + " x seq " + std::to_string(h.seq) +
                             ", this plan has " + std::to_string(global_batch) + " x " +
                             std::to_string(seq) + ": its data position would not carry over");
    };
    // Every rank checks every file of a candidate, so all pick the same one; each
    // loads its own program's tensors from whichever files hold them.
    // A parameter this rank borrows from another's arena (Executor::Borrowed) is
    // loaded there: checked here, not read, so that no two ranks write the same
    // memory while one checksums it.
    std::vector<checkpoint::Tensor> load = rank::ModelState(parts, state);
    for (checkpoint::Tensor& t : load)
      if (t.data && executor.Borrowed(t.data)) t.data = nullptr;
    Status err =
        checkpoint::ResumeNewest(o.resume, model, load, same_batch, &dir, &header, &skipped);
    for (const std::string& w : skipped)
      if (leader) std::fprintf(stderr, "heiretsu-rank: warning: %s\n", w.c_str());
    if (err) return Fail(*err);
    logical.Scatter();
    // To the backend's arena (a no-op on the CPU).
    if (auto err = executor.PushState()) return Fail(*err);
    if (o.seed_given && o.seed != header.seed)
      return Fail(Error::BadInput("--seed " + std::to_string(o.seed) + " differs from the seed " +
                                     std::to_string(header.seed) + " of checkpoint " + dir +
                                     " (leave --seed out to continue its run)"));
    if (header.step > o.steps)
      return Fail(Error::BadInput("checkpoint " + dir + " is at step " +
                                     std::to_string(header.step) + ", past --steps " +
                                     std::to_string(o.steps)));
    seed = header.seed;
    first_step = header.step + 1;
    resumed = dir;
    resumed_header = header;
    updates = header.updates < 0 ? header.step : header.updates;
    // Every rank must have chosen the same checkpoint (a save directory that is not
    // the same on every machine would make them differ): compared over each group,
    // which together connect every rank.
    if (auto err = rank::AgreeOnStep(groups, header.step, dir)) return Fail(*err);
    if (leader)
      std::printf("resumed: %s (step %lld, seed %llu; the newest resumable checkpoint%s)\n",
                  dir.c_str(), static_cast<long long>(header.step),
                  static_cast<unsigned long long>(seed),
                  skipped.empty() ? "" : ", newer ones skipped as said above");
    // A checkpoint of format 3 or later records its schedule (all 0 before).
    const rank::LrSchedule saved{header.lr, header.min_lr, header.warmup, header.total_steps};
    const std::string changed =
        saved.lr == 0 && saved.total_steps == 0
            ? ""
            : rank::ScheduleChanges({o.lr, o.min_lr, o.warmup, o.steps}, saved);
    if (leader && !changed.empty() && header.step < o.steps)
      std::printf("note: resuming with %s: the learning rate follows this run's schedule "
                  "from step %lld (give the checkpoint's values to keep its own)\n",
                  changed.c_str(), static_cast<long long>(header.step + 1));
    if (header.step == o.steps) {
      std::printf("nothing to do: the checkpoint is at --steps %lld\n",
                  static_cast<long long>(o.steps));
      return 0;
    }
  } else {
    executor.InitializeParameters(seed);
    if (!o.resume.empty()) {
      // Every rank must start afresh alike (the same save directory on every machine).
      const std::string none = "no checkpoint (" + o.resume + ": " + no_checkpoint + ")";
      if (auto err = rank::AgreeOnStep(groups, 0, none)) return Fail(*err);
      if (leader)
        std::printf("note: --resume %s: no checkpoint there (%s); starting from step 0\n",
                    o.resume.c_str(), no_checkpoint.c_str());
    }
  }

  // The traced steps; none when trace_first > trace_last.
  int64_t trace_first = 0, trace_last = 0;
  if (auto err = cli::TraceSteps(o, first_step, &trace_first, &trace_last))
    return Fail(Error::BadInput(*err));
  exec::Tracer tracer;

  std::optional<data::Sampler> sampler;
  if (auto err = data::Sampler::Create(dataset, seed, seq, &sampler)) return Fail(*err);

  // --sample-every: rank 0 decodes with the plan directory's decode program from the
  // gathered weights (every rank's checks alike, so that none waits for a failed one).
  std::unique_ptr<rank::Sampler> text_sampler;
  if (o.sample_every > 0) {
    struct stat st;
    if (mesh.pp() > 1)
      return Fail(Error::BadInput("--sample-every needs pp = 1 (this plan has pp " +
                                  std::to_string(mesh.pp()) + "): sample a checkpoint instead, "
                                  "'heiretsu sample CKPT_DIR'"));
    if (::stat((o.plan_dir + "/" + plan::kDecodeFileName).c_str(), &st) != 0)
      return Fail(Error::BadInput("--sample-every: " + o.plan_dir + " has no " +
                                  plan::kDecodeFileName + " (compiled before decode programs, "
                                  "or its decode program did not compile): compile it again"));
    // What the leader's sampler needs, checked on every rank before the first step.
    const std::string tokenizer = p.tokenizer() ? p.tokenizer()->str() : "";
    if (tokenizer.empty())
      return Fail(Error::BadInput("--sample-every: model '" + model + "' names no tokenizer "
                                  "(vocab " + std::to_string(p.vocab()) + "): add 'tokenizer "
                                  "= \"byte\"' or 'tokenizer = \"gpt2\"' to its spec"));
    if (tokenizer == "gpt2") {
      std::string dir;
      if (auto err = data::DefaultGpt2VocabDir(&dir)) return Fail(*err);
      for (const char* file : {"encoder.json", "vocab.bpe"})
        if (::stat((dir + "/" + file).c_str(), &st) != 0)
          return Fail(Error::BadInput("--sample-every: GPT-2's " + std::string(file) +
                                      " is not in " + dir + " (fetch it: " +
                                      data::Gpt2FetchCommand() + ")"));
    }
    if (leader)
      if (auto err = rank::Sampler::Open(o.plan_dir, nullptr, "", &text_sampler)) return Fail(*err);
  }

  // The validation batches are the same at every evaluation and in every run (a fixed
  // seed, not the run's), the global batch's rows shared as in training.
  std::optional<data::Sampler> val_sampler;
  if (validating)
    if (auto err = data::Sampler::Create(val_dataset, kValSeed, seq, &val_sampler)) return Fail(*err);
  std::vector<int32_t> unused_ids(static_cast<size_t>(2 * batch * seq));
  exec::NonfinitePolicy nonfinite(o.on_nonfinite == "skip", o.max_consecutive_skips);
  exec::LossScaler scaler;
  if (auto err = MakeLossScaler(o, p, resumed.empty() ? nullptr : &resumed_header, leader, &scaler))
    return Fail(*err);
  // A test's overflow (HEIRETSU_TEST_OVERFLOW_STEP / _RANK, see OverflowInjection).
  int64_t overflow_step = 0, overflow_rank = 0;
  if (auto err = OverflowInjection(p, &overflow_step, &overflow_rank)) return Fail(*err);
  rank::RunSummary summary;
  summary.first_step = first_step;
  summary.last_step = o.steps;
  summary.resumed = resumed;
  summary.validating = validating;
  summary.tokens_per_step = tokens_per_step;
  summary.metrics = o.metrics;
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  const Clock::time_point loop_start = Clock::now();
  for (int64_t step = first_step; step <= o.steps; ++step) {
    exec::StepOptions options;
    options.lr = cli::LearningRate(o, step);
    options.weight_decay = o.weight_decay;
    options.grad_clip = o.grad_clip;
    options.step = step;
    options.update = updates + 1;
    options.loss_scale = scaler.scale();
    if (step == overflow_step && me.rank == overflow_rank) options.loss_scale *= kOverflowFactor;
    // The sampler numbers steps from 0: user step s takes the global batch of sampler
    // step s - 1; microbatch m the rows of data_rows.h.
    auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
      const int64_t row = rows.FirstRow(m);
      // A stage without the embedding (or the loss) has no tokens (targets).
      sampler->FillBatchRows(step - 1, global_batch, row, row + batch,
                             tokens ? tokens : unused_ids.data(),
                             targets ? targets : unused_ids.data() + batch * seq);
    };
    if (step == trace_first && trace_first <= trace_last) {
      // The ranks' clocks line up where they leave this barrier (exec/trace.h).
      if (auto err = rank::AgreeAcrossJob(groups, std::nullopt, "starting the trace"))
        return Fail(*err);
      tracer.set_origin(exec::Tracer::Clock::now());
      executor.set_tracer(&tracer);
    }
    exec::StepResult result;
    const auto start = std::chrono::steady_clock::now();
    if (auto err = executor.Step(fill, options, &result)) return Fail(*err);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Not applied when not finite (every rank alike): an overflow the loss scaler takes
    // halves the scale; else the policy says whether to go on.
    const double scale = scaler.scale();
    if (!result.nonfinite) ++updates;
    if (scaler.Observe(result)) {
      result.overflow = true;
      if (leader)
        std::printf("step %lld: a gradient overflowed at loss scale %.0f: skipped, the model "
                    "is unchanged; loss scale now %.0f (%lld overflows in all)\n",
                    static_cast<long long>(step), scale, scaler.scale(),
                    static_cast<long long>(scaler.state().overflows));
    } else if (auto err = nonfinite.Observe(step, result)) {
      return Fail(*err);
    } else if (result.nonfinite && leader)
      std::printf("%s: skipped, the model is unchanged (%lld in a row, %lld in all)\n",
                  exec::NonfinitePolicy::Describe(step, result).c_str(),
                  static_cast<long long>(nonfinite.consecutive()),
                  static_cast<long long>(nonfinite.skipped()));
    if (validating && !result.nonfinite && (step % o.val_every == 0 || step == o.steps)) {
      const Clock::time_point val_start = Clock::now();
      // The trace shows the training step: validation's forwards are not in it.
      const bool traced = trace_first <= step && step <= trace_last;
      if (traced) executor.set_tracer(nullptr);
      double total = 0;
      for (int64_t k = 0; k < o.val_batches; ++k) {
        auto val_fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
          const int64_t row = rows.FirstRow(m);
          val_sampler->FillBatchRows(k, global_batch, row, row + batch,
                                     tokens ? tokens : unused_ids.data(),
                                     targets ? targets : unused_ids.data() + batch * seq);
        };
        double loss = 0;
        if (auto err = executor.Evaluate(val_fill, &loss)) return Fail(*err);
        total += loss;
      }
      if (traced) executor.set_tracer(&tracer);
      result.val_loss = total / static_cast<double>(o.val_batches);
      summary.val_seconds += since(val_start);
    }
    if (scaler.mode() != exec::LossScaler::Mode::kNone) {
      result.loss_scale = scale;  // the scale this step ran at
      result.overflows = scaler.state().overflows;
    }
    const rank::StepLine line{options, result, seconds, tokens_per_step};
    summary.Add(line);
    if (leader)
      if (auto err = metrics.Write(line)) return Fail(*err);
    if (leader && !result.nonfinite &&
        (step % o.log_every == 0 || step == o.steps || step == first_step)) {
      const rank::Progress progress = rank::Progress::After(
          since(loop_start), step - first_step + 1, o.steps - first_step + 1);
      std::printf("%s\n", rank::ProgressLine(line, o.steps, progress).c_str());
    }
    if (step == trace_last && trace_first <= trace_last) {
      executor.set_tracer(nullptr);
      if (auto err = FinishTrace(o, mesh, me.rank, tracer, groups, trace_first, trace_last))
        return Fail(*err);
    }
    // Replicas are identical, so after the gather each stage leader's state is the
    // whole of its stage (with ZeRO-1, once every rank has contributed its moments).
    const bool save =
        !o.save_dir.empty() && ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps);
    const Clock::time_point save_start = Clock::now();
    if (save) {
      // From the backend's arena (a no-op on the CPU).
      if (auto err = executor.PullState()) return Fail(*err);
      if (auto err = logical.Gather()) return Fail(*err);
    }
    if (save && rank::IsStageLeader(coords)) {
      checkpoint::Header header;
      header.model = model;
      header.step = step;
      header.seed = seed;
      header.global_batch = global_batch;
      header.seq = seq;
      header.tokenizer = p.tokenizer() ? p.tokenizer()->str() : "";
      header.spec = p.spec() ? p.spec()->str() : "";
      header.spec_file = p.spec_file() ? p.spec_file()->str() : "";
      header.lr = o.lr;
      header.min_lr = o.min_lr;
      header.warmup = o.warmup;
      header.total_steps = o.steps;
      header.loss_scaling = ScalingName(scaler.mode());
      header.loss_scale = scaler.scale();
      header.loss_scale_clean_steps = scaler.state().clean_steps;
      header.loss_scale_overflows = scaler.state().overflows;
      header.updates = updates;
      std::string dir;
      if (auto err = SaveStage(o.save_dir, header, parts, coords.coord[plan::kAxisPp], state,
                               groups.get(plan::kAxisPp), &dir))
        return Fail(*err);
      if (leader) std::printf("checkpoint: %s\n", dir.c_str());
      summary.checkpoint = dir;
    }
    if (save) summary.checkpoint_seconds += since(save_start);
    if (o.sample_every > 0 && (step % o.sample_every == 0 || step == o.steps)) {
      if (!save) {  // the gathered logical weights, as for a checkpoint
        if (auto err = executor.PullState()) return Fail(*err);
        if (auto err = logical.Gather()) return Fail(*err);
      }
      if (leader) {
        if (auto err = text_sampler->SetValues(state)) return Fail(*err);
        std::vector<int32_t> prompt;
        if (auto err = text_sampler->Encode(text_sampler->tokenizer() == "gpt2" ? "" : "\n",
                                            &prompt))
          return Fail(*err);
        rank::SampleOptions so;
        so.tokens = o.sample_tokens;
        so.seed = static_cast<uint64_t>(step);
        std::vector<int32_t> drawn;
        bool full = false;
        if (auto err = text_sampler->Generate(prompt, so, [&](int32_t id) { drawn.push_back(id); },
                                              &full))
          return Fail(*err);
        std::string text;
        if (auto err = text_sampler->DecodeText(drawn, &text)) return Fail(*err);
        std::printf("sample (step %lld): ", static_cast<long long>(step));
        std::fwrite(text.data(), 1, text.size(), stdout);  // a byte model may draw a 0
        std::fputc('\n', stdout);
      }
    }
  }
  if (leader && scaler.state().overflows > resumed_header.loss_scale_overflows)
    std::printf("overflow steps: %lld of %lld skipped by the loss scaler (now %.0f)\n",
                static_cast<long long>(scaler.state().overflows -
                                       resumed_header.loss_scale_overflows),
                static_cast<long long>(o.steps - first_step + 1), scaler.scale());
  if (leader && nonfinite.skipped() > 0)
    std::printf("skipped steps: %lld of %lld had a non-finite loss or gradient norm\n",
                static_cast<long long>(nonfinite.skipped()),
                static_cast<long long>(o.steps - first_step + 1));
  summary.wall_seconds = since(run_start);
  if (leader) std::fputs(rank::SummaryText(summary).c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace heiretsu

namespace heiretsu {
// `heiretsu-rank sample` (sample_main.cc).
int SampleMain(const std::vector<std::string>& args);
}  // namespace heiretsu

int main(int argc, char** argv) {
  if (auto err = heiretsu::cpu::PrepareThreads(argv)) return heiretsu::Fail(*err);
  // Line-buffered even into a pipe or a file, so progress shows as it happens and
  // interleaves with the messages on stderr in order.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "sample") {
    args.erase(args.begin());
    try {
      return heiretsu::SampleMain(args);
    } catch (const std::exception& e) {
      return heiretsu::Fail(heiretsu::Error::Failure(e.what()));
    }
  }
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::fputs(heiretsu::cli::RunUsage(), stdout);
      return 0;
    }
  }
  heiretsu::cli::RunOptions options;
  if (auto err = heiretsu::cli::ParseRunOptions(args, &options))
    return heiretsu::Fail(heiretsu::Error::BadInput(*err + " (see --help)"));
  try {
    return heiretsu::Run(options);
  } catch (const std::exception& e) {
    return heiretsu::Fail(heiretsu::Error::Failure(e.what()));
  }
}
