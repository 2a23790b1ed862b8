// heiretsu-rank: the per-rank runtime worker (DESIGN.md §1). It loads its rank program
// from a plan directory, the data, and optionally a checkpoint, then trains: one
// optimizer step per step number, a JSON metrics line per step, a human progress line
// per log interval, checkpoints on request.
//
// A data-parallel plan runs as one such worker per rank (started by `heiretsu run`,
// mpirun, srun or torchrun): the ranks connect over Gloo through HEIRETSU_STORE, each
// trains on its rows of the global batch, and rank 0 alone logs and checkpoints.
// Plans with tensor, pipeline or expert parallelism are refused until those exist.
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
#include "runtime/cpu/threading.h"
#include "runtime/data/prepare.h"
#include "runtime/data/shards.h"
#include "runtime/exec/executor.h"
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

// Whole-tensor host copies of ZeRO-1-sharded AdamW moments, for checkpoints.
class ShardedMoments {
 public:
  ShardedMoments(const plan::fb::Plan& plan, exec::Executor* executor, comm::Communicator* dp)
      : plan_(plan), executor_(executor), dp_(dp) {
    if (!dp_) return;  // sharded moments exist only in plans for several dp ranks
    for (const plan::fb::Param* p : *plan.params())
      if (p->shard() > 0)
        full_.emplace_back(p,
                           std::vector<float>(plan::NumElements(*plan.buffers()->Get(p->value()))),
                           std::vector<float>(plan::NumElements(*plan.buffers()->Get(p->value()))));
  }

  // Points the checkpoint entries of sharded moments at the host copies.
  void Redirect(std::vector<checkpoint::Tensor>* state) {
    for (auto& [param, m, v] : full_)
      for (checkpoint::Tensor& t : *state)
        if (t.name == param->name()->str()) {
          if (t.kind == checkpoint::TensorKind::kExpAvg) t.data = m.data();
          if (t.kind == checkpoint::TensorKind::kExpAvgSq) t.data = v.data();
        }
  }

  // Every rank takes part: all_gather of each shard into the host copies.
  std::optional<std::string> Gather() {
    for (auto& [param, m, v] : full_) {
      if (auto err = GatherOne(param->exp_avg(), &m)) return err;
      if (auto err = GatherOne(param->exp_avg_sq(), &v)) return err;
    }
    return std::nullopt;
  }

  // After a load: each rank copies its shard out of the host copies.
  void Scatter() {
    for (auto& [param, m, v] : full_) {
      ScatterOne(m, param->exp_avg());
      ScatterOne(v, param->exp_avg_sq());
    }
  }

 private:
  std::optional<std::string> GatherOne(uint32_t buffer, std::vector<float>* full) {
    const int64_t n = static_cast<int64_t>(full->size()), parts = dp_->size();
    const int64_t s = plan::ShardSize(n, parts);
    std::vector<float> all(static_cast<size_t>(s * parts));
    if (auto err = dp_->AllGather(executor_->F32(buffer), all.data(), static_cast<size_t>(s)))
      return err;
    std::copy(all.begin(), all.begin() + n, full->begin());
    return std::nullopt;
  }

  void ScatterOne(const std::vector<float>& full, uint32_t buffer) {
    const plan::Shard mine =
        plan::ShardOf(static_cast<int64_t>(full.size()), dp_->rank(), dp_->size());
    float* out = executor_->F32(buffer);
    std::fill_n(out, plan::NumElements(*plan_.buffers()->Get(buffer)), 0.f);
    std::copy(full.begin() + mine.begin, full.begin() + mine.begin + mine.size, out);
  }

  const plan::fb::Plan& plan_;
  exec::Executor* executor_;
  comm::Communicator* dp_;
  std::vector<std::tuple<const plan::fb::Param*, std::vector<float>, std::vector<float>>> full_;
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

int Run(const cli::RunOptions& o) {
  if (o.backend == "cuda")
    return Fail(kExitFailure, "--backend cuda: the CUDA backend is not built yet; use cpu");
  // This worker's place in the job: from heiretsu run, mpirun, srun or torchrun.
  launch::RankEnv me;
  {
    std::string error;
    std::optional<launch::RankEnv> env = launch::RankFromEnvironment(&error);
    if (!error.empty()) return Fail(kExitBadInput, error);
    if (env) me = *env;
  }
  const bool leader = me.rank == 0;  // logs, metrics and checkpoints

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
  if (mesh.tp() > 1 || mesh.pp() > 1 || mesh.ep() > 1)
    return Fail(kExitFailure, loaded.path +
                                  ": tensor, pipeline and expert parallelism are not "
                                  "built yet");
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

  exec::Executor executor(loaded);
  std::unique_ptr<comm::Communicator> dp_group;
  if (me.world_size > 1) {
    const char* store = std::getenv("HEIRETSU_STORE");
    if (!store || !*store)
      return Fail(kExitBadInput,
                  "a multi-rank run needs HEIRETSU_STORE, a directory shared by "
                  "the ranks for rendezvous ('heiretsu run' sets it)");
    comm::GlooOptions g;
    g.store_dir = store;
    g.group = "dp";
    g.rank = me.rank;
    g.size = me.world_size;
    // The address this rank listens on: loopback unless the job spans machines.
    if (const char* addr = std::getenv("HEIRETSU_ADDR"); addr && *addr) g.hostname = addr;
    if (const char* t = std::getenv("HEIRETSU_COMM_TIMEOUT_MS"))
      g.timeout = std::chrono::milliseconds(std::max(1L, std::atol(t)));
    std::string error;
    dp_group = comm::ConnectGloo(g, &error);
    if (!dp_group) return Fail(kExitFailure, error);
    executor.set_communicator(plan::kAxisDp, dp_group.get());
  }
  std::vector<checkpoint::Tensor> state = checkpoint::TrainingState(&executor);
  // ZeRO-1 moments hold this rank's dp shard only, while a checkpoint holds logical
  // tensors: those entries point at whole-tensor host copies instead, gathered from
  // every rank before a save and sharded out again after a load.
  ShardedMoments sharded(p, &executor, dp_group.get());
  sharded.Redirect(&state);
  uint64_t seed = o.seed;
  int64_t first_step = 1;
  if (!o.resume.empty()) {
    std::string dir;
    std::vector<std::string> warnings;
    std::optional<data::DataError> err =
        checkpoint::FindLatestCheckpoint(o.resume, &dir, &warnings);
    for (const std::string& w : warnings)
      std::fprintf(stderr, "heiretsu-rank: warning: %s\n", w.c_str());
    if (err) return Fail(*err);
    checkpoint::Header header;
    if (auto load_err = checkpoint::LoadCheckpoint(dir, model, state, &header))
      return Fail(*load_err);
    sharded.Scatter();
    if (o.seed_given && o.seed != header.seed)
      return Fail(kExitBadInput, "--seed " + std::to_string(o.seed) + " differs from the seed " +
                                     std::to_string(header.seed) + " of checkpoint " + dir +
                                     " (leave --seed out to continue its run)");
    if (header.global_batch != global_batch || header.seq != seq)
      return Fail(kExitBadInput, "checkpoint " + dir + " comes from a run of global batch " +
                                     std::to_string(header.global_batch) + " x seq " +
                                     std::to_string(header.seq) + ", this plan has " +
                                     std::to_string(global_batch) + " x " + std::to_string(seq) +
                                     ": its data position would not carry over");
    if (header.step > o.steps)
      return Fail(kExitBadInput, "checkpoint " + dir + " is at step " +
                                     std::to_string(header.step) + ", past --steps " +
                                     std::to_string(o.steps));
    seed = header.seed;
    first_step = header.step + 1;
    if (leader)
      std::printf("resumed: %s (step %lld, seed %llu)\n", dir.c_str(),
                  static_cast<long long>(header.step), static_cast<unsigned long long>(seed));
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
  for (int64_t step = first_step; step <= o.steps; ++step) {
    exec::StepOptions options;
    options.lr = cli::LearningRate(o, step);
    options.weight_decay = o.weight_decay;
    options.grad_clip = o.grad_clip;
    options.step = step;
    // The sampler numbers steps from 0: user step s takes the global batch of sampler
    // step s - 1, and microbatch m its rows [m * B, (m + 1) * B).
    auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
      const int64_t row = me.rank * per_rank + m * batch;
      sampler->FillBatchRows(step - 1, global_batch, row, row + batch, tokens, targets);
    };
    exec::StepResult result;
    const auto start = std::chrono::steady_clock::now();
    if (auto err = executor.Step(fill, options, &result)) return Fail(kExitFailure, *err);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double step_ms = seconds * 1e3;
    const double tokens_per_s = static_cast<double>(tokens_per_step) / seconds;

    if (metrics) {
      char loss_hex[40];
      std::snprintf(loss_hex, sizeof loss_hex, "%a", result.loss);
      std::fprintf(metrics.get(),
                   "{\"step\":%lld,\"loss\":%s,\"loss_hex\":\"%s\",\"lr\":%s,\"grad_norm\":%s,"
                   "\"tokens_per_s\":%s,\"step_ms\":%s}\n",
                   static_cast<long long>(step), JsonNumber(result.loss, "%.17g").c_str(), loss_hex,
                   JsonNumber(options.lr, "%.9g").c_str(),
                   JsonNumber(result.grad_norm, "%.9g").c_str(),
                   JsonNumber(tokens_per_s, "%.6g").c_str(), JsonNumber(step_ms, "%.6g").c_str());
      // Flushed per line so that a crash leaves only whole lines behind.
      if (std::fflush(metrics.get()) != 0 || std::ferror(metrics.get()))
        return Fail(kExitFailure, o.metrics + ": cannot write: " + std::strerror(errno));
    }
    if (leader && (step % o.log_every == 0 || step == o.steps || step == first_step)) {
      std::printf("step %*lld/%lld | loss %.4f | lr %.2e | grad norm %.4f | %s tok/s | %.1f ms\n",
                  width, static_cast<long long>(step), static_cast<long long>(o.steps), result.loss,
                  options.lr, result.grad_norm, Throughput(tokens_per_s).c_str(), step_ms);
    }
    // Replicas are identical, so rank 0's state is the whole model (with ZeRO-1,
    // once every rank has contributed its moments).
    const bool save =
        !o.save_dir.empty() && ((o.save_every > 0 && step % o.save_every == 0) || step == o.steps);
    if (save)
      if (auto err = sharded.Gather()) return Fail(kExitFailure, *err);
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
