// heiretsu-bpe: runs heiretsu's GPT-2 encoder and decoder (runtime/data/bpe.h) for the
// test that compares them with gpt-3-encoder's JavaScript (test/e2e/bpe.test).
//   heiretsu-bpe encode VOCAB_DIR FILE...     "== FILE", then its ids, one per line
//   heiretsu-bpe roundtrip VOCAB_DIR FILE...  decode(encode(bytes)) == bytes for each
//   heiretsu-bpe dump SHARD...                a shard's tokens, one per line
// Exits 1 when a round trip differs, 2 on bad input.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "runtime/data/bpe.h"
#include "runtime/data/shards.h"

namespace {

using heiretsu::data::DataError;

int Fail(const DataError& err) {
  std::fprintf(stderr, "heiretsu-bpe: %s\n", err.message.c_str());
  return err.exit_code();
}

std::optional<DataError> ReadFile(const std::string& path, std::string* text) {
  heiretsu::data::InputFile in;
  if (auto err = in.Open(path)) return err;
  return in.ReadAll(text);
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const char* usage = "usage: heiretsu-bpe encode|roundtrip VOCAB_DIR FILE... | dump SHARD...\n";
  if (args.size() >= 2 && args[0] == "dump") {
    for (size_t k = 1; k < args.size(); ++k) {
      std::vector<uint16_t> tokens;
      if (auto err = heiretsu::data::ReadShard(args[k], 65536, &tokens)) return Fail(*err);
      for (uint16_t t : tokens) std::printf("%u\n", static_cast<unsigned>(t));
    }
    return 0;
  }
  if (args.size() < 3 || (args[0] != "encode" && args[0] != "roundtrip")) {
    std::fputs(usage, stderr);
    return 2;
  }
  std::unique_ptr<heiretsu::data::Gpt2Bpe> bpe;
  if (auto err = heiretsu::data::Gpt2Bpe::Load(args[1], &bpe)) return Fail(*err);
  int rc = 0;
  for (size_t k = 2; k < args.size(); ++k) {
    std::string text;
    if (auto err = ReadFile(args[k], &text)) return Fail(*err);
    std::vector<int32_t> ids;
    const int64_t replaced = bpe->Encode(text, &ids);
    if (args[0] == "encode") {
      std::printf("== %s\n", args[k].c_str());
      for (int32_t id : ids) std::printf("%d\n", id);
      continue;
    }
    std::string back;
    if (auto err = bpe->Decode(ids, &back)) return Fail(*err);
    if (back == text) {
      std::printf("%s: %zu bytes, %zu tokens, round trip ok\n", args[k].c_str(), text.size(),
                  ids.size());
      continue;
    }
    size_t at = 0;
    while (at < back.size() && at < text.size() && back[at] == text[at]) ++at;
    std::printf(
        "%s: round trip differs at byte %zu (%lld ill-formed UTF-8 sequences read as U+FFFD)\n",
        args[k].c_str(), at, static_cast<long long>(replaced));
    rc = 1;
  }
  return rc;
}
