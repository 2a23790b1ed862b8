// One job, agreed on by every rank before any group connects (issue #10): the
// environment the rendezvous reads, validated like flags, and the check that every
// rank runs the same plan with the same run flags.
//
// The rendezvous store (HEIRETSU_STORE) must be an empty directory for each job.
// Each rank first checks that the store holds nothing but other ranks' identity
// files, then publishes its own, identity.RANK (a text file of `name<TAB>value`
// lines, created atomically with link(2), so no rank ever reads half of one, and
// exclusively, so a second rank r or a reused store is caught), then waits for every
// other rank's. While ranks are missing it reports, within seconds and then every 15
// s, "waiting for ranks 1, 3 to join (timeout in 290 s)". Then every rank compares
// every identity with rank 0's, so all ranks reach the same verdict.
#ifndef HEIRETSU_RUNTIME_COMM_JOB_IDENTITY_H_
#define HEIRETSU_RUNTIME_COMM_JOB_IDENTITY_H_

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::comm {

// What the rendezvous takes from the environment.
struct JobEnvironment {
  std::string store;                           // HEIRETSU_STORE
  std::string address = "127.0.0.1";           // HEIRETSU_ADDR: where this rank listens
  std::chrono::milliseconds timeout{300000};   // HEIRETSU_COMM_TIMEOUT_MS
  bool shared_memory = true;  // HEIRETSU_COMM_SHM (1 or 0): GroupOptions::shared_memory
};

// Longest HEIRETSU_COMM_TIMEOUT_MS: one day.
inline constexpr int64_t kMaxCommTimeoutMs = 86'400'000;

// Reads and validates HEIRETSU_COMM_TIMEOUT_MS (an integer in [1, one day]),
// HEIRETSU_COMM_SHM (0 or 1), HEIRETSU_ADDR (a resolvable host) and HEIRETSU_STORE (an existing directory;
// required when `needs_store`). Fails with kBadInput naming the variable and value.
Status ReadJobEnvironment(bool needs_store, JobEnvironment* out);

// What must agree across the ranks of one job, as (name, value) pairs in a fixed
// order: a fingerprint of the plan bytes and the run flags every rank must share.
// Names and values hold no tab or newline.
using JobIdentity = std::vector<std::pair<std::string, std::string>>;

// The rendezvous above for rank `rank` of `world`. Fails with kBadInput when the store
// is not fresh (naming what is in it) or when the ranks disagree (naming the ranks
// and each field that differs from rank 0's), with kFailure when ranks are still
// missing after env.timeout (naming them) or the store cannot be written.
// `progress` receives the waiting messages.
Status AgreeOnJob(const JobEnvironment& env, int rank, int world, const JobIdentity& mine,
                  const std::function<void(const std::string&)>& progress);

}  // namespace heiretsu::comm

#endif  // HEIRETSU_RUNTIME_COMM_JOB_IDENTITY_H_
