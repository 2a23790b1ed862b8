// Memory files for arenas; see shared_arena.h.
#include "runtime/comm/shared_arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace heiretsu::comm {

std::unique_ptr<SharedArena> SharedArena::Create(size_t bytes, std::string* why) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t size = bytes ? (bytes + page - 1) / page * page : page;
  const auto fail = [&](const char* what) -> std::unique_ptr<SharedArena> {
    if (why) *why = std::string(what) + ": " + std::strerror(errno);
    return nullptr;
  };
  const int fd = ::memfd_create("heiretsu-arena", MFD_CLOEXEC);
  if (fd < 0) return fail("memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    auto out = fail("sizing the memory file");
    ::close(fd);
    return out;
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    auto out = fail("mmap");
    ::close(fd);
    return out;
  }
  return std::unique_ptr<SharedArena>(new SharedArena(static_cast<uint8_t*>(p), size, fd));
}

SharedArena::~SharedArena() {
  ::munmap(data_, bytes_);
  ::close(fd_);
}

uint8_t* SharedArena::MapPeer(int32_t pid, int fd, size_t bytes, std::string* why) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
  const int mine = ::open(path, O_RDWR | O_CLOEXEC);
  if (mine < 0) {
    *why = std::string("opening ") + path + ": " + std::strerror(errno);
    return nullptr;
  }
  struct stat st {};
  if (::fstat(mine, &st) != 0 || static_cast<size_t>(st.st_size) < bytes) {
    ::close(mine);
    *why = std::string(path) + " is not the peer's arena (it is smaller)";
    return nullptr;
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mine, 0);
  ::close(mine);
  if (p == MAP_FAILED) {
    *why = std::string("mapping ") + path + ": " + std::strerror(errno);
    return nullptr;
  }
  return static_cast<uint8_t*>(p);
}

void SharedArena::UnmapPeer(uint8_t* data, size_t bytes) { ::munmap(data, bytes); }

}  // namespace heiretsu::comm
