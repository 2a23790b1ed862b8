// heiretsu-ckpt-diff A B: compares two checkpoints of the same model (the manifest
// lines "tensor NAME KIND f32 [SHAPE] OFFSET BYTES"). It prints the relative
// difference of all parameter values taken as one vector, |a - b| / |b| (L2) — the
// parity metric — and, for information, the tensor with the largest elementwise
// relative difference max |a - b| / max |b|. That per-tensor figure is not a parity
// criterion: AdamW turns rounding noise in a gradient that is zero in exact
// arithmetic (the key bias: softmax ignores a per-query constant) into updates of
// the learning rate's size, so such a tensor holds amplified noise on any layout.
// --all adds the AdamW moments. Exit 1 if the manifests list different tensors.
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Entry {
  std::string name, kind;
  long long offset = 0, bytes = 0;
};

bool ReadManifest(const std::string& dir, std::vector<Entry>* out) {
  std::ifstream in(dir + "/manifest.txt");
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string word;
    ls >> word;
    if (word != "tensor") continue;
    Entry e;
    std::string dtype, shape;
    ls >> e.name >> e.kind >> dtype >> shape >> e.offset >> e.bytes;
    out->push_back(e);
  }
  return !out->empty();
}

std::vector<float> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: heiretsu-ckpt-diff CKPT_A CKPT_B [--all]\n");
    return 2;
  }
  bool all = argc > 3 && std::string(argv[3]) == "--all";
  std::vector<Entry> ea, eb;
  if (!ReadManifest(argv[1], &ea) || !ReadManifest(argv[2], &eb)) {
    std::fprintf(stderr, "cannot read the manifests\n");
    return 2;
  }
  if (ea.size() != eb.size()) {
    std::fprintf(stderr, "different tensor lists (%zu vs %zu)\n", ea.size(), eb.size());
    return 1;
  }
  std::vector<float> a = ReadAll(std::string(argv[1]) + "/tensors.bin");
  std::vector<float> b = ReadAll(std::string(argv[2]) + "/tensors.bin");
  double worst = 0, diff_sq = 0, ref_sq = 0;
  std::string worst_name;
  size_t compared = 0;
  for (size_t i = 0; i < ea.size(); ++i) {
    if (ea[i].name != eb[i].name || ea[i].kind != eb[i].kind || ea[i].bytes != eb[i].bytes) {
      std::fprintf(stderr, "tensor %zu differs: %s %s vs %s %s\n", i, ea[i].name.c_str(),
                   ea[i].kind.c_str(), eb[i].name.c_str(), eb[i].kind.c_str());
      return 1;
    }
    if (!all && ea[i].kind != "value") continue;
    double num = 0, den = 0;
    for (long long k = 0; k < ea[i].bytes / 4; ++k) {
      double x = a[ea[i].offset / 4 + k], y = b[eb[i].offset / 4 + k];
      num = std::max(num, std::fabs(x - y));
      den = std::max(den, std::fabs(y));
      diff_sq += (x - y) * (x - y);
      ref_sq += y * y;
    }
    double rel = den > 0 ? num / den : num;
    if (rel >= worst) {
      worst = rel;
      worst_name = ea[i].name + " " + ea[i].kind;
    }
    ++compared;
  }
  std::printf("%zu tensors, rel diff %.3g (largest per tensor: %.3g, %s)\n", compared,
              ref_sq > 0 ? std::sqrt(diff_sq / ref_sq) : std::sqrt(diff_sq), worst,
              worst_name.c_str());
  return 0;
}
