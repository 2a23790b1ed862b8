// Collective benchmark: all_reduce (sum), reduce_scatter and all_gather between
// --ranks processes on this machine, over each transport (TCP through Gloo; shared
// memory, runtime/comm/shm_comm.h, through the segment's chunks; and shared memory
// with the buffers in arenas the members share, "shm-arena": direct, as heiretsu
// run's CPU ranks do), at a range of sizes. The ranks are forked
// children that rendezvous through a fresh file store, as heiretsu run's workers do.
//
// Each size runs --reps times after one warm-up, each repetition between barriers;
// the figure is the median over repetitions of rank 0's time. `bus_gb_per_s` is
// the usual bus bandwidth of the collective: all_reduce 2 (p-1)/p x bytes / time,
// reduce_scatter and all_gather (p-1)/p x bytes / time (bytes: the whole vector,
// p x the block for those two); for send_recv, a blocking send from member 0 to
// member 1 and back (the others idle), the figure is half the round trip and
// `bus_gb_per_s` bytes over it: one stage-to-stage hand-off. `cpu_ms` is rank 0's CPU time (user + system, all its threads) per
// repetition: what the collective takes from the cores that would be computing.
//
// usage: heiretsu-bench-comm [--ranks 2] [--reps 5] [--max-mb 128] [--slot-kb K]
// (--slot-kb: the shared-memory chunk per member, GroupOptions::shm_slot_bytes;
// default 4096)
// Prints one JSON line per (transport, collective, size).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/comm/comm.h"
#include "runtime/comm/shared_arena.h"

using namespace heiretsu;
using Clock = std::chrono::steady_clock;

namespace {

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);  // every thread of the rank: Gloo's too
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

const char* const kTransports[] = {"tcp", "shm", "shm-arena"};

int Rank(int r, int ranks, int reps, size_t max_bytes, int transport, size_t slot_bytes,
         const std::string& store) {
  const bool shm = transport > 0;
  comm::GroupOptions o;
  o.store_dir = store;
  o.group = kTransports[transport];
  o.rank = r;
  o.size = ranks;
  o.timeout = std::chrono::seconds(120);
  o.shared_memory = shm;
  o.shm_slot_bytes = slot_bytes;
  std::unique_ptr<comm::Communicator> c;
  if (auto err = comm::ConnectGroup(o, &c)) {
    std::fprintf(stderr, "rank %d: %s\n", r, err->message.c_str());
    return 1;
  }
  // The two buffers: on the heap, or one after the other in a shared arena.
  const size_t floats = max_bytes / sizeof(float);
  std::vector<float> heap;
  std::unique_ptr<comm::SharedArena> arena;
  float *data, *out;
  if (transport == 2) {
    std::string why;
    arena = comm::SharedArena::Create(2 * max_bytes, &why);
    if (!arena || c->ShareArena(arena->data(), arena->bytes(), arena->fd(), &why) || !why.empty()) {
      std::fprintf(stderr, "rank %d: no shared arena: %s\n", r, why.c_str());
      return 1;
    }
    data = reinterpret_cast<float*>(arena->data());
  } else {
    heap.resize(2 * floats);
    data = heap.data();
  }
  out = data + floats;
  for (size_t i = 0; i < floats; ++i) data[i] = static_cast<float>(i % 97) * 0.01f;
  for (const char* what : {"all_reduce", "reduce_scatter", "all_gather", "send_recv"}) {
    for (size_t bytes = 4096; bytes <= max_bytes; bytes *= 8) {
      const size_t n = bytes / sizeof(float), block = n / static_cast<size_t>(ranks);
      std::vector<double> wall, cpu;
      for (int rep = 0; rep <= reps; ++rep) {
        if (c->Barrier()) return 2;
        const double c0 = CpuSeconds();
        const auto t0 = Clock::now();
        Status err;
        if (std::strcmp(what, "all_reduce") == 0)
          err = c->AllReduce(data, n, comm::ReduceOp::kSum);
        else if (std::strcmp(what, "reduce_scatter") == 0)
          err = c->ReduceScatter(data, out, block);
        else if (std::strcmp(what, "all_gather") == 0)
          err = c->AllGather(data, out, block);
        else if (r == 0) {  // send_recv: a round trip between members 0 and 1
          err = c->Send(data, n, 1);
          if (!err) err = c->Recv(out, n, 1);
        } else if (r == 1) {
          err = c->Recv(out, n, 0);
          if (!err) err = c->Send(out, n, 0);
        }
        double t = std::chrono::duration<double>(Clock::now() - t0).count();
        if (std::strcmp(what, "send_recv") == 0) t /= 2;  // one way
        const double ct = CpuSeconds() - c0;
        if (err) {
          std::fprintf(stderr, "rank %d: %s\n", r, err->message.c_str());
          return 3;
        }
        if (std::strcmp(what, "all_reduce") == 0)  // keep the values finite and small
          for (size_t i = 0; i < n; i += 1) data[i] *= 1.0f / static_cast<float>(ranks);
        if (rep > 0) {
          wall.push_back(t);
          cpu.push_back(ct);
        }
      }
      if (r != 0) continue;
      const double t = Median(wall);
      const double factor = std::strcmp(what, "send_recv") == 0  ? 1.0
                            : std::strcmp(what, "all_reduce") == 0 ? 2.0 * (ranks - 1) / ranks
                                                                   : 1.0 * (ranks - 1) / ranks;
      std::printf(
          "{\"transport\": \"%s\", \"collective\": \"%s\", \"ranks\": %d, \"bytes\": %zu, "
          "\"median_ms\": %.3f, \"bus_gb_per_s\": %.2f, \"cpu_ms\": %.3f, \"reps\": %d, "
          "\"described\": \"%s\"}\n",
          kTransports[transport], what, ranks, bytes, t * 1e3, factor * bytes / t / 1e9,
          Median(cpu) * 1e3, reps, c->transport().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int ranks = 2, reps = 5;
  long max_mb = 128, slot_kb = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (flag == "--ranks" && v >= 2 && v <= 64) ranks = static_cast<int>(v);
    else if (flag == "--reps" && v >= 1) reps = static_cast<int>(v);
    else if (flag == "--max-mb" && v >= 1 && v <= 4096) max_mb = v;
    else if (flag == "--slot-kb" && v >= 4 && v <= (1 << 20)) slot_kb = v;
    else {
      std::fprintf(stderr, "heiretsu-bench-comm: bad flag %s %s\n"
                   "usage: heiretsu-bench-comm [--ranks 2..64] [--reps N] [--max-mb 1..4096] [--slot-kb 4..]\n",
                   argv[i], argv[i + 1]);
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "heiretsu-bench-comm: %s needs a value\n", argv[argc - 1]);
    return 2;
  }
  int failed = 0;
  for (int transport = 0; transport < 3; ++transport) {
    char tmpl[] = "/tmp/heiretsu-bench-comm-XXXXXX";
    const std::string store = mkdtemp(tmpl);
    std::vector<pid_t> pids;
    for (int r = 0; r < ranks; ++r) {
      const pid_t pid = fork();
      if (pid == 0)
        _exit(Rank(r, ranks, reps, static_cast<size_t>(max_mb) << 20, transport,
                   static_cast<size_t>(slot_kb) << 10, store));
      pids.push_back(pid);
    }
    for (pid_t pid : pids) {
      int status = 0;
      waitpid(pid, &status, 0);
      failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    std::filesystem::remove_all(store);
  }
  return failed ? 1 : 0;
}
