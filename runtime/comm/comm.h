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
#include <memory>
#include <optional>
#include <string>

#include "runtime/base/error.h"

namespace heiretsu::comm {

enum class ReduceOp { kSum, kMax, kAvg };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;

  // In place over `n` floats; every rank gets the result.
  virtual Status AllReduce(float* data, size_t n, ReduceOp op) = 0;
  // out[r * n .. (r + 1) * n) = rank r's in[0 .. n).
  virtual Status AllGather(const float* in, float* out, size_t n) = 0;
  // in holds size() blocks of n; out = the sum over ranks of block rank().
  virtual Status ReduceScatter(const float* in, float* out, size_t n) = 0;
  // Block r of `in` (n floats) goes to rank r; out's block r comes from rank r.
  virtual Status AllToAll(const float* in, float* out, size_t n) = 0;
  virtual Status Send(const float* data, size_t n, int peer) = 0;
  virtual Status Recv(float* data, size_t n, int peer) = 0;
  virtual Status Barrier() = 0;
};

struct GlooOptions {
  std::string store_dir;  // the job's rendezvous directory (HEIRETSU_STORE)
  std::string group;      // the group's name: a prefix unique within the job
  int rank = 0;           // this rank's index within the group
  int size = 1;
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  std::string hostname = "127.0.0.1";  // the address this rank listens on
};

// Connects the group over Gloo's TCP transport, rendezvousing through a file
// store, into *out. Fails (kFailure) on a timeout waiting for a peer that never
// comes, or any other failure to connect.
Status ConnectGloo(const GlooOptions& options, std::unique_ptr<Communicator>* out);

}  // namespace heiretsu::comm

#endif  // HEIRETSU_RUNTIME_COMM_COMM_H_
