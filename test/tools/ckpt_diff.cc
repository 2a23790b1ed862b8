// heiretsu-ckpt-diff A B: compares two checkpoints of the same model, of any layouts
// (the manifest lines "tensor NAME KIND f32 [SHAPE] FILE OFFSET BYTES" of format 2:
// tensors matched by name and kind, from whichever tensor file holds them). It prints the relative
// difference of all parameter values taken as one vector, |a - b| / |b| (L2) — the
// parity metric — and, for information, the tensor with the largest elementwise
// relative difference max |a - b| / max |b|. That per-tensor figure is not a parity
// criterion: AdamW turns rounding noise in a gradient that is zero in exact
// arithmetic (the key bias: softmax ignores a per-query constant) into updates of
// the learning rate's size, so such a tensor holds amplified noise on any layout.
// --all adds the AdamW moments. Exit 1 if the manifests list different tensors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Entry {
  std::string name, kind, file;
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
    ls >> e.name >> e.kind >> dtype >> shape >> e.file >> e.offset >> e.bytes;
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

// The floats of a tensor file, read once per file.
const std::vector<float>& FileOf(const std::string& dir, const std::string& file) {
  static std::map<std::string, std::vector<float>> files;
  auto [it, fresh] = files.emplace(dir + "/" + file, std::vector<float>());
  if (fresh) it->second = ReadAll(it->first);
  return it->second;
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
  std::map<std::pair<std::string, std::string>, const Entry*> by_name;
  for (const Entry& e : eb) by_name[{e.name, e.kind}] = &e;
  double worst = 0, diff_sq = 0, ref_sq = 0;
  std::string worst_name;
  size_t compared = 0;
  for (size_t i = 0; i < ea.size(); ++i) {
    auto it = by_name.find({ea[i].name, ea[i].kind});
    if (it == by_name.end() || it->second->bytes != ea[i].bytes) {
      std::fprintf(stderr, "tensor %s %s: %s in %s\n", ea[i].name.c_str(), ea[i].kind.c_str(),
                   it == by_name.end() ? "missing" : "of another size", argv[2]);
      return 1;
    }
    const Entry& other = *it->second;
    const std::vector<float>& a = FileOf(argv[1], ea[i].file);
    const std::vector<float>& b = FileOf(argv[2], other.file);
    if ((ea[i].offset + ea[i].bytes) / 4 > static_cast<long long>(a.size()) ||
        (other.offset + other.bytes) / 4 > static_cast<long long>(b.size())) {
      std::fprintf(stderr, "tensor %s %s: outside its file\n", ea[i].name.c_str(),
                   ea[i].kind.c_str());
      return 2;
    }
    if (!all && ea[i].kind != "value") continue;
    double num = 0, den = 0;
    for (long long k = 0; k < ea[i].bytes / 4; ++k) {
      double x = a[ea[i].offset / 4 + k], y = b[other.offset / 4 + k];
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
