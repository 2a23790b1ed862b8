// Collective communication between the ranks of a job (docs/architecture.md §2, comm). A
// Communicator connects the ranks of one group (the ranks that share all mesh
// coordinates but one axis); the executor holds one per group its program uses.
//
// Every operation returns an error (runtime/base/error.h) instead of throwing or hanging: a peer
// that died or stopped answering is reported once the group's timeout passes,
// naming the operation and the group, so the launcher can tear the job down.
#ifndef HEIRETSU_RUNTIME_COMM_COMM_H_
#define HEIRETSU_RUNTIME_COMM_COMM_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::comm {

enum class ReduceOp { kSum, kMax, kAvg };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;
  // How the group's data moves, for the run's first lines: "TCP (Gloo)", or shared
  // memory for the collectives and TCP for the rest (shm_comm.h).
  virtual std::string transport() const = 0;

  // In place over `n` floats; every rank gets the result.
  virtual Status AllReduce(float* data, size_t n, ReduceOp op) = 0;
  // out[r * n .. (r + 1) * n) = rank r's in[0 .. n). In place: `in` may be
  // out + rank() * n (otherwise the two do not overlap).
  virtual Status AllGather(const float* in, float* out, size_t n) = 0;
  // in holds size() blocks of n; out = block rank() reduced over the ranks by `op`
  // (kAvg: the sum times 1 / size(), in float, as AllReduce's). In place: `out` may
  // be in + rank() * n (otherwise the two do not overlap).
  virtual Status ReduceScatter(const float* in, float* out, size_t n,
                               ReduceOp op = ReduceOp::kSum) = 0;
  // Block r of `in` (n floats) goes to rank r; out's block r comes from rank r.
  virtual Status AllToAll(const float* in, float* out, size_t n) = 0;
  // The variable-size exchange: in holds, in rank order, in_counts[r] floats for
  // rank r; out receives, in rank order, out_counts[r] floats from rank r (what
  // rank r sends this rank: the counts must agree pairwise).
  virtual Status AllToAllV(const float* in, const std::vector<int64_t>& in_counts, float* out,
                           const std::vector<int64_t>& out_counts) = 0;
  // Point to point with the group member `peer`. Sends and recvs between two
  // members match in the order each side posts them (Send, StartSend and Recv
  // alike), whatever the other traffic between them.
  // Send blocks until the peer's Recv is posted and the data has gone out (so two
  // members that both Send before they Recv wait for each other); Recv blocks
  // until the data has arrived.
  virtual Status Send(const float* data, size_t n, int peer) = 0;
  virtual Status Recv(float* data, size_t n, int peer) = 0;
  // Posts a send and returns without waiting for the peer's Recv. `data` must stay
  // untouched (and alive) until the send completes, which WaitSends waits for.
  // `key` (>= 0) groups sends for WaitSends(key) (the executor: the activation slot
  // the data lies in); it is not a tag: the order of posting alone matches sends to
  // recvs.
  virtual Status StartSend(const float* data, size_t n, int peer, int key = 0) = 0;
  // Waits until every send started with `key` (kAllSends: every started send) has
  // completed, then forgets them. A send that does not complete within the
  // group's timeout (counted from this call) fails the wait with a message naming
  // the peer and the group; the others waited for are still waited for (failing at
  // once when the failure broke the group) and forgotten, so no started send
  // reads its data after this returns.
  static constexpr int kAllSends = -1;
  virtual Status WaitSends(int key = kAllSends) = 0;
  virtual Status Barrier() = 0;

  // Lets the members use each other's arenas directly: every member calls it
  // together, once, before the collectives, with its `bytes` at `base` and the
  // memory file `fd` they lie in (shared_arena.h; -1, or a null base: none). When
  // every member could map every other's, all_reduce, all_gather and
  // reduce_scatter on buffers in every member's arena move the
  // data between the arenas with no copy through the segment (shm_comm.h), with
  // the same results; otherwise (the members agree on the verdict) nothing
  // changes and *why_not (when not null) says why. A transport that cannot share
  // memory does nothing (the default). Fails only when the group fails.
  virtual Status ShareArena(uint8_t* base, size_t bytes, int fd, std::string* why_not) {
    (void)base, (void)bytes, (void)fd, (void)why_not;
    return std::nullopt;
  }
  // With the arenas shared (ShareArena): every member calls it together with its
  // `n` floats at `mine`, and when every member's lie in its arena, (*peers)[r] is
  // where member r's lie, mapped into this process (this member's own at r = rank())
  // until the group closes: the caller may read and write them, ordering its
  // accesses with the members' own by the group's collectives. Otherwise *peers
  // is left empty, the same verdict on every member (the default: no arenas).
  virtual Status MapOperand(const float* mine, size_t n, std::vector<float*>* peers) {
    (void)mine, (void)n;
    peers->clear();
    return std::nullopt;
  }
};

struct GroupOptions {
  std::string store_dir;  // the job's rendezvous directory (HEIRETSU_STORE)
  std::string group;      // the group's name: a prefix unique within the job
  int rank = 0;           // this rank's index within the group
  int size = 1;
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  std::string hostname = "127.0.0.1";  // the address this rank listens on
  // For messages: the job rank of each member, in group order (groups.h); empty
  // when unknown (a message then names the member's index in the group only).
  std::vector<int> job_ranks;
  // When every member runs on this machine, run all_reduce, all_gather,
  // reduce_scatter and barrier through shared memory (shm_comm.h); false: TCP for
  // everything (HEIRETSU_COMM_SHM=0).
  bool shared_memory = true;
  size_t shm_slot_bytes = 0;  // the shared-memory chunk per member; 0: the default
};

// Connects the group over Gloo's TCP transport, rendezvousing through a file
// store, then (options.shared_memory) attaches shared memory where every member
// can, into *out; *no_shm (when not null) says why a group that asked for shared
// memory did not get it (empty otherwise). Fails (kFailure) on a timeout waiting for
// a peer that never comes, or any other failure to connect.
Status ConnectGroup(const GroupOptions& options, std::unique_ptr<Communicator>* out,
                    std::string* no_shm = nullptr);

}  // namespace heiretsu::comm

#endif  // HEIRETSU_RUNTIME_COMM_COMM_H_
