//===- heiretsu-spec-fuzz.cpp - mutation fuzzer for the spec frontend -----===//
//
// Mutates seed specs (bytes, tokens, splices) and runs each mutant through the
// whole frontend in process: validation, lexer, parser, model builder and the MLIR
// verifier. The properties checked:
//   - nothing crashes, hangs or overflows the stack (a crash fails the test);
//   - a rejected spec gets exactly one error, positioned inside the file;
//   - an accepted spec always yields IR that verifies.
// A failing mutant is written to `fuzz-failure.hr` in the working directory.
//
// usage: heiretsu-spec-fuzz [--iterations N] [--seed S] SEED_FILE...
//
//===----------------------------------------------------------------------===//

#include "compiler/RegisterAll.h"
#include "compiler/frontend/ModelBuilder.h"
#include "compiler/frontend/Parser.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>

using namespace heiretsu;

namespace {

const char *kDictionary[] = {
    "{", "}", "(", ")", "=", ",", ";", "+", "-", "*", "/", "//", "%", "#",
    "\"", "model", "block", "every", "else", "x", "tokens", "targets", "loss",
    "embedding(tokens)", "layernorm(x)", "rmsnorm(x)", "attention(x)", "mlp(x)",
    "moe(x, experts = 4)", "head(x)", "cross_entropy(x, targets)", "heads",
    "kv_heads", "d_model", "vocab", "layers", "context", "0", "-1", "1", "3",
    "1e309", "99999999999999999999", "4294967296", "0.5", "true", "none",
    "gelu", "swiglu", "learned", "tied = false", "rope = 10000", "\xff", "\xc3\x28",
    "" /* a NUL byte */, "\n", "((((((((", "))))))))"};

std::string mutate(std::string s, const std::vector<std::string> &seeds,
                   std::mt19937_64 &rng) {
  auto pick = [&](size_t n) { return n ? std::uniform_int_distribution<size_t>(0, n - 1)(rng) : 0; };
  int rounds = 1 + static_cast<int>(pick(4));
  for (int r = 0; r < rounds; ++r) {
    size_t at = pick(s.size() + 1);
    switch (pick(7)) {
    case 0: // flip a byte
      if (!s.empty())
        s[pick(s.size())] ^= static_cast<char>(1u << pick(8));
      break;
    case 1: // insert a random byte
      s.insert(s.begin() + at, static_cast<char>(pick(256)));
      break;
    case 2: { // delete a range
      size_t len = std::min(s.size() - std::min(at, s.size()), pick(16) + 1);
      s.erase(std::min(at, s.size()), len);
      break;
    }
    case 3: { // insert a dictionary token
      const char *tok = kDictionary[pick(sizeof kDictionary / sizeof *kDictionary)];
      s.insert(at, tok[0] ? std::string(tok) : std::string(1, '\0'));
      break;
    }
    case 4: { // duplicate a range
      size_t len = pick(64) + 1;
      if (at < s.size())
        s.insert(at, s.substr(at, len));
      break;
    }
    case 5: { // splice a piece of another seed
      const std::string &other = seeds[pick(seeds.size())];
      size_t from = pick(other.size() + 1);
      s.insert(at, other.substr(from, pick(80) + 1));
      break;
    }
    case 6: { // replace a number-like run of digits with an extreme value
      size_t d = s.find_first_of("0123456789", at);
      if (d != std::string::npos) {
        size_t e = s.find_first_not_of("0123456789", d);
        const char *vals[] = {"0", "999999999999", "7", "1", "65536", "3"};
        s.replace(d, (e == std::string::npos ? s.size() : e) - d, vals[pick(6)]);
      }
      break;
    }
    }
  }
  return s;
}

struct Outcome {
  bool accepted = false;
  std::string error; // empty when accepted
  bool bad = false;  // a property was violated
  std::string why;
};

Outcome runOne(mlir::MLIRContext &ctx, const std::string &text) {
  Outcome o;
  std::optional<frontend::Error> err = frontend::validateSpecText(text);
  frontend::Spec spec;
  if (!err)
    err = frontend::parseSpec(text, spec);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  frontend::ModelSummary summary;
  frontend::BuildOptions options;
  options.batch = 2;
  if (!err)
    err = frontend::buildModel(ctx, "fuzz.hr", spec, options, module, summary);
  if (err) {
    o.error = err->message;
    size_t lines = 1 + std::count(text.begin(), text.end(), '\n');
    if (err->message.empty()) {
      o.bad = true;
      o.why = "empty error message";
    } else if (err->loc.line == 0 || err->loc.line > lines) {
      o.bad = true;
      o.why = "error position line " + std::to_string(err->loc.line) +
              " is outside the file (" + std::to_string(lines) + " lines)";
    }
    return o;
  }
  o.accepted = true;
  mlir::ScopedDiagnosticHandler quiet(&ctx, [](mlir::Diagnostic &) {
    return mlir::success();
  });
  if (mlir::failed(mlir::verify(*module))) {
    o.bad = true;
    o.why = "accepted spec produced IR that does not verify";
  }
  return o;
}

} // namespace

int main(int argc, char **argv) {
  uint64_t iterations = 2000, seed = 1;
  std::vector<std::string> seeds;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc)
      iterations = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else {
      std::ifstream in(a, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "heiretsu-spec-fuzz: cannot read %s\n", a.c_str());
        return 2;
      }
      seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "usage: heiretsu-spec-fuzz [--iterations N] [--seed S] SEED_FILE...\n");
    return 2;
  }
  mlir::DialectRegistry registry;
  registerAllDialects(registry);
  mlir::MLIRContext ctx(registry);
  ctx.disableMultithreading();

  std::mt19937_64 rng(seed);
  uint64_t accepted = 0, rejected = 0;
  std::map<std::string, uint64_t> kinds;
  auto start = std::chrono::steady_clock::now();
  double slowest = 0;
  for (uint64_t it = 0; it < iterations; ++it) {
    const std::string &base = seeds[it % seeds.size()];
    std::string text = it < seeds.size() ? base : mutate(base, seeds, rng);
    auto t0 = std::chrono::steady_clock::now();
    Outcome o = runOne(ctx, text);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    slowest = std::max(slowest, secs);
    if (o.bad) {
      std::ofstream("fuzz-failure.hr", std::ios::binary) << text;
      std::fprintf(stderr, "FAIL iteration %llu: %s (input in fuzz-failure.hr)\n",
                   static_cast<unsigned long long>(it), o.why.c_str());
      return 1;
    }
    if (it < seeds.size() && !o.accepted) {
      std::fprintf(stderr, "FAIL seed %llu is rejected: %s\n",
                   static_cast<unsigned long long>(it), o.error.c_str());
      return 1;
    }
    if (o.accepted) {
      ++accepted;
    } else {
      ++rejected;
      // Group messages by their first words for the report.
      std::string kind = o.error.substr(0, o.error.find_first_of("'(0123456789"));
      ++kinds[kind];
    }
  }
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("spec fuzz: %llu mutants, %llu accepted (IR verified), %llu rejected with a "
              "positioned error; %.1f s total, slowest %.3f s\n",
              static_cast<unsigned long long>(iterations),
              static_cast<unsigned long long>(accepted),
              static_cast<unsigned long long>(rejected), total, slowest);
  std::vector<std::pair<uint64_t, std::string>> sorted;
  for (auto &[k, n] : kinds)
    sorted.emplace_back(n, k);
  std::sort(sorted.rbegin(), sorted.rend());
  for (size_t i = 0; i < std::min<size_t>(sorted.size(), 12); ++i)
    std::printf("  %6llu  %s\n", static_cast<unsigned long long>(sorted[i].first),
                sorted[i].second.c_str());
  return 0;
}
