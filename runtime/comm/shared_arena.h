// Memory the other processes of this machine can map: the CPU backend allocates
// the executor's arena here, so that the members of a shared-memory group
// (shm_comm.h) read and write each other's buffers directly
// (Communicator::ShareArena) instead of copying them through the segment.
//
// The memory is an anonymous memory file (memfd), mapped shared and zero-filled; a
// peer maps it through /proc/<pid>/fd/<fd> (same user, same machine). Nothing is
// left behind when the process ends, however it ends.
#ifndef HEIRETSU_RUNTIME_COMM_SHARED_ARENA_H_
#define HEIRETSU_RUNTIME_COMM_SHARED_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace heiretsu::comm {

class SharedArena {
 public:
  // `bytes` (rounded up to a page) of zeroed, page-aligned memory; null (and *why
  // when not null) when the memory file cannot be made or mapped.
  static std::unique_ptr<SharedArena> Create(size_t bytes, std::string* why = nullptr);
  ~SharedArena();
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  uint8_t* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  int fd() const { return fd_; }

  // Maps the first `bytes` of process `pid`'s memory file `fd` (as its owner
  // reported them), read-write; null and *why when it cannot.
  static uint8_t* MapPeer(int32_t pid, int fd, size_t bytes, std::string* why);
  static void UnmapPeer(uint8_t* data, size_t bytes);

 private:
  SharedArena(uint8_t* data, size_t bytes, int fd) : data_(data), bytes_(bytes), fd_(fd) {}
  uint8_t* data_;
  size_t bytes_;
  int fd_;
};

}  // namespace heiretsu::comm

#endif  // HEIRETSU_RUNTIME_COMM_SHARED_ARENA_H_
