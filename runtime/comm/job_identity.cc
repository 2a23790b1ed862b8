// See job_identity.h.
#include "runtime/comm/job_identity.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/base/env.h"

namespace heiretsu::comm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kPrefix[] = "identity.";
constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr auto kFirstReport = std::chrono::seconds(2);
constexpr auto kReportEvery = std::chrono::seconds(15);

std::string IdentityPath(const std::string& store, int rank) {
  return (fs::path(store) / (kPrefix + std::to_string(rank))).string();
}

std::string Serialize(const JobIdentity& id) {
  std::string text;
  for (const auto& [name, value] : id) text += name + "\t" + value + "\n";
  return text;
}

bool Parse(const std::string& text, JobIdentity* id) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) return false;
    id->emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return !id->empty();
}

std::string RankList(const std::vector<int>& ranks) {
  std::string text;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) text += i + 1 == ranks.size() ? " and " : ", ";
    text += std::to_string(ranks[i]);
  }
  return text;
}

std::string Ranks(const std::vector<int>& ranks) {
  return (ranks.size() == 1 ? "rank " : "ranks ") + RankList(ranks);
}

std::string Seconds(std::chrono::milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

// The store must hold nothing but other ranks' identity files (and their
// temporaries): anything else is an earlier job's.
Status CheckStoreIsFresh(const std::string& store, int rank) {
  const std::string advice =
      ": the store must be an empty directory for each job (give every job a new one, "
      "e.g. HEIRETSU_STORE=$(mktemp -d))";
  std::error_code ec;
  if (fs::exists(IdentityPath(store, rank), ec))
    return Error::BadInput("HEIRETSU_STORE='" + store + "' already holds rank " +
                           std::to_string(rank) +
                           "'s rendezvous file: an earlier job used this store, or two "
                           "ranks were started as rank " +
                           std::to_string(rank) + advice);
  for (fs::directory_iterator it(store, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kPrefix, 0) != 0)
      return Error::BadInput("HEIRETSU_STORE='" + store + "' is not empty (it holds '" + name +
                             "', left by an earlier job)" + advice);
  }
  if (ec) return Error::BadInput("HEIRETSU_STORE='" + store + "': cannot list: " + ec.message());
  return std::nullopt;
}

// Writes identity.RANK whole and exclusively: a temporary file, then link(2), which
// fails if the name exists and never shows a partial file.
Status Publish(const std::string& store, int rank, const JobIdentity& mine) {
  const std::string path = IdentityPath(store, rank);
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << Serialize(mine);
    out.flush();
    if (!out) return Error::Failure(temp + ": cannot write the rendezvous file: " + std::strerror(errno));
  }
  const int rc = ::link(temp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(temp.c_str());
  if (rc != 0 && err == EEXIST)
    return Error::BadInput("HEIRETSU_STORE='" + store + "' already holds rank " +
                           std::to_string(rank) +
                           "'s rendezvous file: two ranks were started as rank " +
                           std::to_string(rank) + ", or another job shares this store (the "
                           "store must be an empty directory for each job)");
  if (rc != 0) return Error::Failure(path + ": cannot create the rendezvous file: " + std::strerror(err));
  return std::nullopt;
}

}  // namespace

Status ReadJobEnvironment(bool needs_store, JobEnvironment* out) {
  int64_t timeout = out->timeout.count();
  if (auto err = env::Integer("HEIRETSU_COMM_TIMEOUT_MS", 1, kMaxCommTimeoutMs, "milliseconds",
                              &timeout))
    return err;
  out->timeout = std::chrono::milliseconds(timeout);
  int64_t shm = out->shared_memory ? 1 : 0;
  if (auto err = env::Integer("HEIRETSU_COMM_SHM", 0, 1, "1: shared memory where it can, 0: TCP only", &shm))
    return err;
  out->shared_memory = shm == 1;
  if (auto err = env::Host("HEIRETSU_ADDR", &out->address)) return err;
  if (auto err = env::Directory("HEIRETSU_STORE", &out->store)) return err;
  if (needs_store && out->store.empty())
    return Error::BadInput(
        "a multi-rank run needs HEIRETSU_STORE, a directory shared by the ranks for "
        "rendezvous, empty for each job ('heiretsu run' sets it)");
  return std::nullopt;
}

Status AgreeOnJob(const JobEnvironment& env, int rank, int world, const JobIdentity& mine,
                  const std::function<void(const std::string&)>& progress) {
  if (auto err = CheckStoreIsFresh(env.store, rank)) return err;
  if (auto err = Publish(env.store, rank, mine)) return err;

  std::vector<JobIdentity> all(static_cast<size_t>(world));
  all[static_cast<size_t>(rank)] = mine;
  std::vector<bool> have(static_cast<size_t>(world), false);
  have[static_cast<size_t>(rank)] = true;
  const Clock::time_point start = Clock::now(), deadline = start + env.timeout;
  Clock::time_point next_report = start + kFirstReport;
  for (;;) {
    std::vector<int> missing;
    for (int r = 0; r < world; ++r) {
      if (have[static_cast<size_t>(r)]) continue;
      std::ifstream in(IdentityPath(env.store, r), std::ios::binary);
      if (!in) {
        missing.push_back(r);
        continue;
      }
      std::stringstream text;
      text << in.rdbuf();
      JobIdentity id;
      if (!Parse(text.str(), &id))
        return Error::BadInput(IdentityPath(env.store, r) +
                               ": not a heiretsu rendezvous file (the store must be an empty "
                               "directory for each job)");
      all[static_cast<size_t>(r)] = std::move(id);
      have[static_cast<size_t>(r)] = true;
    }
    if (missing.empty()) break;
    const Clock::time_point now = Clock::now();
    if (now >= deadline)
      return Error::Failure(Ranks(missing) + " did not join the job within " +
                            Seconds(env.timeout) + " s (HEIRETSU_COMM_TIMEOUT_MS=" + std::to_string(env.timeout.count()) +
                            "): " + (missing.size() == 1 ? "is it" : "are they") +
                            " started, with HEIRETSU_STORE=" + env.store + "?");
    if (now >= next_report) {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - now).count();
      progress("waiting for " + Ranks(missing) + " to join (timeout in " + std::to_string(left) +
               " s)");
      next_report = now + kReportEvery;
    }
    std::this_thread::sleep_for(kPoll);
  }

  // Every rank against rank 0, field by field, in the same order on every rank.
  std::string differences;
  std::vector<int> differing;
  for (int r = 1; r < world; ++r) {
    const JobIdentity& ref = all[0];
    const JobIdentity& id = all[static_cast<size_t>(r)];
    std::string fields;
    for (size_t k = 0; k < std::max(ref.size(), id.size()); ++k) {
      const std::string name = k < ref.size() ? ref[k].first : id[k].first;
      const std::string a = k < ref.size() ? ref[k].second : "(none)";
      std::string b = "(none)";
      for (const auto& [n, v] : id)
        if (n == name) b = v;
      if (a == b) continue;
      fields += (fields.empty() ? "" : ", ") + name + " " + b + " (rank 0: " + a + ")";
    }
    if (fields.empty()) continue;
    differing.push_back(r);
    differences += "; rank " + std::to_string(r) + " has " + fields;
  }
  if (!differing.empty())
    return Error::BadInput("the ranks do not run the same job (" + Ranks(differing) +
                           " differ" + (differing.size() == 1 ? "s" : "") + " from rank 0): " +
                           differences.substr(2) +
                           " (start every rank with the same plan and the same run flags)");
  return std::nullopt;
}

}  // namespace heiretsu::comm
