// heiretsu-rank: the per-rank runtime worker (DESIGN.md §1). It loads its rank program
// from a plan directory, the data, and optionally a checkpoint, then trains: one
// optimizer step per step number, a JSON metrics line per step, a human progress line
// per log interval, checkpoints on request.
//
// A plan for several ranks runs as one such worker per rank (started by `heiretsu run`,
// mpirun, srun or torchrun): the ranks connect over Gloo through HEIRETSU_STORE, one
// group per mesh axis; each dp coordinate trains on its rows of the global batch, the
// tp ranks of one dp coordinate on the same rows; rank 0 alone logs and checkpoints.
// Plans with pipeline or expert parallelism are refused until those exist.
//
// Bit-identical resumption (DESIGN.md §3) rests on three facts kept here: the data of
// step s depends only on (dataset, seed, s), the learning rate only on s and the
// flags, and all other training state (parameters and AdamW moments) is in the
// checkpoint; gradients and activations are recomputed from scratch every step.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/cli/RunOptions.h"
#include "runtime/comm/comm.h"
#include "runtime/comm/job_identity.h"
#include "runtime/cpu/threading.h"
#ifdef HEIRETSU_HAVE_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif
#include "runtime/data/prepare.h"
#include "runtime/data/shards.h"
#include "runtime/exec/executor.h"
#include "runtime/exec/nonfinite.h"
#include "runtime/launch/launcher.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu {
namespace {

constexpr int kExitBadInput = 2;
constexpr int kExitFailure = 1;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "heiretsu-rank: %s\n", message.c_str());
  return code;
}

int Fail(const data::DataError& err) {
  return Fail(err.kind == data::DataError::Kind::kBadInput ? kExitBadInput : kExitFailure,
              err.message);
}

// heiretsu's cache: --cache-dir, else $XDG_CACHE_HOME/heiretsu, else ~/.cache/heiretsu.
// The XDG base directory specification says a relative XDG_CACHE_HOME is to be ignored.
std::optional<std::string> CacheRoot(const cli::RunOptions& o) {
  if (!o.cache_dir.empty()) return o.cache_dir;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/') return std::string(xdg) + "/heiretsu";
  const char* home = std::getenv("HOME");
  if (home && home[0] != '\0') return std::string(home) + "/.cache/heiretsu";
  return std::nullopt;
}

// The dataset of --data, or the default corpus (byte-tokenized, so only for a
// vocabulary of at least 256), with a line saying which.
int LoadData(const cli::RunOptions& o, int64_t vocab, bool verbose, data::Dataset* dataset) {
  std::vector<std::string> files;
  if (!o.data.empty()) {
    if (auto err = data::ListShardFiles(o.data, &files)) return Fail(*err);
  } else {
    if (vocab < data::kByteVocab)
      return Fail(kExitBadInput,
                  "the default corpus is byte-tokenized (256 token ids), but the plan's "
                  "vocabulary has " +
                      std::to_string(vocab) + ": give token shards with --data PATH");
    std::optional<std::string> root = CacheRoot(o);
    if (!root)
      return Fail(kExitBadInput,
                  "neither HOME nor XDG_CACHE_HOME is set: give --cache-dir DIR or --data PATH");
    const std::string dir = *root + "/corpus-byte";
    data::PrepareSummary summary;
    if (auto err = data::EnsureDefaultCorpus(dir, &summary)) return Fail(*err);
    if (verbose)
      std::printf("data: default corpus (%lld licence texts, byte-tokenized), %s %s\n",
                  static_cast<long long>(summary.files),
                  summary.reused ? "cached in" : "prepared in", dir.c_str());
    files = summary.shards;
  }
  if (auto err = data::LoadDataset(files, vocab, dataset)) return Fail(*err);
  if (verbose)
    std::printf("data: %s: %lld tokens\n", dataset->Describe().c_str(),
                static_cast<long long>(dataset->num_tokens()));
  return 0;
}

// Logical tensors for checkpoints of a rank whose training state is split: a
// parameter's values and moments may be a tp block (tensor parallelism, along the
// parameter's tp_dim) and its moments a ZeRO-1 dp shard of that block. For each such
// tensor a host copy of the logical tensor stands in the checkpoint's entry;
// Gather fills the copies from every rank's piece before a save (all ranks take
// part), Scatter cuts this rank's pieces out of them after a load.
class LogicalState {
 public:
  LogicalState(const plan::fb::Plan& plan, exec::Executor* executor, comm::Communicator* dp,
               comm::Communicator* tp)
      : executor_(executor), dp_(dp), tp_(tp) {
    for (const plan::fb::Param* p : *plan.params()) {
      const bool tp_block = p->tp_dim() >= 0 && tp_ && tp_->size() > 1;
      const bool dp_shard = p->shard() > 0 && dp_ && dp_->size() > 1;
      if (!tp_block && !dp_shard) continue;
      int64_t n = 1;
      for (int64_t d : *p->shape()) n *= d;
      Entry e{p, tp_block, dp_shard, {}, {}, {}};
      if (tp_block) e.value.resize(static_cast<size_t>(n));
      e.m.resize(static_cast<size_t>(n));
      e.v.resize(static_cast<size_t>(n));
      entries_.push_back(std::move(e));
    }
  }

  // Points the checkpoint entries of split tensors at the host copies.
  void Redirect(std::vector<checkpoint::Tensor>* state) {
    for (Entry& e : entries_)
      for (checkpoint::Tensor& t : *state) {
        if (t.name != e.param->name()->str()) continue;
        if (t.kind == checkpoint::TensorKind::kValue && e.tp_block) t.data = e.value.data();
        if (t.kind == checkpoint::TensorKind::kExpAvg) t.data = e.m.data();
        if (t.kind == checkpoint::TensorKind::kExpAvgSq) t.data = e.v.data();
      }
  }

  std::optional<std::string> Gather() {
    for (Entry& e : entries_) {
      if (e.tp_block)
        if (auto err = GatherOne(e, executor_->F32(e.param->value()), false, &e.value)) return err;
      if (auto err = GatherOne(e, executor_->F32(e.param->exp_avg()), e.dp_shard, &e.m))
        return err;
      if (auto err = GatherOne(e, executor_->F32(e.param->exp_avg_sq()), e.dp_shard, &e.v))
        return err;
    }
    return std::nullopt;
  }

  void Scatter() {
    for (Entry& e : entries_) {
      if (e.tp_block) ScatterOne(e, e.value, false, executor_->F32(e.param->value()));
      ScatterOne(e, e.m, e.dp_shard, executor_->F32(e.param->exp_avg()));
      ScatterOne(e, e.v, e.dp_shard, executor_->F32(e.param->exp_avg_sq()));
    }
  }

 private:
  struct Entry {
    const plan::fb::Param* param;
    bool tp_block, dp_shard;
    std::vector<float> value, m, v;  // logical tensors
  };

  int64_t LocalSize(const Entry& e) const {
    return static_cast<int64_t>(e.m.size()) / (e.tp_block ? tp_->size() : 1);
  }

  // `local` is this rank's block (or, dp_shard, its ZeRO-1 shard of that block).
  std::optional<std::string> GatherOne(const Entry& e, const float* local, bool dp_shard,
                                       std::vector<float>* logical) {
    const int64_t n = LocalSize(e);
    std::vector<float> block(local, local + (dp_shard ? 0 : n));
    if (dp_shard) {
      const int64_t s = plan::ShardSize(n, dp_->size());
      std::vector<float> all(static_cast<size_t>(s * dp_->size()));
      if (auto err = dp_->AllGather(local, all.data(), static_cast<size_t>(s))) return err;
      block.assign(all.begin(), all.begin() + n);
    }
    if (!e.tp_block) {  // copied in place: the checkpoint entries point at *logical
      std::copy(block.begin(), block.end(), logical->begin());
      return std::nullopt;
    }
    const int parts = tp_->size();
    std::vector<float> all(static_cast<size_t>(n * parts));
    if (auto err = tp_->AllGather(block.data(), all.data(), static_cast<size_t>(n))) return err;
    const plan::TpBlock geometry = plan::TpBlockOf(*e.param, parts);
    for (int r = 0; r < parts; ++r)
      for (int64_t o = 0; o < geometry.outer; ++o)
        std::copy_n(all.data() + r * n + o * geometry.run, geometry.run,
                    logical->data() + geometry.Begin(o, r, parts));
    return std::nullopt;
  }

  void ScatterOne(const Entry& e, const std::vector<float>& logical, bool dp_shard, float* local) {
    const int64_t n = LocalSize(e);
    std::vector<float> block(logical);
    if (e.tp_block) {
      const plan::TpBlock geometry = plan::TpBlockOf(*e.param, tp_->size());
      block.resize(static_cast<size_t>(n));
      for (int64_t o = 0; o < geometry.outer; ++o)
        std::copy_n(logical.data() + geometry.Begin(o, tp_->rank(), tp_->size()), geometry.run,
                    block.data() + o * geometry.run);
    }
    if (!dp_shard) {
      std::copy(block.begin(), block.end(), local);
      return;
    }
    const plan::Shard mine = plan::ShardOf(n, dp_->rank(), dp_->size());
    std::copy_n(block.begin() + mine.begin, mine.size, local);
  }

  exec::Executor* executor_;
  comm::Communicator* dp_;
  comm::Communicator* tp_;
  std::vector<Entry> entries_;
};

// JSON has no NaN or infinity; a gradient norm can overflow.
std::string JsonNumber(double v, const char* format) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Throughput(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", tokens_per_s / 1e6);
  } else if (tokens_per_s >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  }
  return buf;
}

// What every rank of a job must agree on (comm::AgreeOnJob): the plan, by a hash of
// its bytes and the values a message should name, and the run flags that shape the
// training or the collectives (the save steps gather on every rank).
comm::JobIdentity JobIdentityOf(const plan::LoadedPlan& loaded, const cli::RunOptions& o,
                                const data::Dataset& dataset) {
  const plan::fb::Plan& p = *loaded.plan;
  char hash[24], lr[96];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(plan::Fnv1a64(loaded.bytes.data(), loaded.bytes.size())));
  std::snprintf(lr, sizeof lr, "%.9g..%.9g warmup %lld decay %.9g clip %.9g", o.lr, o.min_lr,
                static_cast<long long>(o.warmup), o.weight_decay, o.grad_clip);
  const plan::fb::Mesh& m = *p.mesh();
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
                   std::to_string(dataset.names().size()) + " shard(s)"},
      {"checkpoints", o.save_dir.empty() ? "none" : "every " + std::to_string(o.save_every)},
      {"--resume", o.resume.empty() ? "no" : "yes"},
      {"--on-nonfinite", o.on_nonfinite + " (" + std::to_string(o.max_consecutive_skips) + ")"},
  };
}

int Run(const cli::RunOptions& o) {
#ifndef HEIRETSU_HAVE_CUDA
  if (o.backend == "cuda")
    return Fail(kExitFailure,
                "--backend cuda: this build has no CUDA backend (no CUDA toolkit was found "
                "when it was built); use --backend cpu");
#endif
  // This worker's place in the job: from heiretsu run, mpirun, srun or torchrun.
  launch::RankEnv me;
  {
    std::string error;
    std::optional<launch::RankEnv> env = launch::RankFromEnvironment(&error);
    if (!error.empty()) return Fail(kExitBadInput, error);
    if (env) me = *env;
  }
  const bool leader = me.rank == 0;  // logs, metrics and checkpoints
  comm::JobEnvironment job_env;  // HEIRETSU_* variables, validated like flags
  if (auto err = comm::ReadJobEnvironment(me.world_size > 1, &job_env)) return Fail(*err);

  struct stat st;
  if (::stat(o.plan_dir.c_str(), &st) != 0)
    return Fail(kExitBadInput,
                o.plan_dir + ": cannot open plan directory: " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return Fail(kExitBadInput, o.plan_dir +
                                   ": not a directory (give the plan directory that "
                                   "'heiretsu compile --emit plan -o PLAN_DIR' wrote)");
  plan::LoadedPlan loaded;
  if (auto err = plan::LoadPlan(o.plan_dir + "/" + plan::ProgramFileName(0), &loaded))
    return Fail(kExitBadInput, *err);
  const plan::fb::Plan& p = *loaded.plan;
  const plan::fb::Mesh& mesh = *p.mesh();
  const int64_t world = int64_t{mesh.dp()} * mesh.tp() * mesh.pp() * mesh.ep();
  if (world != me.world_size)
    return Fail(kExitBadInput, loaded.path + ": a plan for " + std::to_string(world) +
                                   " ranks (dp " + std::to_string(mesh.dp()) + ", tp " +
                                   std::to_string(mesh.tp()) + ", pp " + std::to_string(mesh.pp()) +
                                   ", ep " + std::to_string(mesh.ep()) + ") started as " +
                                   std::to_string(me.world_size) +
                                   (me.world_size == 1 ? " rank (use heiretsu run)" : " ranks"));
  if (mesh.pp() > 1 || mesh.ep() > 1)
    return Fail(kExitFailure, loaded.path +
                                  ": pipeline and expert parallelism are not built yet");
  const plan::MeshCoordinates coords = plan::CoordinatesOf(mesh, me.rank);
  const std::string model = p.model() ? p.model()->str() : "";
  // Data parallelism: rank r's microbatches are rows [r B M, (r + 1) B M) of the
  // global batch, so the same global batch trains the same model on any dp.
  const int64_t batch = p.micro_batch_size(), seq = p.seq();
  const int64_t per_rank = batch * p.microbatches();
  const int64_t global_batch = per_rank * mesh.dp();
  const int64_t tokens_per_step = global_batch * seq;
  int64_t num_values = 0;
  for (const plan::fb::Param* param : *p.params())
    num_values += plan::NumElements(*p.buffers()->Get(param->value()));
  if (leader) {
    std::printf("plan: %s: model '%s', %u parameter tensors, %lld parameters\n",
                loaded.path.c_str(), model.c_str(), p.params()->size(),
                static_cast<long long>(num_values));
    std::printf(
        "batch: %lld sequences of %lld tokens per step (dp %d x %lld microbatches of "
        "%lld)\n",
        static_cast<long long>(global_batch), static_cast<long long>(seq), mesh.dp(),
        static_cast<long long>(p.microbatches()), static_cast<long long>(batch));
  }

  std::unique_ptr<FILE, int (*)(FILE*)> metrics(nullptr, &std::fclose);
  if (!o.metrics.empty() && leader) {
    // Opened before the slow work, so a wrong path is reported at once. A resumed run
    // appends, so the file holds the whole run; steps after the checkpoint that an
    // interrupted run had already logged appear again, the later line winning.
    metrics.reset(std::fopen(o.metrics.c_str(), o.resume.empty() ? "w" : "a"));
    if (!metrics)
      return Fail(kExitBadInput, o.metrics + ": cannot open metrics file: " + std::strerror(errno));
  }

  data::Dataset dataset;
  if (int code = LoadData(o, p.vocab(), leader, &dataset)) return code;

  std::unique_ptr<exec::Backend> backend;  // null: the CPU backend
#ifdef HEIRETSU_HAVE_CUDA
  if (o.backend == "cuda") {
    // One GPU per rank on this machine by local rank (ranks beyond the GPU count
    // share them; their collectives are staged through host memory over Gloo).
    const int devices = cuda::DeviceCount();
    if (devices == 0)
      return Fail(kExitFailure, "--backend cuda: this process sees no CUDA device");
    std::string error;
    backend = cuda::MakeCudaBackend(me.local_rank % devices, &error);
    if (!backend) return Fail(kExitFailure, error);
  }
#endif
  exec::Executor executor(loaded, std::move(backend));
  // One communicator per mesh axis of size > 1: the ranks sharing this rank's other
  // coordinates (plan.fbs gives the rule), connected in axis order on every rank.
  std::unique_ptr<comm::Communicator> groups[4];
  if (me.world_size > 1) {
    // Every rank runs the same plan with the same flags, or none starts.
    if (auto err = comm::AgreeOnJob(job_env, me.rank, me.world_size,
                                    JobIdentityOf(loaded, o, dataset), [](const std::string& m) {
                                      std::fprintf(stderr, "heiretsu-rank: %s\n", m.c_str());
                                    }))
      return Fail(*err);
    for (int axis : {plan::kAxisDp, plan::kAxisTp}) {
      if (coords.size[axis] == 1) continue;
      const std::vector<int> members = plan::GroupOf(mesh, me.rank, axis);
      comm::GlooOptions g;
      g.store_dir = job_env.store;
      // Named by axis and first member: unique within the job.
      g.group = std::string(plan::AxisName(axis)) + "." + std::to_string(members[0]);
      g.rank = coords.coord[axis];
      g.size = coords.size[axis];
      // The address this rank listens on: loopback unless the job spans machines.
      g.hostname = job_env.address;
      g.timeout = job_env.timeout;
      std::string error;
      groups[axis] = comm::ConnectGloo(g, &error);
      if (!groups[axis]) return Fail(kExitFailure, error);
      executor.set_communicator(axis, groups[axis].get());
    }
  }
  std::vector<checkpoint::Tensor> state = checkpoint::TrainingState(&executor);
  // Split tensors (tp blocks, ZeRO-1 moment shards) are saved and loaded as logical
  // tensors through host copies, gathered from every rank before a save and cut out
  // again after a load.
  LogicalState logical(p, &executor, groups[plan::kAxisDp].get(), groups[plan::kAxisTp].get());
  logical.Redirect(&state);
  uint64_t seed = o.seed;
  int64_t first_step = 1;
  if (!o.resume.empty()) {
    // One rule (README, "Reliability"): the newest checkpoint this run can resume is
    // loaded; newer ones, damaged or mismatched alike, are skipped and named.
    std::string dir;
    std::vector<std::string> skipped;
    checkpoint::Header header;
    auto same_batch = [&](const std::string& d, const checkpoint::Header& h) -> Status {
      if (h.global_batch == global_batch && h.seq == seq) return std::nullopt;
      return Error::BadInput(d + ": comes from a run of global batch " +
                             std::to_string(h.global_batch) + " x seq " + std::to_string(h.seq) +
                             ", this plan has " + std::to_string(global_batch) + " x " +
                             std::to_string(seq) + ": its data position would not carry over");
    };
    Status err =
        checkpoint::ResumeNewest(o.resume, model, state, same_batch, &dir, &header, &skipped);
    for (const std::string& w : skipped)
      if (leader) std::fprintf(stderr, "heiretsu-rank: warning: %s\n", w.c_str());
    if (err) return Fail(*err);
    logical.Scatter();
    executor.PushState();  // to the backend's arena (a no-op on the CPU)
    if (o.seed_given && o.seed != header.seed)
      return Fail(kExitBadInput, "--seed " + std::to_string(o.seed) + " differs from the seed " +
                                     std::to_string(header.seed) + " of checkpoint " + dir +
                                     " (leave --seed out to continue its run)");
    if (header.step > o.steps)
      return Fail(kExitBadInput, "checkpoint " + dir + " is at step " +
                                     std::to_string(header.step) + ", past --steps " +
                                     std::to_string(o.steps));
    seed = header.seed;
    first_step = header.step + 1;
    if (leader)
      std::printf("resumed: %s (step %lld, seed %llu; the newest resumable checkpoint%s)\n",
                  dir.c_str(), static_cast<long long>(header.step),
                  static_cast<unsigned long long>(seed),
                  skipped.empty() ? "" : ", newer ones skipped as said above");
    if (header.step == o.steps) {
      std::printf("nothing to do: the checkpoint is at --steps %lld\n",
                  static_cast<long long>(o.steps));
      return 0;
    }
  } else {
    executor.InitializeParameters(seed);
  }

  std::optional<data::Sampler> sampler;
  if (auto err = data::Sampler::Create(dataset, seed, seq, &sampler)) return Fail(*err);

  const int width = static_cast<int>(std::to_string(o.steps).size());
  exec::NonfinitePolicy nonfinite(o.on_nonfinite == "skip", o.max_consecutive_skips);
  for (int64_t step = first_step; step <= o.steps; ++step) {
    exec::StepOptions options;
    options.lr = cli::LearningRate(o, step);
    options.weight_decay = o.weight_decay;
    options.grad_clip = o.grad_clip;
    options.step = step;
    // The sampler numbers steps from 0: user step s takes the global batch of sampler
    // step s - 1, and microbatch m its rows [m * B, (m + 1) * B).
    auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
      const int64_t row = coords.coord[plan::kAxisDp] * per_rank + m * batch;
      sampler->FillBatchRows(step - 1, global_batch, row, row + batch, tokens, targets);
    };
    exec::StepResult result;
    const auto start = std::chrono::steady_clock::now();
    if (auto err = executor.Step(fill, options, &result)) return Fail(kExitFailure, *err);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double step_ms = seconds * 1e3;
    const double tokens_per_s = static_cast<double>(tokens_per_step) / seconds;
    // Not applied when not finite (every rank alike); the policy says whether to go on.
    if (auto err = nonfinite.Observe(step, result)) return Fail(*err);
    if (result.nonfinite && leader)
      std::printf("%s: skipped, the model is unchanged (%lld in a row, %lld in all)\n",
                  exec::NonfinitePolicy::Describe(step, result).c_str(),
                  static_cast<long long>(nonfinite.consecutive()),
                  static_cast<long long>(nonfinite.skipped()));

    if (metrics) {
      char loss_hex[40];
      std::snprintf(loss_hex, sizeof loss_hex, "%a", result.loss);
      std::fprintf(metrics.get(),
                   "{\"step\":%lld,\"loss\":%s,\"loss_hex\":\"%s\",\"lr\":%s,\"grad_norm\":%s,"
                   "\"tokens_per_s\":%s,\"step_ms\":%s%s}\n",
                   static_cast<long long>(step), JsonNumber(result.loss, "%.17g").c_str(), loss_hex,
                   JsonNumber(options.lr, "%.9g").c_str(),
                   JsonNumber(result.grad_norm, "%.9g").c_str(),
                   JsonNumber(tokens_per_s, "%.6g").c_str(), JsonNumber(step_ms, "%.6g").c_str(),
                   result.nonfinite ? ",\"skipped\":true" : "");
      // Flushed per line so that a crash leaves only whole lines behind.
      if (std::fflush(metrics.get()) != 0 || std::ferror(metrics.get()))
        return Fail(kExitFailure, o.metrics + ": cannot write: " + std::strerror(errno));
    }
    if (leader && !result.nonfinite &&
        (step % o.log_every == 0 || step == o.steps || step == first_step)) {
      std::printf("step %*lld/%lld | loss %.4f | lr %.2e | grad norm %.4f | %s tok/s | %.1f ms\n",
                  width, static_cast<long long>(step), static_cast<long long>(o.steps), result.loss,
                  options.lr, result.grad_norm, Throughput(tokens_per_s).c_str(), step_ms);
    }
    // Replicas are identical, so rank 0's state is the whole model (with ZeRO-1,
    // once every rank has contributed its moments).
    const bool save =
        !o.save_dir.empty() && ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps);
    if (save) {
      executor.PullState();  // from the backend's arena (a no-op on the CPU)
      if (auto err = logical.Gather()) return Fail(kExitFailure, *err);
    }
    if (leader && save) {
      checkpoint::Header header;
      header.model = model;
      header.step = step;
      header.seed = seed;
      header.global_batch = global_batch;
      header.seq = seq;
      std::string dir;
      if (auto err = checkpoint::SaveCheckpoint(o.save_dir, header, state, &dir)) return Fail(*err);
      std::printf("checkpoint: %s\n", dir.c_str());
    }
  }
  if (leader && nonfinite.skipped() > 0)
    std::printf("skipped steps: %lld of %lld had a non-finite loss or gradient norm\n",
                static_cast<long long>(nonfinite.skipped()),
                static_cast<long long>(o.steps - first_step + 1));
  return 0;
}

}  // namespace
}  // namespace heiretsu

int main(int argc, char** argv) {
  heiretsu::cpu::EnsurePassiveOpenMP(argv);
  // Line-buffered even into a pipe or a file, so progress shows as it happens and
  // interleaves with the messages on stderr in order.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::fputs(heiretsu::cli::RunUsage(), stdout);
      return 0;
    }
  }
  heiretsu::cli::RunOptions options;
  if (auto err = heiretsu::cli::ParseRunOptions(args, &options)) {
    std::fprintf(stderr, "heiretsu-rank: %s (see --help)\n", err->c_str());
    return heiretsu::kExitBadInput;
  }
  try {
    return heiretsu::Run(options);
  } catch (const std::exception& e) {
    return heiretsu::Fail(heiretsu::kExitFailure, e.what());
  }
}
