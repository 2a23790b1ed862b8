// What the driver's commands that start from a checkpoint share (`sample`, `export`):
// a temporary directory, the checkpoint's model card written out as a spec file, and
// that spec compiled for one rank by heiretsu-compile, quietly.
#ifndef HEIRETSU_RUNTIME_DRIVER_CARD_H_
#define HEIRETSU_RUNTIME_DRIVER_CARD_H_

#include <string>

#include "runtime/base/error.h"
#include "runtime/checkpoint/checkpoint.h"

namespace heiretsu::driver {

// A temporary directory under $TMPDIR (else /tmp), removed with everything in it when
// this goes out of scope.
class TempDir {
 public:
  TempDir() = default;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  Status Create(const std::string& prefix);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The newest complete checkpoint under `src` (a checkpoint or a --save-dir; each
// newer incomplete one is named on stderr) into `*dir` and its header, whose spec is
// written to `tmp`/SPEC_FILE as `*spec_path`. A checkpoint without a model card
// (format 2) is bad input naming it.
Status CheckpointSpec(const std::string& src, const TempDir& tmp, std::string* dir,
                      checkpoint::Header* header, std::string* spec_path);

// Runs `compiler` SPEC --emit plan -o PLAN_DIR (one rank), its report line discarded
// (its errors go to stderr). Returns its exit code.
int CompileQuietly(const std::string& compiler, const std::string& spec,
                   const std::string& plan_dir);

}  // namespace heiretsu::driver

#endif  // HEIRETSU_RUNTIME_DRIVER_CARD_H_
