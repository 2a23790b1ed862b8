// The Gloo communicator, with real processes: each test forks `world` children
// that rendezvous through a fresh file store, run collectives and exit 0 only if
// every result is right; a child that crashes, hangs past the test's alarm or
// computes a wrong value fails the test.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/comm/comm.h"

namespace heiretsu::comm {
namespace {

std::string FreshDir() {
  char tmpl[] = "/tmp/heiretsu-comm-XXXXXX";
  return mkdtemp(tmpl);
}

// Runs `body(rank, comm)` in `world` child processes; returns their exit codes.
// `job_ranks`: the members' job ranks, for messages (GlooOptions).
std::vector<int> RunRanks(int world, std::chrono::milliseconds timeout,
                          const std::function<int(int, Communicator&)>& body,
                          const std::vector<int>& job_ranks = {}) {
  const std::string store = FreshDir();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(60);  // a hang fails the test instead of blocking it
      GlooOptions o;
      o.store_dir = store;
      o.group = "test";
      o.rank = r;
      o.size = world;
      o.timeout = timeout;
      o.job_ranks = job_ranks;
      std::unique_ptr<Communicator> comm;
      if (auto err = ConnectGloo(o, &comm)) {
        std::fprintf(stderr, "rank %d: %s\n", r, err->message.c_str());
        _exit(10);
      }
      _exit(body(r, *comm));
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status));
  }
  std::filesystem::remove_all(store);
  return codes;
}

TEST(GlooComm, CollectivesComputeTheRightValues) {
  const int world = 3;
  auto codes = RunRanks(world, std::chrono::seconds(30), [&](int r, Communicator& c) {
    if (c.rank() != r || c.size() != world) return 1;
    // all_reduce sum, max, avg.
    std::vector<float> v = {float(r), float(10 * r + 1)};
    if (c.AllReduce(v.data(), 2, ReduceOp::kSum) || v[0] != 3 || v[1] != 33) return 2;
    std::vector<float> m = {float(r)};
    if (c.AllReduce(m.data(), 1, ReduceOp::kMax) || m[0] != 2) return 3;
    std::vector<float> a = {float(3 * r)};
    if (c.AllReduce(a.data(), 1, ReduceOp::kAvg) || a[0] != 3) return 4;
    // all_gather: rank r contributes {r, r}.
    std::vector<float> in = {float(r), float(r)}, out(2 * world);
    if (c.AllGather(in.data(), out.data(), 2)) return 5;
    for (int k = 0; k < world; ++k)
      if (out[2 * k] != k || out[2 * k + 1] != k) return 6;
    // reduce_scatter: block b of rank r holds r + b; rank r gets sum over ranks.
    std::vector<float> blocks(world), mine(1);
    for (int b = 0; b < world; ++b) blocks[b] = float(r + 100 * b);
    if (c.ReduceScatter(blocks.data(), mine.data(), 1)) return 7;
    if (mine[0] != 0 + 1 + 2 + 300 * r) return 8;
    // all_to_all: rank r sends 10 r + b to rank b.
    std::vector<float> send(world), recv(world);
    for (int b = 0; b < world; ++b) send[b] = float(10 * r + b);
    if (c.AllToAll(send.data(), recv.data(), 1)) return 9;
    for (int b = 0; b < world; ++b)
      if (recv[b] != 10 * b + r) return 10;
    // send / recv around a ring.
    std::vector<float> token = {float(r)}, got(1);
    int next = (r + 1) % world, prev = (r + world - 1) % world;
    if (r % 2 == 0) {
      if (c.Send(token.data(), 1, next) || c.Recv(got.data(), 1, prev)) return 11;
    } else {
      if (c.Recv(got.data(), 1, prev) || c.Send(token.data(), 1, next)) return 12;
    }
    if (got[0] != prev) return 13;
    return c.Barrier() ? 14 : 0;
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

TEST(GlooComm, ASilentPeerIsATimeoutErrorNotAHang) {
  auto start = std::chrono::steady_clock::now();
  auto codes = RunRanks(2, std::chrono::milliseconds(1500), [](int r, Communicator& c) {
    if (r == 1) {
      sleep(3);  // never joins the collective, stays alive
      return 0;
    }
    std::vector<float> v(4, 1.f);
    auto err = c.AllReduce(v.data(), v.size(), ReduceOp::kSum);
    if (!err) return 1;
    std::fprintf(stderr, "rank 0 saw: %s\n", err->message.c_str());
    return err->message.find("all_reduce in group 'test' failed") == 0 ? 42 : 2;
  });
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(codes[0], 42);
  EXPECT_LT(secs, 30.0);
}

TEST(GlooComm, StartedSendsDoNotWaitForThePeersRecv) {
  // Both ranks send first and receive after (1F1B's steady state: an activation
  // one way, a gradient the other): with Send, which waits for the peer's recv,
  // both would wait forever. StartSend returns at once, even while the peer is
  // busy elsewhere; the two messages each way arrive in the order they were posted,
  // whatever their keys; WaitSends then finds them complete.
  const size_t n = size_t{1} << 20;  // 4 MiB: more than a socket buffers
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int r, Communicator& c) {
    const int peer = 1 - r;
    std::vector<float> first(n, float(10 * r + 1)), second(n, float(10 * r + 2));
    std::vector<float> got_first(n), got_second(n);
    if (r == 1) usleep(500 * 1000);  // rank 0's sends must not wait for this
    const auto start = std::chrono::steady_clock::now();
    if (c.StartSend(first.data(), n, peer, 1) || c.StartSend(second.data(), n, peer, 0)) return 1;
    const double posting =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r == 0 && posting > 0.25) return 2;
    if (c.Recv(got_first.data(), n, peer) || c.Recv(got_second.data(), n, peer)) return 3;
    for (size_t i = 0; i < n; i += 4099)
      if (got_first[i] != float(10 * peer + 1) || got_second[i] != float(10 * peer + 2)) return 4;
    if (c.WaitSends(1) || c.WaitSends()) return 5;
    // Nothing is left to wait for; the group still works.
    if (c.WaitSends()) return 6;
    std::vector<float> v = {1.f};
    return c.AllReduce(v.data(), 1, ReduceOp::kSum) || v[0] != 2 ? 7 : 0;
  });
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

TEST(GlooComm, ASendNobodyReceivesIsATimeoutErrorNamingThePeer) {
  // Rank 1 receives the first of rank 0's two sends only: waiting for key 0 (that
  // one) succeeds, waiting for key 1 fails once the group's timeout has passed,
  // naming the peer by its index and job rank, and the group.
  auto start = std::chrono::steady_clock::now();
  auto codes = RunRanks(
      2, std::chrono::milliseconds(1500),
      [](int r, Communicator& c) {
        std::vector<float> a(8, 1.f), b(8, 2.f);
        if (r == 1) {
          if (c.Recv(a.data(), a.size(), 0) || a[0] != 1.f) return 1;
          sleep(4);  // never receives the second, stays alive
          return 0;
        }
        if (c.StartSend(a.data(), a.size(), 1, 0) || c.StartSend(b.data(), b.size(), 1, 1))
          return 2;
        if (auto err = c.WaitSends(0)) {
          std::fprintf(stderr, "rank 0: %s\n", err->message.c_str());
          return 3;
        }
        const auto waiting = std::chrono::steady_clock::now();
        auto err = c.WaitSends(1);
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - waiting).count();
        if (!err) return 4;
        std::fprintf(stderr, "rank 0 saw after %.1f s: %s\n", waited, err->message.c_str());
        if (waited < 1.0 || waited > 10.0) return 5;
        if (err->message.find("send to member 1 (job rank 7) in group 'test' failed") != 0)
          return 6;
        return c.WaitSends() ? 7 : 42;  // the failed send is forgotten
      },
      {6, 7});
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(codes[0], 42);
  EXPECT_EQ(codes[1], 0);
  EXPECT_LT(secs, 30.0);
}

TEST(GlooComm, AnInvalidRankIsRefused) {
  GlooOptions o;
  o.store_dir = FreshDir();
  o.group = "g";
  o.rank = 2;
  o.size = 2;
  std::unique_ptr<Communicator> comm;
  const Status err = ConnectGloo(o, &comm);
  EXPECT_EQ(comm, nullptr);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "group 'g': rank 2 is not in [0, 2)");
  std::filesystem::remove_all(o.store_dir);
}

}  // namespace
}  // namespace heiretsu::comm
