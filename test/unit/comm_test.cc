// The communicators (Gloo over TCP, and shared memory for the collectives), with
// real processes: each test forks `world` children that rendezvous through a fresh
// file store, run collectives and exit 0 only if every result is right; a child
// that crashes, hangs past the test's alarm or computes a wrong value fails the
// test. The collectives' tests run on both transports, and on shared memory also with
// the buffers in arenas the members share (direct, no copies through the segment).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/comm/comm.h"
#include "runtime/comm/shared_arena.h"

namespace heiretsu::comm {
namespace {

std::string FreshDir() {
  char tmpl[] = "/tmp/heiretsu-comm-XXXXXX";
  return mkdtemp(tmpl);
}

// How a test's group moves its data: TCP only, or shared memory with a chunk of
// `slot_bytes` per member (0: the default); `arena`: the buffers lie in an arena
// the members share (Communicator::ShareArena).
struct Transport {
  bool shared_memory = false;
  size_t slot_bytes = 0;
  bool arena = false;
};
constexpr Transport kTcp{false, 0};
constexpr Transport kShm{true, 0};
constexpr Transport kShmTinyChunks{true, 4096};  // 1024 floats: most calls cross chunks
constexpr Transport kShmArena{true, 0, true};

// A child's shared arena (Transport::arena): the bodies' Floats are carved from it
// in allocation order, never reused, so every member's lie at the same offsets and
// the collectives go direct; without it they come from the heap.
std::unique_ptr<SharedArena> g_arena;
size_t g_used = 0;
template <class T>
struct TestAllocator {
  using value_type = T;
  TestAllocator() = default;
  template <class U>
  TestAllocator(const TestAllocator<U>&) {}
  T* allocate(size_t n) {
    if (!g_arena) return std::allocator<T>().allocate(n);
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    if (g_used + bytes > g_arena->bytes()) throw std::bad_alloc();
    T* p = reinterpret_cast<T*>(g_arena->data() + g_used);
    g_used += bytes;
    return p;
  }
  void deallocate(T* p, size_t n) {
    if (!g_arena) std::allocator<T>().deallocate(p, n);
  }
  bool operator==(const TestAllocator&) const { return true; }
  bool operator!=(const TestAllocator&) const { return false; }
};
using Floats = std::vector<float, TestAllocator<float>>;
bool Direct(const Communicator& c) {
  return c.transport().find("direct between the members' arenas") != std::string::npos;
}

// Runs `body(rank, comm)` in `world` child processes; returns their exit codes.
// `job_ranks`: the members' job ranks, for messages (GroupOptions). A child whose
// group did not get the transport asked for exits 11.
std::vector<int> RunRanks(int world, std::chrono::milliseconds timeout,
                          const std::function<int(int, Communicator&)>& body,
                          const std::vector<int>& job_ranks = {}, Transport transport = kTcp) {
  const std::string store = FreshDir();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(60);  // a hang fails the test instead of blocking it
      GroupOptions o;
      o.store_dir = store;
      o.group = "test";
      o.rank = r;
      o.size = world;
      o.timeout = timeout;
      o.job_ranks = job_ranks;
      o.shared_memory = transport.shared_memory;
      o.shm_slot_bytes = transport.slot_bytes;
      std::unique_ptr<Communicator> comm;
      if (auto err = ConnectGroup(o, &comm)) {
        std::fprintf(stderr, "rank %d: %s\n", r, err->message.c_str());
        _exit(10);
      }
      if (transport.arena) {
        std::string why;
        g_arena = SharedArena::Create(size_t{64} << 20, &why);
        if (!g_arena) std::fprintf(stderr, "rank %d: %s\n", r, why.c_str());
        if (!g_arena || comm->ShareArena(g_arena->data(), g_arena->bytes(), g_arena->fd(), &why))
          _exit(10);
        if (world > 1 && !Direct(*comm)) {
          std::fprintf(stderr, "rank %d: not direct: %s\n", r, why.c_str());
          _exit(12);
        }
      }
      const bool shm = comm->transport().find("shared memory") == 0;
      if (world > 1 && shm != transport.shared_memory) {
        std::fprintf(stderr, "rank %d: transport %s\n", r, comm->transport().c_str());
        _exit(11);
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

class Collectives : public ::testing::TestWithParam<Transport> {};

TEST_P(Collectives, ComputeTheRightValues) {
  const int world = 3;
  auto codes = RunRanks(world, std::chrono::seconds(30), [&](int r, Communicator& c) {
    if (c.rank() != r || c.size() != world) return 1;
    // all_reduce sum, max, avg.
    Floats v = {float(r), float(10 * r + 1)};
    if (c.AllReduce(v.data(), 2, ReduceOp::kSum) || v[0] != 3 || v[1] != 33) return 2;
    Floats m = {float(r)};
    if (c.AllReduce(m.data(), 1, ReduceOp::kMax) || m[0] != 2) return 3;
    Floats a = {float(3 * r)};
    if (c.AllReduce(a.data(), 1, ReduceOp::kAvg) || a[0] != 3) return 4;
    // all_gather: rank r contributes {r, r}.
    Floats in = {float(r), float(r)}, out(2 * world);
    if (c.AllGather(in.data(), out.data(), 2)) return 5;
    for (int k = 0; k < world; ++k)
      if (out[2 * k] != k || out[2 * k + 1] != k) return 6;
    // reduce_scatter: block b of rank r holds r + b; rank r gets sum over ranks.
    Floats blocks(world), mine(1);
    for (int b = 0; b < world; ++b) blocks[b] = float(r + 100 * b);
    if (c.ReduceScatter(blocks.data(), mine.data(), 1)) return 7;
    if (mine[0] != 0 + 1 + 2 + 300 * r) return 8;
    // all_to_all: rank r sends 10 r + b to rank b.
    Floats send(world), recv(world);
    for (int b = 0; b < world; ++b) send[b] = float(10 * r + b);
    if (c.AllToAll(send.data(), recv.data(), 1)) return 9;
    for (int b = 0; b < world; ++b)
      if (recv[b] != 10 * b + r) return 10;
    // send / recv around a ring.
    Floats token = {float(r)}, got(1);
    int next = (r + 1) % world, prev = (r + world - 1) % world;
    if (r % 2 == 0) {
      if (c.Send(token.data(), 1, next) || c.Recv(got.data(), 1, prev)) return 11;
    } else {
      if (c.Recv(got.data(), 1, prev) || c.Send(token.data(), 1, next)) return 12;
    }
    if (got[0] != prev) return 13;
    return c.Barrier() ? 14 : 0;
  }, {}, GetParam());
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

// Sizes that are not multiples of anything (several chunks and a remainder on the
// shared-memory transport), every collective in turn, the results checked exactly
// on every element. The all_reduce's sum is the members' values added in member
// order, ((v0 + v1) + v2) + v3 in float, on every member: values of very
// different magnitudes make any other order give another result.
TEST_P(Collectives, LargeAndOddSizesAreExactAndSummedInMemberOrder) {
  for (const int world : {2, 4}) {  // two members: shm_comm.cc's one-pass pair
    auto codes = RunRanks(world, std::chrono::seconds(30), [&](int r, Communicator& c) {
      const auto value = [](int rank, size_t i) {
        const float big[4] = {1e8f, 1.f, -1e8f, 3.f};
        return big[(rank + i) % 4] * static_cast<float>(1 + i % 7);
      };
      for (size_t n : {size_t{1}, size_t{17}, size_t{1023}, size_t{5000}, size_t{70001}}) {
        Floats v(n), m(n), a(n);
        for (size_t i = 0; i < n; ++i) v[i] = m[i] = a[i] = value(r, i);
        if (c.AllReduce(v.data(), n, ReduceOp::kSum) || c.AllReduce(m.data(), n, ReduceOp::kMax) ||
            c.AllReduce(a.data(), n, ReduceOp::kAvg))
          return 1;
        for (size_t i = 0; i < n; ++i) {
          float sum = value(0, i), most = value(0, i);
          for (int k = 1; k < world; ++k) {
            sum += value(k, i);
            most = std::max(most, value(k, i));
          }
          if (c.transport().find("shared memory") == 0 && v[i] != sum)
            return 2;  // the member order (a ring's order may differ)
          if (std::abs(v[i] - sum) > 256.f || m[i] != most || std::abs(a[i] - v[i] / world) > 64.f)
            return 3;
        }
        // all_gather: member k's block is value(k, i).
        Floats in(n), out(n * world);
        for (size_t i = 0; i < n; ++i) in[i] = value(r, i);
        if (c.AllGather(in.data(), out.data(), n)) return 4;
        for (int k = 0; k < world; ++k)
          for (size_t i = 0; i < n; ++i)
            if (out[k * n + i] != value(k, i)) return 5;
        // reduce_scatter: block b of member k is value(k, b * n + i); member r gets
        // the sum over k of block r.
        Floats blocks(n * world), mine(n);
        for (size_t i = 0; i < n * world; ++i) blocks[i] = value(r, i);
        Floats mine_avg(n), mine_max(n);
        if (c.ReduceScatter(blocks.data(), mine.data(), n) ||
            c.ReduceScatter(blocks.data(), mine_avg.data(), n, ReduceOp::kAvg) ||
            c.ReduceScatter(blocks.data(), mine_max.data(), n, ReduceOp::kMax))
          return 6;
        for (size_t i = 0; i < n; ++i) {
          float sum = value(0, r * n + i), most = value(0, r * n + i);
          for (int k = 1; k < world; ++k) {
            sum += value(k, r * n + i);
            most = std::max(most, value(k, r * n + i));
          }
          if (std::abs(mine[i] - sum) > 256.f || mine_max[i] != most) return 7;
          if (c.transport().find("shared memory") == 0 &&
              (mine[i] != sum || mine_avg[i] != sum * (1.0f / static_cast<float>(world))))
            return 8;
          if (std::abs(mine_avg[i] - mine[i] / static_cast<float>(world)) > 64.f) return 14;
        }
        // In place (comm.h): all_gather from this member's own block of the output,
        // reduce_scatter into this member's own block of the input; the same values.
        Floats gathered(n * world, -1.f);
        std::copy(in.begin(), in.end(), gathered.begin() + r * n);
        if (c.AllGather(gathered.data() + r * n, gathered.data(), n)) return 10;
        if (gathered != out) return 11;
        Floats scattered = blocks;
        if (c.ReduceScatter(scattered.data(), scattered.data() + r * n, n)) return 12;
        if (!std::equal(mine.begin(), mine.end(), scattered.begin() + r * n)) return 13;
        scattered = blocks;
        if (c.ReduceScatter(scattered.data(), scattered.data() + r * n, n, ReduceOp::kAvg))
          return 15;
        if (!std::equal(mine_avg.begin(), mine_avg.end(), scattered.begin() + r * n)) return 16;
      }
      return c.Barrier() ? 9 : 0;
    }, {}, GetParam());
    for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "world " << world << " rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, Collectives,
                         ::testing::Values(kTcp, kShm, kShmTinyChunks, kShmArena),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(!info.param.shared_memory ? "Tcp"
                                              : info.param.arena       ? "ShmArena"
                                              : info.param.slot_bytes  ? "ShmTinyChunks"
                                                                       : "Shm");
                         });

class Failures : public ::testing::TestWithParam<Transport> {};

TEST_P(Failures, ASilentPeerIsATimeoutErrorNotAHang) {
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
  }, {}, GetParam());
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(codes[0], 42);
  EXPECT_LT(secs, 30.0);
}

INSTANTIATE_TEST_SUITE_P(Transports, Failures, ::testing::Values(kTcp, kShm),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(info.param.shared_memory ? "Shm" : "Tcp");
                         });

// On shared memory a member whose process is gone is named at once, not after the
// group's timeout (here 60 s), and the communicator refuses what comes after.
TEST(ShmComm, AMemberThatExitedIsNamedWithinASecond) {
  const auto start = std::chrono::steady_clock::now();
  auto codes = RunRanks(
      3, std::chrono::seconds(60),
      [](int r, Communicator& c) {
        std::vector<float> v(4096, 1.f);
        if (c.AllReduce(v.data(), v.size(), ReduceOp::kSum) || v[0] != 3.f) return 1;
        if (r == 2) _exit(0);  // leaves without a word
        const auto waiting = std::chrono::steady_clock::now();
        auto err = c.AllReduce(v.data(), v.size(), ReduceOp::kSum);
        const double waited =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - waiting).count();
        if (!err) return 2;
        std::fprintf(stderr, "rank %d saw after %.2f s: %s\n", r, waited, err->message.c_str());
        if (waited > 1.0) return 3;
        if (err->message.rfind("all_reduce in group 'test' failed: member 2 (job rank 5) (process ",
                               0) != 0 ||
            err->message.find(") exited") == std::string::npos)
          return 4;
        auto again = c.AllGather(v.data(), v.data(), 1);
        if (!again || again->message.find("an earlier collective of the group failed") ==
                          std::string::npos)
          return 5;
        return 42;
      },
      {3, 4, 5}, kShm);
  EXPECT_EQ(codes[0], 42);
  EXPECT_EQ(codes[1], 42);
  EXPECT_EQ(codes[2], 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
}

// The segment is unlinked once every member has mapped it: nothing is left in
// /dev/shm, whatever happens to the job later.
TEST(ShmComm, TheSegmentLeavesNothingInDevShm) {
  const auto count = [] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
      n += e.path().filename().string().rfind("heiretsu-", 0) == 0;
    return n;
  };
  const int before = count();
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int, Communicator& c) {
    std::vector<float> v(8, 1.f);
    if (c.AllReduce(v.data(), v.size(), ReduceOp::kSum) || v[0] != 2.f) return 1;
    return count() == before ? 0 : 2;
  }, {}, kShm);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

// MapOperand (comm.h): with shared arenas every member gets every member's copy of
// a buffer that lies in each one's arena, at whatever offset, and may write into
// another's (ordered by a barrier); a buffer outside any one member's arena maps
// nowhere, on every member; without shared arenas nothing maps.
TEST(ShmComm, MapOperandGivesEveryMembersCopy) {
  for (const int world : {2, 3}) {
    auto codes = RunRanks(world, std::chrono::seconds(30), [&](int r, Communicator& c) {
      const size_t n = 1000;
      Floats pad(r == 1 ? 16 : 0);  // member 1's buffer lies 64 bytes further in
      Floats mine(n, -1.f);
      std::vector<float*> peers;
      if (c.MapOperand(mine.data(), n, &peers) || peers.size() != static_cast<size_t>(world) ||
          peers[static_cast<size_t>(r)] != mine.data())
        return 1;
      // Member r writes r + 1 into element r of every other member's copy.
      for (int k = 0; k < world; ++k)
        if (k != r) peers[static_cast<size_t>(k)][r] = float(r + 1);
      if (c.Barrier()) return 2;
      for (int k = 0; k < world; ++k)
        if (mine[static_cast<size_t>(k)] != (k == r ? -1.f : float(k + 1))) return 3;
      std::vector<float> heap(n);
      if (c.MapOperand(r == world - 1 ? heap.data() : mine.data(), n, &peers) || !peers.empty())
        return 4;
      return c.Barrier() ? 5 : 0;
    }, {}, kShmArena);
    for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "world " << world << " rank " << r;
  }
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int, Communicator& c) {
    Floats mine(8);
    std::vector<float*> peers = {nullptr};
    return c.MapOperand(mine.data(), 8, &peers) || !peers.empty() ? 1 : 0;
  }, {}, kShm);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

// With shared arenas a collective goes direct when every member's operand lies in
// its arena, at any offset; otherwise (outside the arena on any one member) every
// member takes the chunks through the segment. Either way the values are the
// member-order sums, exactly.
TEST(ShmComm, DirectWhenEveryMembersBufferIsInItsArena) {
  const int world = 3;
  auto codes = RunRanks(world, std::chrono::seconds(30), [&](int r, Communicator& c) {
    const size_t n = 30011;
    const auto value = [](int rank, size_t i) {
      const float big[3] = {1e8f, 1.f, -1e8f};
      return big[(rank + i) % 3] * static_cast<float>(1 + i % 5);
    };
    // v[i] is the member-order sum of every member's value at first + i.
    const auto check = [&](const float* v, size_t first) {
      for (size_t i = 0; i < n; ++i) {
        float sum = value(0, first + i);
        for (int k = 1; k < world; ++k) sum += value(k, first + i);
        if (v[i] != sum) return false;
      }
      return true;
    };
    for (const char* layout : {"same", "shifted", "outside"}) {
      // "shifted": member 1's buffers start 64 bytes later; "outside": member 2's
      // are on the heap.
      Floats pad(std::string(layout) == "shifted" && r == 1 ? 16 : 0);
      std::vector<float> heap(n * world);
      Floats arena(n * world);
      float* v = std::string(layout) == "outside" && r == 2 ? heap.data() : arena.data();
      for (size_t i = 0; i < n; ++i) v[i] = value(r, i);
      if (c.AllReduce(v, n, ReduceOp::kSum) || !check(v, 0)) return 1;
      for (size_t i = 0; i < n * world; ++i) v[i] = value(r, i);
      if (c.ReduceScatter(v, v + r * n, n) || !check(v + r * n, r * n)) return 2;
      for (size_t i = 0; i < n; ++i) v[r * n + i] = value(r, i);
      if (c.AllGather(v + r * n, v, n)) return 3;
      for (int k = 0; k < world; ++k)
        for (size_t i = 0; i < n; ++i)
          if (v[k * n + i] != value(k, i)) return 4;
    }
    return c.Barrier() ? 5 : 0;
  }, {}, kShmArena);
  for (int r = 0; r < world; ++r) EXPECT_EQ(codes[r], 0) << "rank " << r;
}

// A send given up after its wait failed is withdrawn: the receiver that comes for it
// later fails instead of reading data the sender may already have reused.
TEST(ShmComm, AWithdrawnSendIsNeverRead) {
  auto codes = RunRanks(2, std::chrono::milliseconds(1000), [&](int r, Communicator& c) {
    Floats v(16, float(r + 1));
    if (r == 0) {
      if (c.StartSend(v.data(), v.size(), 1, 0)) return 1;
      if (!c.WaitSends(0)) return 2;  // nobody received it within the timeout
      return 42;
    }
    usleep(2500 * 1000);  // comes after the sender gave up
    auto err = c.Recv(v.data(), v.size(), 0);
    if (!err) return 3;
    std::fprintf(stderr, "rank 1: %s\n", err->message.c_str());
    if (err->message.find("gave the message up") == std::string::npos) return 4;
    return v[0] == 2.f ? 42 : 5;  // untouched
  }, {}, kShmArena);
  EXPECT_EQ(codes[0], 42);
  EXPECT_EQ(codes[1], 42);
}

// A member without an arena in a memory file: no member goes direct, each says why,
// and the collectives still work.
TEST(ShmComm, ArenasAreSharedOnlyWhenEveryMemberHasOne) {
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int r, Communicator& c) {
    auto arena = SharedArena::Create(size_t{1} << 20);
    if (!arena) return 1;
    std::string why;
    if (c.ShareArena(arena->data(), arena->bytes(), r == 1 ? -1 : arena->fd(), &why)) return 2;
    if (Direct(c)) return 3;
    std::fprintf(stderr, "rank %d: %s\n", r, why.c_str());
    if (why != (r == 0 ? "member 1's arena is not in a memory file"
                       : "this member's arena is not in a memory file"))
      return 4;
    auto* v = reinterpret_cast<float*>(arena->data());
    v[0] = float(r + 1);
    return c.AllReduce(v, 1, ReduceOp::kSum) || v[0] != 3.f ? 5 : 0;
  }, {}, kShm);
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

// Point to point over TCP, and with shared arenas through the pair's mailboxes
// (shm_comm.cc: data in the sender's arena is copied straight out of it, other data
// still goes over TCP, in posting order).
class PointToPoint : public ::testing::TestWithParam<Transport> {};

TEST_P(PointToPoint, StartedSendsDoNotWaitForThePeersRecv) {
  // Both ranks send first and receive after (1F1B's steady state: an activation
  // one way, a gradient the other): with Send, which waits for the peer's recv,
  // both would wait forever. StartSend returns at once, even while the peer is
  // busy elsewhere; the messages each way arrive in the order they were posted,
  // whatever their keys and wherever their data lies (`second` is on the heap, so
  // with shared arenas it goes over TCP between two that do not); WaitSends then
  // finds them complete.
  const size_t n = size_t{1} << 20;  // 4 MiB: more than a socket buffers
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int r, Communicator& c) {
    const int peer = 1 - r;
    Floats first(n, float(10 * r + 1)), third(n, float(10 * r + 3));
    std::vector<float> second(n, float(10 * r + 2));
    Floats got_first(n), got_second(n), got_third(n);
    if (r == 1) usleep(500 * 1000);  // rank 0's sends must not wait for this
    const auto start = std::chrono::steady_clock::now();
    if (c.StartSend(first.data(), n, peer, 1) || c.StartSend(second.data(), n, peer, 0) ||
        c.StartSend(third.data(), n, peer, 1))
      return 1;
    const double posting =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r == 0 && posting > 0.25) return 2;
    if (c.Recv(got_first.data(), n, peer) || c.Recv(got_second.data(), n, peer) ||
        c.Recv(got_third.data(), n, peer))
      return 3;
    for (size_t i = 0; i < n; i += 4099)
      if (got_first[i] != float(10 * peer + 1) || got_second[i] != float(10 * peer + 2) ||
          got_third[i] != float(10 * peer + 3))
        return 4;
    if (c.WaitSends(1) || c.WaitSends()) return 5;
    // Nothing is left to wait for; the group still works.
    if (c.WaitSends()) return 6;
    Floats v = {1.f};
    if (c.AllReduce(v.data(), 1, ReduceOp::kSum) || v[0] != 2) return 7;
    // Blocking sends around the pair, more than the mailboxes hold in a row.
    Floats token(3, float(r)), got(3);
    for (int k = 0; k < 40; ++k) {
      token[0] = float(100 * r + k);
      if (r == 0 ? c.Send(token.data(), 3, peer) || c.Recv(got.data(), 3, peer)
                 : c.Recv(got.data(), 3, peer) || c.Send(token.data(), 3, peer))
        return 8;
      if (got[0] != float(100 * peer + k) || got[1] != float(peer)) return 9;
    }
    return 0;
  }, {}, GetParam());
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

TEST_P(PointToPoint, ASendNobodyReceivesIsATimeoutErrorNamingThePeer) {
  // Rank 1 receives the first of rank 0's two sends only: waiting for key 0 (that
  // one) succeeds, waiting for key 1 fails once the group's timeout has passed,
  // naming the peer by its index and job rank, and the group.
  auto start = std::chrono::steady_clock::now();
  auto codes = RunRanks(
      2, std::chrono::milliseconds(1500),
      [](int r, Communicator& c) {
        Floats a(8, 1.f), b(8, 2.f);
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
      {6, 7}, GetParam());
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(codes[0], 42);
  EXPECT_EQ(codes[1], 0);
  EXPECT_LT(secs, 30.0);
}

// More started sends each way than the mailboxes hold, before either member
// receives: StartSend still returns at once (the shared-memory transport queues
// what finds its mailbox full and posts it from its later calls), and everything
// arrives in order.
TEST_P(PointToPoint, ManyStartedSendsEachWayBeforeAnyRecv) {
  auto codes = RunRanks(2, std::chrono::seconds(30), [&](int r, Communicator& c) {
    const int peer = 1 - r, count = 40;
    const size_t n = 64;
    std::vector<Floats> out, in;
    for (int k = 0; k < count; ++k) {
      out.emplace_back(n, float(1000 * r + k));
      in.emplace_back(n, -1.f);
    }
    for (int k = 0; k < count; ++k)
      if (c.StartSend(out[k].data(), n, peer, k % 3)) return 1;
    for (int k = 0; k < count; ++k) {
      if (c.Recv(in[k].data(), n, peer)) return 2;
      if (in[k][0] != float(1000 * peer + k) || in[k][n - 1] != float(1000 * peer + k)) return 3;
    }
    return c.WaitSends(1) || c.WaitSends() ? 4 : 0;
  }, {}, GetParam());
  EXPECT_EQ(codes[0], 0);
  EXPECT_EQ(codes[1], 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, PointToPoint, ::testing::Values(kTcp, kShmArena),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(info.param.arena ? "ShmArena" : "Tcp");
                         });

TEST(GlooComm, AnInvalidRankIsRefused) {
  GroupOptions o;
  o.store_dir = FreshDir();
  o.group = "g";
  o.rank = 2;
  o.size = 2;
  std::unique_ptr<Communicator> comm;
  const Status err = ConnectGroup(o, &comm);
  EXPECT_EQ(comm, nullptr);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "group 'g': rank 2 is not in [0, 2)");
  std::filesystem::remove_all(o.store_dir);
}

}  // namespace
}  // namespace heiretsu::comm
