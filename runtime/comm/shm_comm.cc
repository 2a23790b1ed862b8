// Shared-memory collectives; see shm_comm.h for the protocol.
#include "runtime/comm/shm_comm.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <random>

#include "runtime/comm/shared_arena.h"

namespace heiretsu::comm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMagic = 0x6865697265747375ull;  // "heiretsu"
constexpr size_t kLine = 64;
constexpr size_t kDefaultSlotBytes = size_t{4} << 20;
constexpr size_t kDefaultSegmentDataBytes = size_t{64} << 20;
constexpr size_t kMinSlotBytes = size_t{4} << 10;

// The segment: a header, one record per member, then 2 x size slots.
struct Header {
  uint64_t magic;
  uint64_t nonce;  // rank 0's random number: proves the members opened one segment
  uint64_t size;
  uint64_t slot_floats;
  alignas(kLine) std::atomic<uint32_t> arrived;  // barriers x size, mod 2^32: the futex
};
struct alignas(kLine) Member {
  std::atomic<uint32_t> barriers;  // how many barriers this member has reached
  int32_t pid;
  uint64_t pid_namespace;  // the inode of /proc/self/ns/pid: pids compare only within one
  // With shared arenas: the collective this member is in, the offset of its operand
  // in its arena (kElsewhere: not in it) and its size; written before the call's
  // first barrier, read by the others before its next one.
  uint64_t call, call_offset, call_n;
};
static_assert(sizeof(Member) == kLine);
constexpr uint64_t kElsewhere = ~uint64_t{0};
enum Call : uint64_t { kCallAllReduce = 1, kCallAllGather, kCallReduceScatter, kCallMapOperand };
constexpr size_t kBlockFloats = 2048;  // a direct collective's pieces: 8 KiB, in L1

// A mailbox for point-to-point messages from one member to another (used once the
// arenas are shared): message k (1, 2, ...) of the pair goes in box k % kMailboxes.
constexpr size_t kMailboxes = 16;
struct alignas(kLine) Mailbox {
  std::atomic<uint32_t> posted;     // the number (mod 2^32) of the last message put in it (a futex)
  std::atomic<uint32_t> taken;      // ... of the last message taken from it (a futex)
  std::atomic<uint32_t> claimed;    // ... of the last message the receiver began to copy
  std::atomic<uint32_t> withdrawn;  // ... of the last message its sender gave up
  uint64_t offset;                  // where the data lies in the sender's arena; kElsewhere: TCP
  uint64_t n;                       // floats
};
static_assert(sizeof(Mailbox) == kLine);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Whether process `pid` has exited: gone, or a zombie its parent has not reaped.
bool ProcessGone(int32_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  char path[32], state = 0;
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (FILE* f = std::fopen(path, "r")) {
    // "pid (comm) S ...": the state follows the last ')'.
    char line[512];
    const size_t n = std::fread(line, 1, sizeof line - 1, f);
    std::fclose(f);
    line[n] = '\0';
    if (const char* close = std::strrchr(line, ')'); close && close[1] == ' ') state = close[2];
  }
  return state == 'Z' || state == 'X';
}

uint64_t PidNamespace() {
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// A uint32 carried through AllGather in a float's bits (Gloo copies bytes).
float Bits(uint32_t v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
uint32_t Bits(float f) {
  uint32_t v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

std::string SegmentName(uint32_t pid, uint64_t nonce) {
  char name[64];
  std::snprintf(name, sizeof name, "/heiretsu-%u-%016llx", pid,
                static_cast<unsigned long long>(nonce));
  return name;
}

class Segment {
 public:
  ~Segment() {
    if (base_) ::munmap(base_, bytes_);
  }
  static size_t BytesFor(size_t size, size_t slot_floats) {
    return RoundUp(sizeof(Header), kLine) + size * sizeof(Member) +
           size * size * kMailboxes * sizeof(Mailbox) + 2 * size * slot_floats * sizeof(float) +
           kLine;
  }
  // Rank 0: creates and sizes it (reserving its pages: a full /dev/shm fails here,
  // not as a SIGBUS later). Empty string on success, else why not.
  std::string Create(const std::string& name, size_t size, size_t slot_floats, uint64_t nonce) {
    bytes_ = BytesFor(size, slot_floats);
    const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return std::string("shm_open: ") + std::strerror(errno);
    const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes_));
    if (rc != 0) {
      ::close(fd);
      ::shm_unlink(name.c_str());
      return std::string("reserving ") + std::to_string(bytes_) + " bytes: " + std::strerror(rc);
    }
    std::string why = Map(fd);
    ::close(fd);
    if (!why.empty()) {
      ::shm_unlink(name.c_str());
      return why;
    }
    Header* h = header();
    h->nonce = nonce;
    h->size = size;
    h->slot_floats = slot_floats;
    new (&h->arrived) std::atomic<uint32_t>(0);
    for (size_t r = 0; r < size; ++r) new (&member(r)->barriers) std::atomic<uint32_t>(0);
    for (size_t k = 0; k < size * size * kMailboxes; ++k) {
      new (&mailboxes()[k].posted) std::atomic<uint32_t>(0);
      new (&mailboxes()[k].taken) std::atomic<uint32_t>(0);
      new (&mailboxes()[k].claimed) std::atomic<uint32_t>(0);
      new (&mailboxes()[k].withdrawn) std::atomic<uint32_t>(0);
    }
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kMagic;
    return {};
  }
  // The other members: opens it and checks it is rank 0's.
  std::string Open(const std::string& name, size_t size, size_t slot_floats, uint64_t nonce) {
    bytes_ = BytesFor(size, slot_floats);
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0600);
    if (fd < 0) return std::string("shm_open: ") + std::strerror(errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes_) {
      ::close(fd);
      return "the segment has the wrong size";
    }
    std::string why = Map(fd);
    ::close(fd);
    if (!why.empty()) return why;
    const Header* h = header();
    if (h->magic != kMagic || h->nonce != nonce || h->size != size ||
        h->slot_floats != slot_floats)
      return "the segment is not this group's";
    return {};
  }

  Header* header() const { return static_cast<Header*>(base_); }
  Member* member(size_t r) const {
    return reinterpret_cast<Member*>(static_cast<char*>(base_) + RoundUp(sizeof(Header), kLine)) +
           r;
  }
  // The mailboxes from member f to member t: mailboxes() + (f * size + t) * kMailboxes.
  Mailbox* mailboxes() const { return reinterpret_cast<Mailbox*>(member(header()->size)); }
  float* slot(size_t set, size_t r) const {
    const size_t size = header()->size, slot_floats = header()->slot_floats;
    auto* data = reinterpret_cast<float*>(mailboxes() + size * size * kMailboxes);
    return data + (set * size + r) * slot_floats;
  }

 private:
  std::string Map(int fd) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return std::string("mmap: ") + std::strerror(errno);
    base_ = p;
    return {};
  }
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

long Futex(std::atomic<uint32_t>* word, int op, uint32_t value, const timespec* timeout) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

// dst[i] = dst[i] (+ or max) src[i]: one member's contribution, in member order.
void Combine(float* __restrict dst, const float* __restrict src, size_t n, ReduceOp op) {
  if (op == ReduceOp::kMax) {
    for (size_t i = 0; i < n; ++i) dst[i] = std::max(dst[i], src[i]);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] += src[i];
  }
}

// kAvg's last step: the sum times 1 / members, in float.
void Scale(float* x, size_t n, size_t members) {
  const float inv = 1.0f / static_cast<float>(members);
  for (size_t i = 0; i < n; ++i) x[i] *= inv;
}

// out = a op b in one pass, as Combine and Scale compute it (kAvg: the sum times
// 1 / 2). `out` may be `a` or `b` (in place): each element is read before it is
// written, and no other.
void SumPair(const float* a, const float* b, float* out, size_t n, ReduceOp op) {
  const float inv = 1.0f / 2.0f;
  if (op == ReduceOp::kMax) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; ++i) out[i] = std::max(a[i], b[i]);
  } else if (op == ReduceOp::kAvg) {
#pragma GCC ivdep
    for (size_t i = 0; i < n; ++i) out[i] = (a[i] + b[i]) * inv;
  } else {
#pragma GCC ivdep
    for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }
}

class SharedMemoryCommunicator final : public Communicator {
 public:
  SharedMemoryCommunicator(std::unique_ptr<Communicator> tcp, std::unique_ptr<Segment> segment,
                           std::chrono::milliseconds timeout, std::vector<int> job_ranks)
      : tcp_(std::move(tcp)),
        segment_(std::move(segment)),
        timeout_(timeout),
        job_ranks_(std::move(job_ranks)),
        slot_floats_(segment_->header()->slot_floats),
        pid_namespace_(PidNamespace()) {}

  int rank() const override { return tcp_->rank(); }
  int size() const override { return tcp_->size(); }
  const std::string& name() const override { return tcp_->name(); }
  std::string transport() const override {
    return "shared memory (all_reduce, all_gather, reduce_scatter, barrier; " +
           std::to_string(slot_floats_ * sizeof(float) >> 10) + " KiB chunks" +
           (arenas_.empty() ? "" : ", direct between the members' arenas") + ") and " +
           tcp_->transport();
  }

  Status AllReduce(float* data, size_t n, ReduceOp op) override {
    if (n == 0) return std::nullopt;
    Exclusive only(busy_);
    if (auto err = Usable("all_reduce", only)) return err;
    const size_t members = static_cast<size_t>(size()), me = static_cast<size_t>(rank());
    bool direct = false;
    if (auto err = Agree(kCallAllReduce, data, n, n, "all_reduce", &direct)) return err;
    if (direct) {
      // Part `me` (in 16-float lines) summed over the arenas in member order, then
      // written into every member's arena.
      const size_t lines = (n + 15) / 16;
      const size_t lo = std::min(n, lines * me / members * 16);
      const size_t hi = std::min(n, lines * (me + 1) / members * 16);
      alignas(kLine) float sum[kBlockFloats];
      for (size_t i = lo; i < hi; i += kBlockFloats) {
        const size_t len = std::min(kBlockFloats, hi - i);
        std::memcpy(sum, Operand(0) + i, len * sizeof(float));
        for (size_t r = 1; r < members; ++r) Combine(sum, Operand(r) + i, len, op);
        if (op == ReduceOp::kAvg) Scale(sum, len, members);  // as CopyOut does
        for (size_t r = 0; r < members; ++r)
          std::memcpy(Operand(r) + i, sum, len * sizeof(float));
      }
      return Arrive("all_reduce");
    }
    for (size_t off = 0; off < n; off += slot_floats_) {
      const size_t len = std::min(slot_floats_, n - off), set = NextSet();
      std::memcpy(segment_->slot(set, me), data + off, len * sizeof(float));
      if (auto err = Arrive("all_reduce")) return err;
      // Part `me` of the chunk, in 16-float (cache line) pieces.
      const size_t lines = (len + 15) / 16;
      const size_t lo = std::min(len, lines * me / members * 16);
      const size_t hi = std::min(len, lines * (me + 1) / members * 16);
      float* sum = segment_->slot(set, 0);
      for (size_t r = 1; r < members; ++r) Combine(sum + lo, segment_->slot(set, r) + lo, hi - lo, op);
      CopyOut(sum + lo, data + off + lo, hi - lo, op);  // this member's part, while in cache
      if (auto err = Arrive("all_reduce")) return err;
      CopyOut(sum, data + off, lo, op);
      CopyOut(sum + hi, data + off + hi, len - hi, op);
    }
    return std::nullopt;
  }

  Status AllGather(const float* in, float* out, size_t n) override {
    if (n == 0) return std::nullopt;
    Exclusive only(busy_);
    if (auto err = Usable("all_gather", only)) return err;
    const size_t members = static_cast<size_t>(size()), me = static_cast<size_t>(rank());
    bool direct = false;
    if (auto err = Agree(kCallAllGather, in, n, n, "all_gather", &direct)) return err;
    if (direct) {
      for (size_t r = 0; r < members; ++r)
        if (out + r * n != Operand(r)) std::memcpy(out + r * n, Operand(r), n * sizeof(float));
      return Arrive("all_gather");
    }
    for (size_t off = 0; off < n; off += slot_floats_) {
      const size_t len = std::min(slot_floats_, n - off), set = NextSet();
      std::memcpy(segment_->slot(set, me), in + off, len * sizeof(float));
      if (auto err = Arrive("all_gather")) return err;
      for (size_t r = 0; r < members; ++r)
        std::memcpy(out + r * n + off, segment_->slot(set, r), len * sizeof(float));
    }
    return std::nullopt;
  }

  Status ReduceScatter(const float* in, float* out, size_t n,
                       ReduceOp op = ReduceOp::kSum) override {
    if (n == 0) return std::nullopt;
    Exclusive only(busy_);
    if (auto err = Usable("reduce_scatter", only)) return err;
    const size_t members = static_cast<size_t>(size()), me = static_cast<size_t>(rank());
    bool direct = false;
    if (auto err = Agree(kCallReduceScatter, in, n * members, n, "reduce_scatter", &direct))
      return err;
    if (direct && members == 2) {
      SumPair(Operand(0) + me * n, Operand(1) + me * n, out, n, op);
      return Arrive("reduce_scatter");
    }
    if (direct) {
      // Block `me` summed over the arenas in member order (read before written:
      // in place, `out` is this member's own block, which only it reads).
      alignas(kLine) float sum[kBlockFloats];
      for (size_t i = 0; i < n; i += kBlockFloats) {
        const size_t len = std::min(kBlockFloats, n - i);
        std::memcpy(sum, Operand(0) + me * n + i, len * sizeof(float));
        for (size_t r = 1; r < members; ++r) Combine(sum, Operand(r) + me * n + i, len, op);
        if (op == ReduceOp::kAvg) Scale(sum, len, members);
        std::memcpy(out + i, sum, len * sizeof(float));
      }
      return Arrive("reduce_scatter");
    }
    const size_t step = std::max<size_t>(1, slot_floats_ / members);
    for (size_t off = 0; off < n; off += step) {
      const size_t len = std::min(step, n - off), set = NextSet();
      float* mine = segment_->slot(set, me);
      for (size_t b = 0; b < members; ++b)
        std::memcpy(mine + b * len, in + b * n + off, len * sizeof(float));
      if (auto err = Arrive("reduce_scatter")) return err;
      std::memcpy(out + off, segment_->slot(set, 0) + me * len, len * sizeof(float));
      for (size_t r = 1; r < members; ++r)
        Combine(out + off, segment_->slot(set, r) + me * len, len, op);
      if (op == ReduceOp::kAvg) Scale(out + off, len, members);
    }
    return std::nullopt;
  }

  Status AllToAll(const float* in, float* out, size_t n) override {
    return tcp_->AllToAll(in, out, n);
  }
  Status AllToAllV(const float* in, const std::vector<int64_t>& in_counts, float* out,
                   const std::vector<int64_t>& out_counts) override {
    return tcp_->AllToAllV(in, in_counts, out, out_counts);
  }
  // Point to point: over TCP until the arenas are shared; then every message is
  // announced, in posting order, in the pair's mailboxes (shm_comm.h), and the
  // receiver copies data that lies in the sender's arena straight out of it (the
  // send completes when the receiver has taken it); other data still goes over
  // TCP, in the same order. A message whose mailbox still holds an untaken one
  // waits in this member's queue and is posted by its later calls.
  Status Send(const float* data, size_t n, int peer) override {
    if (arenas_.empty()) return tcp_->Send(data, n, peer);
    if (auto err = Post(data, n, peer, kBlockingKey)) return err;
    return WaitSends(kBlockingKey);
  }
  Status StartSend(const float* data, size_t n, int peer, int key) override {
    if (arenas_.empty()) return tcp_->StartSend(data, n, peer, key);
    return Post(data, n, peer, key);
  }
  Status Recv(float* data, size_t n, int peer) override {
    if (arenas_.empty()) return tcp_->Recv(data, n, peer);
    if (auto err = CheckPeer("recv from", peer)) return err;
    const size_t from = static_cast<size_t>(peer), me = static_cast<size_t>(rank());
    if (broken_) return Refused("recv from", from);
    if (auto err = Flush()) return err;
    const uint64_t number = ++received_[from];
    Mailbox& box = Box(from, me, number);
    const uint32_t word = static_cast<uint32_t>(number);
    if (auto err = WaitFor(box.posted, word, from, "recv from")) return err;
    const uint64_t offset = box.offset, sent = box.n;
    // Claimed before the copy; a sender that withdrew the message (its wait for it
    // failed) is seen here, or sees the claim and waits for the copy (shm_comm.h).
    box.claimed.store(word, std::memory_order_seq_cst);
    Status failed;
    if (box.withdrawn.load(std::memory_order_seq_cst) == word)
      failed = Error::Failure("recv from " + MemberName(from) + " in group '" + name() +
                              "' failed: the sender gave the message up (its wait timed out)");
    else if (sent != n)
      failed = Error::Failure("recv from " + MemberName(from) + " in group '" + name() +
                              "' failed: it sent " + std::to_string(sent) +
                              " floats, this member expects " + std::to_string(n));
    else if (offset == kElsewhere)
      failed = tcp_->Recv(data, n, peer);
    else
      std::memcpy(data, arenas_[from] + offset, n * sizeof(float));
    if (failed) broken_ = true;
    box.taken.store(word, std::memory_order_release);
    Futex(&box.taken, FUTEX_WAKE, INT32_MAX, nullptr);
    return failed;
  }
  Status WaitSends(int key) override {
    if (arenas_.empty()) return tcp_->WaitSends(key);
    const auto deadline = Clock::now() + timeout_;
    Status first;
    bool over_tcp = false;
    std::vector<bool> waited(pending_.size(), false);
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (key != kAllSends && pending_[i].key != key) continue;
      waited[i] = true;
      over_tcp = over_tcp || pending_[i].over_tcp;
      if (!first && broken_) first = Refused("send to", pending_[i].peer);
      if (!first) first = WaitTaken(i, deadline);
      if (first) Withdraw(pending_[i]);  // forgotten: never read after this returns
    }
    // The rest, as they are now (the waits may have posted some).
    std::vector<Pending> rest;
    unposted_ = 0;
    for (size_t i = 0; i < pending_.size(); ++i)
      if (!waited[i]) {
        rest.push_back(pending_[i]);
        unposted_ += !pending_[i].posted;
      }
    pending_ = std::move(rest);
    if (over_tcp)
      if (auto err = tcp_->WaitSends(key); err && !first) first = err;
    return first;
  }
  Status ShareArena(uint8_t* base, size_t bytes, int fd, std::string* why_not) override {
    Exclusive only(busy_);
    if (auto err = Usable("sharing the arenas", only)) return err;
    const size_t members = static_cast<size_t>(size()), me = static_cast<size_t>(rank());
    const bool have = base != nullptr && fd >= 0 && bytes > 0;
    // Each member's pid, memory file and size (two halves), through TCP.
    const float mine[4] = {Bits(static_cast<uint32_t>(::getpid())),
                           Bits(have ? static_cast<uint32_t>(fd) : ~uint32_t{0}),
                           Bits(static_cast<uint32_t>(bytes)),
                           Bits(static_cast<uint32_t>(uint64_t{bytes} >> 32))};
    std::vector<float> all(4 * members);
    if (auto err = tcp_->AllGather(mine, all.data(), 4)) return err->Within("sharing the arenas");
    std::string why;
    std::vector<uint8_t*> maps(members, nullptr);
    std::vector<size_t> sizes(members, 0);
    for (size_t r = 0; r < members && why.empty(); ++r) {
      sizes[r] = Bits(all[4 * r + 2]) | (static_cast<uint64_t>(Bits(all[4 * r + 3])) << 32);
      if (r == me) {
        maps[r] = base;
        if (!have) why = "this member's arena is not in a memory file";
        continue;
      }
      const uint32_t peer_fd = Bits(all[4 * r + 1]);
      if (peer_fd == ~uint32_t{0}) {
        why = MemberName(r) + "'s arena is not in a memory file";
      } else if (pid_namespace_ == 0 || segment_->member(r)->pid_namespace != pid_namespace_) {
        why = MemberName(r) + " runs in another pid namespace";
      } else {
        maps[r] = SharedArena::MapPeer(static_cast<int32_t>(Bits(all[4 * r])),
                                       static_cast<int>(peer_fd), sizes[r], &why);
        if (!why.empty()) why = MemberName(r) + ": " + why;
      }
    }
    float failed = why.empty() ? 0.f : 1.f;
    Status agreed = tcp_->AllReduce(&failed, 1, ReduceOp::kMax);
    if (agreed || failed > 0) {
      for (size_t r = 0; r < members; ++r)
        if (r != me && maps[r]) SharedArena::UnmapPeer(maps[r], sizes[r]);
      if (agreed) return agreed->Within("sharing the arenas");
      if (why_not)
        *why_not = !why.empty() ? why : "another member could not map the arenas (it says why)";
      return std::nullopt;
    }
    arenas_ = std::move(maps);
    arena_bytes_ = std::move(sizes);
    operands_.assign(members, nullptr);
    sent_.assign(members, 0);
    received_.assign(members, 0);
    return std::nullopt;
  }

  ~SharedMemoryCommunicator() override {
    for (size_t r = 0; r < arenas_.size(); ++r)
      if (r != static_cast<size_t>(rank())) SharedArena::UnmapPeer(arenas_[r], arena_bytes_[r]);
  }

  Status MapOperand(const float* mine, size_t n, std::vector<float*>* peers) override {
    peers->clear();
    if (arenas_.empty()) return std::nullopt;
    Exclusive only(busy_);
    if (auto err = Usable("map_operand", only)) return err;
    bool direct = false;
    if (auto err = Agree(kCallMapOperand, mine, n, n, "map_operand", &direct)) return err;
    if (direct) *peers = operands_;
    // Agree's records are read by every member before the next call writes them.
    return Arrive("map_operand");
  }

  Status Barrier() override {
    Exclusive only(busy_);
    if (auto err = Usable("barrier", only)) return err;
    return Arrive("barrier");
  }

 private:
  // With shared arenas, whether this call goes direct: each member records where
  // its operand (`floats` floats at `operand`) lies in its arena, the first
  // barrier, then every member reads every record; *direct when all lie in their
  // arenas for the same call and size (the same verdict on every member), with
  // member r's operand at Operand(r); otherwise the chunks through the segment
  // follow, whose first barrier comes before any member writes its next record.
  Status Agree(Call call, const void* operand, size_t floats, size_t n, const char* what,
               bool* direct) {
    *direct = false;
    if (arenas_.empty()) return std::nullopt;
    const size_t me = static_cast<size_t>(rank()), bytes = floats * sizeof(float);
    const auto* p = static_cast<const uint8_t*>(operand);
    Member* mine = segment_->member(me);
    mine->call = call;
    mine->call_offset = p >= arenas_[me] && p + bytes <= arenas_[me] + arena_bytes_[me]
                            ? static_cast<uint64_t>(p - arenas_[me])
                            : kElsewhere;
    mine->call_n = n;
    if (auto err = Arrive(what)) return err;
    for (size_t r = 0; r < arenas_.size(); ++r) {
      const Member* m = segment_->member(r);
      if (m->call != call || m->call_n != n || m->call_offset == kElsewhere ||
          m->call_offset + bytes > arena_bytes_[r])
        return std::nullopt;
      operands_[r] = reinterpret_cast<float*>(arenas_[r] + m->call_offset);
    }
    *direct = true;
    return std::nullopt;
  }
  float* Operand(size_t r) const { return operands_[r]; }

  // Point to point (see Send): the messages this member has sent and not yet
  // waited for, in posting order; `posted` once announced in the mailbox.
  struct Pending {
    size_t peer;
    uint64_t number;  // the message's number within the pair (1, 2, ...)
    int key;
    bool over_tcp;
    bool posted;
    const float* data;
    size_t n;
  };
  static constexpr int kBlockingKey = -2;  // Send's own, never a caller's (>= 0)
  Mailbox& Box(size_t from, size_t to, uint64_t number) const {
    return segment_->mailboxes()[(from * static_cast<size_t>(size()) + to) * kMailboxes +
                                 number % kMailboxes];
  }
  Status CheckPeer(const char* what, int peer) const {
    if (peer >= 0 && peer < size() && peer != rank()) return std::nullopt;
    return Error::Failure(std::string(what) + " member " + std::to_string(peer) + " in group '" +
                          name() + "': no such peer (the group has " + std::to_string(size()) +
                          " members; this is member " + std::to_string(rank()) + ")");
  }
  Status Refused(const char* what, size_t peer) const {
    return Error::Failure(std::string(what) + " " + MemberName(peer) + " in group '" + name() +
                          "' refused: an earlier call of the group failed");
  }
  Status Post(const float* data, size_t n, int peer, int key) {
    if (auto err = CheckPeer("send to", peer)) return err;
    const size_t to = static_cast<size_t>(peer), me = static_cast<size_t>(rank());
    if (broken_) return Refused("send to", to);
    const auto* p = reinterpret_cast<const uint8_t*>(data);
    const bool mine = p >= arenas_[me] && p + n * sizeof(float) <= arenas_[me] + arena_bytes_[me];
    pending_.push_back({to, ++sent_[to], key, !mine, false, data, n});
    ++unposted_;
    return Flush();
  }
  // Announces the queued messages, in order, whose mailbox is free (its message of
  // kMailboxes before has been taken); stops at a peer's first that is not.
  Status Flush() {
    if (unposted_ == 0) return std::nullopt;
    const size_t me = static_cast<size_t>(rank());
    std::vector<bool> stuck(arenas_.size(), false);
    for (Pending& p : pending_) {
      if (p.posted || stuck[p.peer]) continue;
      Mailbox& box = Box(me, p.peer, p.number);
      const uint32_t before = static_cast<uint32_t>(p.number - kMailboxes);
      if (p.number > kMailboxes &&
          static_cast<int32_t>(box.taken.load(std::memory_order_acquire) - before) < 0) {
        stuck[p.peer] = true;
        continue;
      }
      const auto* data = reinterpret_cast<const uint8_t*>(p.data);
      box.offset = p.over_tcp ? kElsewhere : static_cast<uint64_t>(data - arenas_[me]);
      box.n = p.n;
      box.posted.store(static_cast<uint32_t>(p.number), std::memory_order_release);
      Futex(&box.posted, FUTEX_WAKE, INT32_MAX, nullptr);
      p.posted = true;
      --unposted_;
      if (p.over_tcp)
        if (auto err = tcp_->StartSend(p.data, p.n, static_cast<int>(p.peer), p.key)) {
          broken_ = true;  // announced but not sent: the peer would wait for it
          return err;
        }
    }
    return std::nullopt;
  }
  // Waits until pending_[i] is posted and taken, or `deadline`.
  Status WaitTaken(size_t i, Clock::time_point deadline) {
    const size_t me = static_cast<size_t>(rank());
    while (!pending_[i].posted) {  // its mailbox holds an earlier message: wait for that one
      const Pending& p = pending_[i];
      Mailbox& box = Box(me, p.peer, p.number);
      if (auto err = WaitFor(box.taken, static_cast<uint32_t>(p.number - kMailboxes), p.peer,
                             "send to", deadline))
        return err;
      if (auto err = Flush()) return err;
    }
    const Pending& p = pending_[i];
    return WaitFor(Box(me, p.peer, p.number).taken, static_cast<uint32_t>(p.number), p.peer,
                   "send to", deadline);
  }
  // Gives up a posted message that has not been taken: after this the receiver never
  // reads its data (it sees the withdrawal and fails), or, when the receiver claimed
  // it first, waits for its copy to end.
  void Withdraw(const Pending& p) {
    if (!p.posted) return;
    Mailbox& box = Box(static_cast<size_t>(rank()), p.peer, p.number);
    const uint32_t word = static_cast<uint32_t>(p.number);
    box.withdrawn.store(word, std::memory_order_seq_cst);
    if (box.claimed.load(std::memory_order_seq_cst) != word) return;
    while (static_cast<int32_t>(box.taken.load(std::memory_order_acquire) - word) < 0) {
      const timespec slice{0, 1'000'000};
      Futex(&box.taken, FUTEX_WAIT, box.taken.load(std::memory_order_acquire), &slice);
    }
  }
  // Waits until `word` reaches `target` (mod 2^32), written by member `peer`, posting
  // queued messages meanwhile; fails naming the peer once it has exited or
  // `deadline` (default: the group's timeout from now) has passed.
  Status WaitFor(std::atomic<uint32_t>& word, uint32_t target, size_t peer, const char* what,
                 std::optional<Clock::time_point> deadline = std::nullopt) {
    const auto until = deadline.value_or(Clock::now() + timeout_);
    Status flushed;
    // 1 ms slices while messages wait to be posted: their mailboxes free up
    // without waking this wait.
    const std::string why = Await(
        word, target, [&] { return unposted_ ? 1 : 50; },
        [&]() -> std::string {
          if ((flushed = Flush())) return "posting";
          if (Gone(peer))
            return "it exited (process " + std::to_string(segment_->member(peer)->pid) + ")";
          if (Clock::now() >= until)
            return "no answer within " + std::to_string(timeout_.count()) + " ms";
          return {};
        });
    if (flushed) return flushed;
    if (why.empty()) return std::nullopt;
    return Error::Failure(std::string(what) + " " + MemberName(peer) + " in group '" + name() +
                          "' failed: " + why + " (shared memory)");
  }

  // Whether member r's process has exited (pids compare only within one namespace,
  // and only when both are known).
  bool Gone(size_t r) const {
    const Member* m = segment_->member(r);
    return pid_namespace_ != 0 && m->pid_namespace == pid_namespace_ && m->pid > 0 &&
           ProcessGone(m->pid);
  }

  // Waits until `word` reaches `target` (mod 2^32): a short spin, then futex sleeps
  // of slice_ms() milliseconds, after each of which stalled() says why to give up
  // (empty: wait on). Returns empty once reached, else that reason, and the group
  // is broken.
  template <class SliceMs, class Stalled>
  std::string Await(std::atomic<uint32_t>& word, uint32_t target, SliceMs slice_ms,
                    Stalled stalled) {
    const auto reached = [&](uint32_t v) { return static_cast<int32_t>(v - target) >= 0; };
    for (int spin = 0; spin < 128; ++spin) {
      if (reached(word.load(std::memory_order_acquire))) return {};
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    while (true) {
      const uint32_t v = word.load(std::memory_order_acquire);
      if (reached(v)) return {};
      const timespec slice{0, slice_ms() * 1'000'000L};
      Futex(&word, FUTEX_WAIT, v, &slice);
      if (reached(word.load(std::memory_order_acquire))) return {};
      std::string why = stalled();
      if (why.empty()) continue;
      broken_ = true;
      return why;
    }
  }

  // The chunk buffer for the next chunk: they alternate, so a member fills one
  // while the others may still read the other (shm_comm.h).
  size_t NextSet() { return chunks_++ & 1; }

  // Holds busy_ for one call; `entered` is false when another call held it.
  struct Exclusive {
    explicit Exclusive(std::atomic<bool>& flag) : flag(flag), entered(!flag.exchange(true)) {}
    ~Exclusive() {
      if (entered) flag.store(false);
    }
    std::atomic<bool>& flag;
    bool entered;
  };

  Status Usable(const char* what, const Exclusive& only) {
    if (!only.entered) {
      broken_ = true;
      return Error::Failure(std::string(what) + " in group '" + name() +
                            "' refused: another collective of the group is running on another "
                            "thread (calls must be one at a time)");
    }
    if (!broken_) return std::nullopt;
    return Error::Failure(std::string(what) + " in group '" + name() +
                          "' refused: an earlier collective of the group failed");
  }

  std::string MemberName(size_t r) const {
    std::string out = "member " + std::to_string(r);
    if (r < job_ranks_.size()) out += " (job rank " + std::to_string(job_ranks_[r]) + ")";
    return out;
  }

  // The reduced values into the caller's buffer: the sum, or for kAvg the sum
  // times 1 / size (as the TCP communicator computes it), in the same pass.
  void CopyOut(const float* __restrict from, float* __restrict to, size_t n, ReduceOp op) const {
    if (op != ReduceOp::kAvg) {
      std::memcpy(to, from, n * sizeof(float));
      return;
    }
    const float inv = 1.0f / static_cast<float>(size());
    for (size_t i = 0; i < n; ++i) to[i] = from[i] * inv;
  }

  // This member reaches the group's next barrier and waits for the others.
  Status Arrive(const char* what) {
    const uint32_t generation = ++barriers_;
    const uint32_t target = generation * static_cast<uint32_t>(size());
    Header* h = segment_->header();
    segment_->member(static_cast<size_t>(rank()))->barriers.store(generation,
                                                                  std::memory_order_relaxed);
    std::atomic<uint32_t>& arrived = h->arrived;
    const auto reached = [&](uint32_t v) { return static_cast<int32_t>(v - target) >= 0; };
    if (reached(arrived.fetch_add(1, std::memory_order_acq_rel) + 1)) {
      Futex(&arrived, FUTEX_WAKE, INT32_MAX, nullptr);
      return std::nullopt;
    }
    const auto deadline = Clock::now() + timeout_;
    const std::string why = Await(
        arrived, target, [] { return 50; },  // then look at the clock and the peers
        [&] {
          std::string missing, gone;
          for (size_t r = 0; r < static_cast<size_t>(size()); ++r) {
            const Member* m = segment_->member(r);
            if (static_cast<int32_t>(m->barriers.load(std::memory_order_relaxed) - generation) >= 0)
              continue;
            missing += (missing.empty() ? "" : ", ") + MemberName(r);
            if (Gone(r))
              gone += (gone.empty() ? "" : ", ") + MemberName(r) + " (process " +
                      std::to_string(m->pid) + ")";
          }
          if (!gone.empty()) return gone + " exited";
          if (Clock::now() >= deadline)
            return missing + " did not arrive within " + std::to_string(timeout_.count()) + " ms";
          return std::string();
        });
    if (why.empty()) return std::nullopt;
    return Error::Failure(std::string(what) + " in group '" + name() + "' failed: " + why +
                          " (shared memory)");
  }

  std::unique_ptr<Communicator> tcp_;
  std::unique_ptr<Segment> segment_;
  std::chrono::milliseconds timeout_;
  std::vector<int> job_ranks_;
  size_t slot_floats_;
  uint64_t pid_namespace_;
  uint32_t barriers_ = 0;
  uint64_t chunks_ = 0;
  std::atomic<bool> broken_{false};
  std::atomic<bool> busy_{false};
  // After ShareArena: every member's arena as this member maps it (its own at the
  // caller's address) and its size; empty: not shared.
  std::vector<uint8_t*> arenas_;
  std::vector<size_t> arena_bytes_;
  std::vector<float*> operands_;  // a direct call's operand of every member (Agree)
  // Point to point once the arenas are shared: per peer the number of the last
  // message sent to it and received from it; the sends not yet waited for.
  std::vector<uint64_t> sent_, received_;
  std::vector<Pending> pending_;
  size_t unposted_ = 0;  // of pending_
};

}  // namespace

Status AttachSharedMemory(std::unique_ptr<Communicator> tcp, std::chrono::milliseconds timeout,
                          std::vector<int> job_ranks, size_t slot_bytes,
                          std::unique_ptr<Communicator>* out, std::string* why_not) {
  const size_t size = static_cast<size_t>(tcp->size());
  if (size == 1) {
    *out = std::move(tcp);
    return std::nullopt;
  }
  if (slot_bytes == 0)
    slot_bytes = std::min(kDefaultSlotBytes, kDefaultSegmentDataBytes / (2 * size));
  const size_t slot_floats =
      RoundUp(std::max(slot_bytes, kMinSlotBytes), kLine) / sizeof(float);

  // Rank 0 creates the segment and tells the others its name (its pid and a random
  // number); each reports whether it could open it; all agree.
  auto segment = std::make_unique<Segment>();
  std::string why;
  uint64_t nonce = 0;
  uint32_t pid0 = static_cast<uint32_t>(::getpid());
  if (tcp->rank() == 0) {
    std::random_device random;
    nonce = (static_cast<uint64_t>(random()) << 32) ^ random();
    why = segment->Create(SegmentName(pid0, nonce), size, slot_floats, nonce);
  }
  float mine[4] = {Bits(pid0), Bits(static_cast<uint32_t>(nonce)),
                   Bits(static_cast<uint32_t>(nonce >> 32)), why.empty() ? 1.f : 0.f};
  std::vector<float> all(4 * size);
  if (auto err = tcp->AllGather(mine, all.data(), 4)) {
    if (tcp->rank() == 0 && why.empty()) ::shm_unlink(SegmentName(pid0, nonce).c_str());
    return err->Within("shared memory setup");
  }
  const bool created = all[3] == 1.f;
  pid0 = Bits(all[0]);
  nonce = Bits(all[1]) | (static_cast<uint64_t>(Bits(all[2])) << 32);
  const std::string name = SegmentName(pid0, nonce);
  if (tcp->rank() != 0 && created) why = segment->Open(name, size, slot_floats, nonce);
  if (created && why.empty()) {
    Member* m = segment->member(static_cast<size_t>(tcp->rank()));
    m->pid = static_cast<int32_t>(::getpid());
    m->pid_namespace = PidNamespace();
  }
  float failed = (created && why.empty()) ? 0.f : 1.f;
  Status agreed = tcp->AllReduce(&failed, 1, ReduceOp::kMax);
  if (tcp->rank() == 0 && created) ::shm_unlink(name.c_str());
  if (agreed) return agreed->Within("shared memory setup");
  if (failed > 0) {
    if (why_not)
      *why_not = !created ? "member 0 could not create the segment" + (why.empty() ? "" : ": " + why)
                 : !why.empty() ? "member " + std::to_string(tcp->rank()) + ": " + why
                                : "another member could not open the segment (not on this machine?)";
    *out = std::move(tcp);  // TCP alone, on every member
    return std::nullopt;
  }
  *out = std::make_unique<SharedMemoryCommunicator>(std::move(tcp), std::move(segment), timeout,
                                                    std::move(job_ranks));
  return std::nullopt;
}

}  // namespace heiretsu::comm
