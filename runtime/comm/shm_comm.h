// Collectives through shared memory for a group whose members all run on one machine
// (issue #15: dp = 2 on one machine spent a quarter of its step in Gloo's loopback
// TCP all-reduce). Internal to runtime/comm: ConnectGroup (comm.h) calls it.
//
// The members map one segment (POSIX shared memory, unlinked as soon as every
// member has opened it, or the setup failed: only a crash during the setup itself
// can leave it in /dev/shm). Data moves through it in
// chunks, two chunk buffers alternating, each holding one slot per member:
//   all_reduce      each member copies its chunk into its slot; barrier; member r sums
//                   part r of the chunk over the slots in member order (0, 1, 2, ...),
//                   into slot 0; barrier; each copies slot 0 out. The sum is the same
//                   on every run and every member (rank order, not a ring's).
//   reduce_scatter  the members' blocks of the chunk into their slots; barrier; member
//                   r sums block r over the slots in member order.
//   all_gather      each member's chunk into its slot; barrier; each copies all slots.
//   barrier         one barrier.
// When the members have shared their arenas (Communicator::ShareArena: each maps
// every other's memory file), a collective whose operand lies in every member's
// arena (each at its own offset) goes direct instead, with the same results: each
// member records its operand's offset, barrier, and when all are in the arenas
//   all_reduce      member r sums part r over the arenas in member order and writes
//                   the sum into every member's arena; barrier.
//   reduce_scatter  member r sums block r over the arenas in member order into its
//                   output; barrier.
//   all_gather      each member copies every member's block from its arena; barrier.
// (all_reduce: 2 bytes of memory traffic per byte and member, against 5.5 through
// the chunks.) Otherwise every member takes the chunks. Point to point, once the
// arenas are shared: each ordered pair of members has 16 mailboxes in the segment;
// message k of the pair is announced in box k % 16 (where its data lies in the
// sender's arena, and its size), the receiver copies it straight out of the
// sender's arena and marks it taken, and a send is complete once taken (a message
// whose box still holds an untaken one waits in the sender's queue, posted by its
// later calls; a send the sender gives up after a failed wait is withdrawn: the
// receiver claims a message before copying it, the sender marks it withdrawn, and
// whichever comes second sees the other). Data outside the
// sender's arena is announced the same way and goes over TCP, so messages still
// match in posting order. Before the arenas are shared, point to point is TCP's.
// A barrier is a shared arrival counter (a futex): a member that waits longer than
// the group's timeout, or sees a member's process gone, fails with a message naming
// the members that did not arrive. After a failure the communicator refuses further
// collectives (the others' state is unknown). all_to_all stays on the TCP
// communicator, which also carries the setup.
//
// Calls follow Communicator's contract: every member makes the same collective calls
// in the same order, one at a time (two calls at once on one member fail, naming
// the group, instead of mixing their chunks).
#ifndef HEIRETSU_RUNTIME_COMM_SHM_COMM_H_
#define HEIRETSU_RUNTIME_COMM_SHM_COMM_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/comm/comm.h"

namespace heiretsu::comm {

// Every member of `tcp`'s group calls this together. When every member can map one
// segment (they share a machine and /dev/shm), *out is a communicator that runs the
// collectives above through it and the rest through `tcp`; otherwise (the members
// agree on the verdict) *out is `tcp` itself and *why (when not null) says why
// not, from the first member that could not. `slot_bytes` (0: the default, 4 MiB
// per member for up to 8 members, less above, 64 MiB in all) sizes a chunk; tests
// pass small values to cross chunk boundaries. Fails only when `tcp` fails.
Status AttachSharedMemory(std::unique_ptr<Communicator> tcp, std::chrono::milliseconds timeout,
                          std::vector<int> job_ranks, size_t slot_bytes,
                          std::unique_ptr<Communicator>* out, std::string* why = nullptr);

}  // namespace heiretsu::comm

#endif  // HEIRETSU_RUNTIME_COMM_SHM_COMM_H_
