// Unit tests of the data layer: llm.c shard reading and writing with every validation
// error, the layout-independent sampler contract, `data prepare` and the default corpus.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "runtime/data/prepare.h"
#include "runtime/data/shards.h"

namespace heiretsu::data {

// So that a failed EXPECT_EQ(error, std::nullopt) shows the message.
void PrintTo(const DataError& err, std::ostream* os) { *os << err.message; }

namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "heiretsu_data_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

void AppendLe32(int32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i)
    out->push_back(static_cast<char>(static_cast<uint32_t>(v) >> (8 * i)));
}

// Shard bytes encoded independently of the code under test.
std::string ShardBytes(int32_t magic, int32_t version, int32_t count,
                       const std::vector<uint16_t>& tokens) {
  std::string bytes;
  AppendLe32(magic, &bytes);
  AppendLe32(version, &bytes);
  AppendLe32(count, &bytes);
  bytes.resize(1024, '\0');
  for (uint16_t t : tokens) {
    bytes.push_back(static_cast<char>(t & 0xff));
    bytes.push_back(static_cast<char>(t >> 8));
  }
  return bytes;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> DirNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The message of reading `path` with `vocab`, which must fail as bad input.
std::string ReadError(const std::string& path, int64_t vocab = 65536) {
  std::vector<uint16_t> tokens;
  std::optional<DataError> err = ReadShard(path, vocab, &tokens);
  if (!err) return "(no error)";
  EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
  return err->message;
}

// ---- shards ----

TEST_F(DataTest, ShardRoundTripIsTheLlmcFormat) {
  const std::vector<uint16_t> tokens = {0, 1, 255, 256, 50256, 65535};
  ASSERT_EQ(WriteShard(Path("a.bin"), tokens), std::nullopt);
  EXPECT_EQ(ReadBytes(Path("a.bin")), ShardBytes(20240520, 1, 6, tokens));
  std::vector<uint16_t> read;
  ASSERT_EQ(ReadShard(Path("a.bin"), 65536, &read), std::nullopt);
  EXPECT_EQ(read, tokens);
  // No temporary file is left beside the shard.
  EXPECT_EQ(DirNames(dir_), std::vector<std::string>{"a.bin"});

  ASSERT_EQ(WriteShard(Path("empty.bin"), {}), std::nullopt);
  ASSERT_EQ(ReadShard(Path("empty.bin"), 256, &read), std::nullopt);
  EXPECT_TRUE(read.empty());
}

TEST_F(DataTest, BadMagic) {
  WriteBytes(Path("x.bin"), ShardBytes(12345, 1, 2, {1, 2}));
  EXPECT_EQ(ReadError(Path("x.bin")), Path("x.bin") + ": bad magic 12345 (expected 20240520)");
}

TEST_F(DataTest, BadVersion) {
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 2, 2, {1, 2}));
  EXPECT_EQ(ReadError(Path("x.bin")),
            Path("x.bin") + ": unsupported version 2 (expected 1, uint16 tokens)");
}

TEST_F(DataTest, TruncatedHeader) {
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 1, 0, {}).substr(0, 100));
  EXPECT_EQ(
      ReadError(Path("x.bin")),
      Path("x.bin") + ": truncated header: the file has 100 bytes but the header is 1024 bytes");
}

TEST_F(DataTest, TruncatedTokens) {
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 1, 1000, std::vector<uint16_t>(750, 7)));
  EXPECT_EQ(ReadError(Path("x.bin")),
            Path("x.bin") +
                ": truncated: header says 1000 tokens (2000 bytes) but the file has 1500 bytes "
                "after the header");
}

TEST_F(DataTest, TrailingBytes) {
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 1, 3, {1, 2, 3}) + "abcde");
  EXPECT_EQ(ReadError(Path("x.bin")),
            Path("x.bin") +
                ": 5 trailing bytes: header says 3 tokens (6 bytes) but the file has 11 bytes "
                "after the header");
}

TEST_F(DataTest, NegativeTokenCount) {
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 1, -5, {}));
  EXPECT_EQ(ReadError(Path("x.bin")), Path("x.bin") + ": negative token count -5 in the header");
}

TEST_F(DataTest, TokenOutsideVocab) {
  std::vector<uint16_t> tokens(20, 65);
  tokens[17] = 300;
  WriteBytes(Path("x.bin"), ShardBytes(20240520, 1, 20, tokens));
  EXPECT_EQ(ReadError(Path("x.bin"), 256),
            Path("x.bin") + ": token 300 at index 17 (byte offset 1058) is >= vocab 256");
  std::vector<uint16_t> read;
  EXPECT_EQ(ReadShard(Path("x.bin"), 301, &read), std::nullopt);
}

TEST_F(DataTest, MissingFileAndDirectoryAreRefused) {
  EXPECT_EQ(ReadError(Path("none.bin")),
            Path("none.bin") + ": cannot open: No such file or directory");
  EXPECT_EQ(ReadError(dir_), dir_ + ": is a directory, not a file");
  ASSERT_EQ(::mkfifo(Path("fifo.bin").c_str(), 0600), 0);
  EXPECT_EQ(ReadError(Path("fifo.bin")), Path("fifo.bin") + ": not a regular file");
}

TEST_F(DataTest, ListShardFilesTakesSortedBinFilesOfADirectory) {
  ASSERT_EQ(WriteShard(Path("b.bin"), {1}), std::nullopt);
  ASSERT_EQ(WriteShard(Path("a.bin"), {2}), std::nullopt);
  WriteBytes(Path("notes.txt"), "not a shard");
  fs::create_directory(Path("c.bin"));
  std::vector<std::string> files;
  ASSERT_EQ(ListShardFiles(dir_, &files), std::nullopt);
  EXPECT_EQ(files, (std::vector<std::string>{Path("a.bin"), Path("b.bin")}));
  ASSERT_EQ(ListShardFiles(Path("b.bin"), &files), std::nullopt);
  EXPECT_EQ(files, std::vector<std::string>{Path("b.bin")});

  fs::create_directory(Path("empty"));
  std::optional<DataError> err = ListShardFiles(Path("empty"), &files);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, Path("empty") + ": no .bin shard files in this directory");
  err = ListShardFiles(Path("none"), &files);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, Path("none") + ": cannot open: No such file or directory");
}

TEST_F(DataTest, DatasetIsTheConcatenationOfItsShards) {
  ASSERT_EQ(WriteShard(Path("a.bin"), {10, 11, 12}), std::nullopt);
  ASSERT_EQ(WriteShard(Path("b.bin"), {}), std::nullopt);
  ASSERT_EQ(WriteShard(Path("c.bin"), {13, 14}), std::nullopt);
  Dataset data;
  ASSERT_EQ(LoadDataset({Path("a.bin"), Path("b.bin"), Path("c.bin")}, 256, &data), std::nullopt);
  EXPECT_EQ(data.num_tokens(), 5);
  std::vector<int32_t> out(4);
  data.CopyTokens(1, 4, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{11, 12, 13, 14}));
  EXPECT_EQ(data.Describe(), Path("a.bin") + " .. " + Path("c.bin") + " (3 shards)");
}

// ---- sampler ----

// A stream whose token at position p is p, split into two shards so windows cross a
// shard boundary.
Dataset PositionStream(int64_t n) {
  std::vector<uint16_t> tokens(n);
  for (int64_t p = 0; p < n; ++p) tokens[p] = static_cast<uint16_t>(p);
  Dataset data;
  data.Append("first", std::vector<uint16_t>(tokens.begin(), tokens.begin() + n / 3));
  data.Append("second", std::vector<uint16_t>(tokens.begin() + n / 3, tokens.end()));
  return data;
}

std::optional<Sampler> MakeSampler(const Dataset& data, uint64_t seed, int64_t seq) {
  std::optional<Sampler> sampler;
  std::optional<DataError> err = Sampler::Create(data, seed, seq, &sampler);
  EXPECT_EQ(err, std::nullopt);
  return sampler;
}

// Inputs then targets of rows [begin, end) of step `step`.
std::vector<int32_t> Rows(Sampler& sampler, int64_t step, int64_t global_batch, int64_t begin,
                          int64_t end) {
  const int64_t n = (end - begin) * sampler.seq();
  std::vector<int32_t> inputs(n), targets(n);
  sampler.FillBatchRows(step, global_batch, begin, end, inputs.data(), targets.data());
  inputs.insert(inputs.end(), targets.begin(), targets.end());
  return inputs;
}

TEST(Sampler, WindowsOverlapByOneToken) {
  const Dataset data = PositionStream(1000);
  EXPECT_EQ(MakeSampler(data, 1, 10)->num_windows(), 99);  // (1000 - 1) / 10
  const Dataset tight = PositionStream(11);
  EXPECT_EQ(MakeSampler(tight, 1, 10)->num_windows(), 1);
}

TEST(Sampler, RefusesADatasetTooSmallForOneSequence) {
  Dataset data;
  data.Append("tiny.bin", std::vector<uint16_t>(8, 1));
  std::optional<Sampler> sampler;
  std::optional<DataError> err = Sampler::Create(data, 1, 8, &sampler);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
  EXPECT_EQ(err->message,
            "tiny.bin: 8 tokens are too few for one sequence of length 8 (it needs 9: inputs "
            "plus the next token)");
  EXPECT_FALSE(sampler);
  err = Sampler::Create(data, 1, 0, &sampler);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "sequence length 0 is not positive");
}

TEST(Sampler, SameSeedSameBatchesOtherSeedOtherBatches) {
  const Dataset data = PositionStream(4000);
  std::optional<Sampler> a = MakeSampler(data, 7, 16);
  std::optional<Sampler> b = MakeSampler(data, 7, 16);
  std::optional<Sampler> c = MakeSampler(data, 8, 16);
  for (int64_t step : {0, 3, 1000}) {
    EXPECT_EQ(Rows(*a, step, 8, 0, 8), Rows(*b, step, 8, 0, 8));
    EXPECT_NE(Rows(*a, step, 8, 0, 8), Rows(*c, step, 8, 0, 8));
  }
}

TEST(Sampler, BatchRowsDoNotDependOnHowTheyAreSplit) {
  const Dataset data = PositionStream(4000);
  std::optional<Sampler> whole = MakeSampler(data, 3, 16);
  std::optional<Sampler> halves = MakeSampler(data, 3, 16);
  std::optional<Sampler> single = MakeSampler(data, 3, 16);
  for (int64_t step : {0, 5, 123}) {
    std::vector<int32_t> all = Rows(*whole, step, 4, 0, 4);
    std::vector<int32_t> lo = Rows(*halves, step, 4, 0, 2);
    std::vector<int32_t> hi = Rows(*halves, step, 4, 2, 4);
    // Rows() puts inputs first, then targets: interleave the halves the same way.
    const size_t half = lo.size() / 2;
    std::vector<int32_t> joined(lo.begin(), lo.begin() + half);
    joined.insert(joined.end(), hi.begin(), hi.begin() + half);
    joined.insert(joined.end(), lo.begin() + half, lo.end());
    joined.insert(joined.end(), hi.begin() + half, hi.end());
    EXPECT_EQ(all, joined);
    // Row i of step s is sequence s * global_batch + i.
    std::vector<int32_t> in(16), tg(16);
    single->FillSequence(step * 4 + 3, in.data(), tg.data());
    EXPECT_TRUE(std::equal(in.begin(), in.end(), all.begin() + 3 * 16));
    EXPECT_TRUE(std::equal(tg.begin(), tg.end(), all.begin() + 4 * 16 + 3 * 16));
  }
}

TEST(Sampler, TargetsAreInputsShiftedByOne) {
  const Dataset data = PositionStream(1000);
  std::optional<Sampler> sampler = MakeSampler(data, 11, 10);
  std::vector<int32_t> in(10), tg(10);
  for (int64_t g = 0; g < 2 * sampler->num_windows(); ++g) {
    sampler->FillSequence(g, in.data(), tg.data());
    ASSERT_EQ(in[0] % 10, 0) << "windows start at multiples of seq";
    for (int t = 0; t < 10; ++t) {
      ASSERT_EQ(in[t], in[0] + t);
      ASSERT_EQ(tg[t], in[0] + t + 1);
    }
  }
}

TEST(Sampler, EveryWindowOncePerEpochInANewOrderEachEpoch) {
  const Dataset data = PositionStream(1000);
  std::optional<Sampler> sampler = MakeSampler(data, 5, 10);
  const int64_t w = sampler->num_windows();
  std::vector<std::vector<int32_t>> orders;
  std::vector<int32_t> in(10), tg(10);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int32_t> starts;
    for (int64_t i = 0; i < w; ++i) {
      sampler->FillSequence(epoch * w + i, in.data(), tg.data());
      starts.push_back(in[0]);
    }
    std::set<int32_t> distinct(starts.begin(), starts.end());
    EXPECT_EQ(static_cast<int64_t>(distinct.size()), w);
    EXPECT_EQ(*distinct.begin(), 0);
    EXPECT_EQ(*distinct.rbegin(), (w - 1) * 10);
    orders.push_back(starts);
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
  // Going back to an earlier epoch recomputes the same order.
  sampler->FillSequence(3, in.data(), tg.data());
  EXPECT_EQ(in[0], orders[0][3]);
}

TEST(Sampler, OrderIsPinned) {
  // Regression guard: changing these changes which tokens every existing run trains on
  // (and breaks resuming runs started before the change). The values were checked against
  // an independent Python implementation of the contract written in shards.h.
  const Dataset data = PositionStream(1000);
  std::optional<Sampler> sampler = MakeSampler(data, 1234, 10);
  std::vector<int32_t> starts;
  std::vector<int32_t> in(10), tg(10);
  for (int64_t g = 0; g < 8; ++g) {
    sampler->FillSequence(g, in.data(), tg.data());
    starts.push_back(in[0] / 10);
  }
  EXPECT_EQ(starts, (std::vector<int32_t>{6, 96, 77, 69, 56, 38, 4, 20}));
}

// ---- data prepare ----

TEST_F(DataTest, PrepareSplitsTheByteStreamIntoShards) {
  WriteBytes(Path("a.txt"), "0123456789");
  WriteBytes(Path("b.txt"), "abcdefg");
  PrepareSummary summary;
  ASSERT_EQ(PrepareShards({Path("a.txt"), Path("b.txt")}, "byte", Path("out/nested"), 5, &summary),
            std::nullopt);
  EXPECT_EQ(summary.files, 2);
  EXPECT_EQ(summary.tokens, 17);
  EXPECT_EQ(summary.shards,
            (std::vector<std::string>{
                Path("out/nested/train_000000.bin"), Path("out/nested/train_000001.bin"),
                Path("out/nested/train_000002.bin"), Path("out/nested/train_000003.bin")}));
  std::vector<std::string> files;
  ASSERT_EQ(ListShardFiles(Path("out/nested"), &files), std::nullopt);
  EXPECT_EQ(files, summary.shards);
  Dataset data;
  ASSERT_EQ(LoadDataset(files, kByteVocab, &data), std::nullopt);
  std::vector<int32_t> tokens(17);
  data.CopyTokens(0, 17, tokens.data());
  const std::string text = "0123456789abcdefg";
  EXPECT_EQ(tokens, std::vector<int32_t>(text.begin(), text.end()));
  std::vector<uint16_t> last;
  ASSERT_EQ(ReadShard(files.back(), kByteVocab, &last), std::nullopt);
  EXPECT_EQ(last, (std::vector<uint16_t>{'f', 'g'}));
}

TEST_F(DataTest, PrepareRefusesAnOutputDirectoryHoldingShards) {
  WriteBytes(Path("a.txt"), "hello");
  PrepareSummary summary;
  ASSERT_EQ(PrepareShards({Path("a.txt")}, "byte", Path("out"), 100, &summary), std::nullopt);
  const std::string before = ReadBytes(Path("out/train_000000.bin"));
  WriteBytes(Path("b.txt"), "other");
  std::optional<DataError> err = PrepareShards({Path("b.txt")}, "byte", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
  EXPECT_EQ(err->message, Path("out") +
                              ": already holds token shards (train_000000.bin); refusing to "
                              "overwrite them: give a new or empty directory");
  EXPECT_EQ(ReadBytes(Path("out/train_000000.bin")), before);
  // A directory with other files only is fine.
  fs::create_directory(Path("other"));
  WriteBytes(Path("other/README"), "notes");
  EXPECT_EQ(PrepareShards({Path("b.txt")}, "byte", Path("other"), 100, &summary), std::nullopt);
}

TEST_F(DataTest, PrepareRefusesBadInputsBeforeWritingAnything) {
  WriteBytes(Path("a.txt"), "hello");
  PrepareSummary summary;
  std::optional<DataError> err =
      PrepareShards({Path("a.txt"), Path("missing.txt")}, "byte", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, Path("missing.txt") + ": cannot open: No such file or directory");
  EXPECT_FALSE(fs::exists(Path("out")));

  fs::create_directory(Path("texts"));
  err = PrepareShards({Path("texts")}, "byte", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, Path("texts") + ": is a directory, not a file");

  WriteBytes(Path("empty.txt"), "");
  err = PrepareShards({Path("empty.txt")}, "byte", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "the input files are empty: there is nothing to tokenize");

  err = PrepareShards({}, "byte", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "no input files to prepare");
  EXPECT_FALSE(fs::exists(Path("out")));
}

TEST_F(DataTest, PrepareTokenizers) {
  WriteBytes(Path("a.txt"), "hello");
  PrepareSummary summary;
  // gpt2 without its vocabulary: refused before anything is written.
  std::optional<DataError> err =
      PrepareShards({Path("a.txt")}, "gpt2", Path("out"), 100, &summary, Path("novocab"));
  ASSERT_TRUE(err);
  EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
  EXPECT_EQ(err->message.rfind(Path("novocab") + "/encoder.json: not found: ", 0), 0u) << err->message;
  EXPECT_FALSE(fs::exists(Path("out")));
  err = PrepareShards({Path("a.txt")}, "bpe", Path("out"), 100, &summary);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "--tokenizer: expected byte|gpt2, got 'bpe'");
  EXPECT_FALSE(fs::exists(Path("out")));
}

// ---- default corpus ----

TEST_F(DataTest, CorpusFilesSkipSymlinksAndDuplicates) {
  fs::create_directory(Path("lic"));
  fs::create_directory(Path("outside"));
  WriteBytes(Path("lic/B"), "bee");
  WriteBytes(Path("lic/A"), "ay");
  WriteBytes(Path("outside/X"), "ex");
  fs::create_symlink("B", Path("lic/B-alias"));
  fs::create_symlink("../outside/X", Path("lic/X"));
  fs::create_directory(Path("lic/sub"));
  fs::create_symlink("sub", Path("lic/sub-link"));
  fs::create_symlink("gone", Path("lic/dangling"));
  fs::create_hard_link(Path("lic/A"), Path("lic/C-hardlink"));
  EXPECT_EQ(CorpusFilesIn(Path("lic")), (std::vector<std::string>{Path("lic/A"), Path("lic/B")}));
  EXPECT_TRUE(CorpusFilesIn(Path("none")).empty());
}

TEST_F(DataTest, EnsureCorpusPreparesOnceAndNoticesChanges) {
  WriteBytes(Path("a.txt"), "0123456789");
  WriteBytes(Path("b.txt"), "abc");
  const std::vector<std::string> files = {Path("a.txt"), Path("b.txt")};
  PrepareSummary first;
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &first), std::nullopt);
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(first.files, 2);
  EXPECT_EQ(first.tokens, 13);
  EXPECT_EQ(first.shards.size(), 4u);
  EXPECT_EQ(DirNames(Path("cache")),
            (std::vector<std::string>{"corpus.manifest", "train_000000.bin", "train_000001.bin",
                                      "train_000002.bin", "train_000003.bin"}));

  PrepareSummary second;
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &second), std::nullopt);
  EXPECT_TRUE(second.reused);
  EXPECT_EQ(second.files, 2);
  EXPECT_EQ(second.tokens, 13);
  EXPECT_EQ(second.shards, first.shards);

  // A lost shard, then a changed source, each make it prepare again.
  fs::remove(Path("cache/train_000002.bin"));
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &second), std::nullopt);
  EXPECT_FALSE(second.reused);
  EXPECT_EQ(second.shards, first.shards);
  WriteBytes(Path("a.txt"), "01");
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &second), std::nullopt);
  EXPECT_FALSE(second.reused);
  EXPECT_EQ(second.tokens, 5);
  // The stale third and fourth shards of the longer corpus are gone.
  EXPECT_EQ(DirNames(Path("cache")),
            (std::vector<std::string>{"corpus.manifest", "train_000000.bin", "train_000001.bin"}));
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &second), std::nullopt);
  EXPECT_TRUE(second.reused);

  // A damaged manifest is not trusted.
  WriteBytes(Path("cache/corpus.manifest"), "heiretsu-corpus 1\ntokenizer byte\n");
  ASSERT_EQ(EnsureCorpus(files, Path("cache"), 4, &second), std::nullopt);
  EXPECT_FALSE(second.reused);
}

TEST_F(DataTest, DefaultCorpusIsTheLicenceTexts) {
  if (!fs::is_directory(kDefaultCorpusDir)) GTEST_SKIP() << kDefaultCorpusDir << " is missing";
  const std::vector<std::string> files = DefaultCorpusFiles();
  ASSERT_FALSE(files.empty());
  EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
  int64_t bytes = 0;
  for (const std::string& f : files) {
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(f))) << f;
    bytes += static_cast<int64_t>(fs::file_size(f));
  }
  PrepareSummary summary;
  ASSERT_EQ(EnsureDefaultCorpus(Path("corpus"), &summary), std::nullopt);
  EXPECT_EQ(summary.files, static_cast<int64_t>(files.size()));
  EXPECT_EQ(summary.tokens, bytes);
  Dataset data;
  ASSERT_EQ(LoadDataset(summary.shards, kByteVocab, &data), std::nullopt);
  EXPECT_EQ(data.num_tokens(), bytes);
  std::optional<Sampler> sampler = MakeSampler(data, 1, 128);
  EXPECT_EQ(sampler->num_windows(), (bytes - 1) / 128);
  ASSERT_EQ(EnsureDefaultCorpus(Path("corpus"), &summary), std::nullopt);
  EXPECT_TRUE(summary.reused);
}

}  // namespace
}  // namespace heiretsu::data
