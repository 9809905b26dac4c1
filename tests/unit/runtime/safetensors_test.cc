#include "runtime/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/common/address_space.h"
#include "tests/unit/common/fifo_read.h"
#include "tests/unit/common/open_fds.h"
#include "tests/unit/common/sanitizers.h"

namespace cellserve {
namespace {

// A file from a literal header and a data buffer: u64 LE length, header, data.
std::string MakeFile(const std::string& header, const std::string& data = "",
                     uint64_t header_len_override = UINT64_MAX) {
  uint64_t n = header_len_override == UINT64_MAX ? header.size() : header_len_override;
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

StatusOr<SafetensorsFile> Parse(const std::string& bytes) {
  return ParseSafetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Expects INVALID_ARGUMENT with every string of `needles` in the message.
void ExpectInvalid(const std::string& bytes, const std::vector<std::string>& needles) {
  StatusOr<SafetensorsFile> r = Parse(bytes);
  ASSERT_FALSE(r.ok()) << "parsed unexpectedly";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  for (const std::string& needle : needles) {
    EXPECT_NE(r.status().message().find(needle), std::string::npos)
        << "message '" << r.status().message() << "' lacks '" << needle << "'";
  }
}

SafetensorsFile SampleFile() {
  SafetensorsFile f;
  f.tensors["embedding"] =
      RawTensor::FromFloat(Tensor({2, 3}, {1, -2, 3.5f, 0, 1e-3f, -7}), DType::kF32);
  f.tensors["bias"] = RawTensor::FromFloat(Tensor({3}, {0.5f, 1.0f / 3, -65504}), DType::kF16);
  f.tensors["head"] = RawTensor::FromFloat(Tensor({1, 2}, {3.140625f, -0.1f}), DType::kBF16);
  f.metadata["format"] = "pt";
  return f;
}

std::string SampleBytes() {
  StatusOr<std::string> s = SerializeSafetensors(SampleFile());
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : std::string();
}

void ExpectSameFile(const SafetensorsFile& a, const SafetensorsFile& b) {
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    auto it = b.tensors.find(name);
    ASSERT_NE(it, b.tensors.end()) << name;
    EXPECT_EQ(t.dtype, it->second.dtype) << name;
    EXPECT_EQ(t.shape, it->second.shape) << name;
    EXPECT_EQ(t.bytes, it->second.bytes) << name;
  }
}

std::string TempPath(const std::string& stem) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string base = dir ? dir : "/tmp";
  return base + "/cellserve_" + stem + "_" + std::to_string(::getpid()) + ".safetensors";
}

// ---- round trips ----

TEST(SafetensorsTest, RoundTripF32) {
  SafetensorsFile f;
  std::vector<float> v = {0.0f, -0.0f, 1.0f / 3, 1e-40f, 3.4e38f,
                          std::numeric_limits<float>::infinity(), -1.5f, 42.0f};
  f.tensors["x"] = RawTensor::FromFloat(Tensor({2, 4}, v), DType::kF32);
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  StatusOr<SafetensorsFile> back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
  Tensor t = back->tensors.at("x").ToFloat();
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 4}));
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(std::memcmp(&t.values()[i], &v[i], 4), 0) << i;  // bit-exact, incl. -0 and inf
  }
}

TEST(SafetensorsTest, RoundTripF16WithRounding) {
  const float inf = std::numeric_limits<float>::infinity();
  const float min_sub = std::ldexp(1.0f, -24);  // smallest F16 subnormal
  std::vector<float> v = {1.0f / 3, -1.0f / 3, 65504.0f, 70000.0f, inf, -inf,
                          min_sub,  3 * min_sub, min_sub / 4, 1.0f, 0.0f, 2049.0f};
  SafetensorsFile f;
  f.tensors["h"] = RawTensor::FromFloat(Tensor({12}, v), DType::kF16);
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  StatusOr<SafetensorsFile> back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
  const std::vector<float> got = back->tensors.at("h").ToFloat().values();
  EXPECT_FLOAT_EQ(got[0], 0.333251953125f);  // 1/3 rounded to 11 significant bits
  EXPECT_FLOAT_EQ(got[1], -0.333251953125f);
  EXPECT_EQ(got[2], 65504.0f);
  EXPECT_EQ(got[3], inf);  // overflow
  EXPECT_EQ(got[4], inf);
  EXPECT_EQ(got[5], -inf);
  EXPECT_EQ(got[6], min_sub);
  EXPECT_EQ(got[7], 3 * min_sub);
  EXPECT_EQ(got[8], 0.0f);  // below half the smallest subnormal: flushes to zero
  EXPECT_EQ(got[9], 1.0f);
  EXPECT_EQ(got[10], 0.0f);
  EXPECT_EQ(got[11], 2048.0f);  // tie rounds to even
}

TEST(SafetensorsTest, RoundTripBF16) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {1.0f / 3, 3.140625f, -inf, 1e-40f, 256.0f, 257.0f};
  SafetensorsFile f;
  f.tensors["b"] = RawTensor::FromFloat(Tensor({3, 2}, v), DType::kBF16);
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  StatusOr<SafetensorsFile> back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
  const std::vector<float> got = back->tensors.at("b").ToFloat().values();
  EXPECT_FLOAT_EQ(got[0], 0.333984375f);
  EXPECT_EQ(got[1], 3.140625f);
  EXPECT_EQ(got[2], -inf);
  EXPECT_GT(got[3], 0.0f);      // subnormal survives (bf16 keeps the f32 exponent range)
  EXPECT_EQ(got[4], 256.0f);
  EXPECT_EQ(got[5], 256.0f);    // 257 is a tie between 256 and 258: even mantissa wins
}

TEST(SafetensorsTest, MixedFileAndMetadataRoundTrip) {
  SafetensorsFile f = SampleFile();
  f.metadata["note"] = "weights \"v2\" \xc3\xa9t\xc3\xa9";  // quotes and UTF-8
  f.metadata["empty"] = "";
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  StatusOr<SafetensorsFile> back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
}

TEST(SafetensorsTest, SerializedLayout) {
  std::string bytes = SampleBytes();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);  // header padded so data is 8-byte aligned
  // Data packed in name order: bias (6 bytes), embedding (24), head (4).
  EXPECT_EQ(bytes.size(), 8 + n + 6 + 24 + 4);
  std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"__metadata__\""), std::string::npos);
  EXPECT_NE(header.find("\"data_offsets\":[0,6]"), std::string::npos) << header;
  EXPECT_NE(header.find("\"data_offsets\":[6,30]"), std::string::npos) << header;
  EXPECT_NE(header.find("\"data_offsets\":[30,34]"), std::string::npos) << header;
}

TEST(SafetensorsTest, NoMetadataKeyWhenEmpty) {
  SafetensorsFile f;
  f.tensors["a"] = RawTensor::FromFloat(Tensor({1}, {1}), DType::kF32);
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->find("__metadata__"), std::string::npos);
}

TEST(SafetensorsTest, EmptyFileAndEmptyTensors) {
  SafetensorsFile f;
  StatusOr<std::string> bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok());
  StatusOr<SafetensorsFile> back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->tensors.empty());

  f.tensors["zero"] = RawTensor::FromFloat(Tensor({0, 5}), DType::kF16);
  f.tensors["scalar"] = RawTensor::FromFloat(Tensor({}, {7.0f}), DType::kF32);
  bytes = SerializeSafetensors(f);
  ASSERT_TRUE(bytes.ok());
  back = Parse(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
}

TEST(SafetensorsTest, AcceptsHandWrittenFileWithExtrasAndGaps) {
  // Unknown fields, a gap between tensors and unused trailing data are all allowed.
  std::string header =
      R"({"b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12], "extra": 1},)"
      R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  std::string data = std::string("\x00\x00\x80\x3f", 4) + "pad!" + std::string("\x00\x3c\x00\xc0", 4) + "tail";
  StatusOr<SafetensorsFile> r = Parse(MakeFile(header, data));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tensors.at("a").ToFloat().values(), std::vector<float>{1.0f});
  EXPECT_EQ(r->tensors.at("b").ToFloat().values(), (std::vector<float>{1.0f, -2.0f}));
}

TEST(SafetensorsTest, SerializeRejectsSizeMismatch) {
  SafetensorsFile f;
  RawTensor t;
  t.dtype = DType::kF32;
  t.shape = {2, 3};
  t.bytes.resize(20);
  f.tensors["w"] = t;
  StatusOr<std::string> s = SerializeSafetensors(f);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("'w'"), std::string::npos);
  EXPECT_NE(s.status().message().find("24"), std::string::npos) << s.status().message();
}

TEST(SafetensorsTest, SerializeRejectsReservedNameAndBadUtf8) {
  SafetensorsFile f;
  f.tensors["__metadata__"] = RawTensor::FromFloat(Tensor({1}, {1}), DType::kF32);
  EXPECT_EQ(SerializeSafetensors(f).status().code(), StatusCode::kInvalidArgument);
  SafetensorsFile g;
  g.tensors["bad\xff"] = RawTensor::FromFloat(Tensor({1}, {1}), DType::kF32);
  EXPECT_EQ(SerializeSafetensors(g).status().code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, WriteAndReadFile) {
  const std::string path = TempPath("write");
  SafetensorsFile f = SampleFile();
  ASSERT_TRUE(WriteSafetensors(path, f).ok());
  StatusOr<SafetensorsFile> back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ExpectSameFile(f, *back);
  // Overwrite in place.
  f.metadata["v"] = "2";
  ASSERT_TRUE(WriteSafetensors(path, f).ok());
  back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->metadata.at("v"), "2");
  std::remove(path.c_str());
}

TEST(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  Status s = WriteSafetensors("/nonexistent_dir_cellserve/x.safetensors", SampleFile());
  EXPECT_FALSE(s.ok());
}

// ---- bad input ----

TEST(SafetensorsDeathTest, AnAllocationThatFailsIsAnErrorNotACrash) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the memory");
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the process may have BLAS or actor threads
  if (!testutil::DataLimitIsEnforced()) GTEST_SKIP() << "this kernel does not enforce RLIMIT_DATA";
  // A file of one 64 MiB tensor, its data sparse (a copy gone wrong), read with 16 MiB of data
  // segment to spare: a limit the up-front check does not read (it passes), so the tensor's
  // allocation fails, and that is an error naming the file, not a crash.
  const std::string path = TempPath("sparse");
  {
    const std::string header = R"({"big":{"dtype":"F32","shape":[16777216],"data_offsets":[0,67108864]}})";
    std::string head(8, '\0');
    for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    std::ofstream(path, std::ios::binary) << head << header;
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(8 + header.size()) + (off_t{64} << 20)), 0)
        << "the file system has no sparse files";
  }
  auto child = [&path] {
    if (!testutil::LimitDataTo(int64_t{16} << 20)) std::_Exit(3);
    StatusOr<SafetensorsFile> r = ReadSafetensors(path);
    const bool named = !r.ok() && r.status().message().find(path) != std::string::npos &&
                       r.status().message().find("do not fit") != std::string::npos;
    if (!named) std::fprintf(stderr, "got: %s\n", r.ok() ? "read" : r.status().ToString().c_str());
    std::remove(path.c_str());  // the child (threadsafe style: a new process) wrote its own file
    std::_Exit(!r.ok() && r.status().code() == StatusCode::kResourceExhausted && named ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
  std::remove(path.c_str());
}

// ReadSafetensors reads the header, then each tensor from the file; ParseSafetensors parses bytes
// in memory. On the same bytes they agree, value for value and error for error: a header shorter
// than the reader's first read (it once kept the data's first bytes as part of the header, and
// read every tensor from the wrong place), trailing bytes, an empty tensor, a bad offset.
TEST(SafetensorsTest, ReadingAFileAgreesWithParsingItsBytes) {
  std::string floats;
  for (float v : {1.5f, -2.0f, 3.25f}) floats.append(reinterpret_cast<const char*>(&v), 4);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"short header, data after", MakeFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", floats)},
      {"short header, second float", MakeFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", floats)},
      {"tiny header", MakeFile("{}", floats)},
      {"empty tensor", MakeFile(R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", floats)},
      {"offset past the data", MakeFile(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})", floats)},
      {"not JSON", MakeFile("{nope", floats)},
      {"the sample", SampleBytes()},
      {"the sample and trailing bytes", SampleBytes() + "trailing"},
  };
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    const std::string path = TempPath("agree");
    std::ofstream(path, std::ios::binary) << bytes;
    StatusOr<SafetensorsFile> read = ReadSafetensors(path);
    StatusOr<SafetensorsFile> parsed = Parse(bytes);
    std::remove(path.c_str());
    ASSERT_EQ(read.ok(), parsed.ok()) << (read.ok() ? parsed.status() : read.status()).ToString();
    if (!parsed.ok()) {
      EXPECT_EQ(read.status().code(), parsed.status().code());
      EXPECT_EQ(read.status().message(), path + ": " + parsed.status().message());
      continue;
    }
    ExpectSameFile(*read, *parsed);
  }
  const std::string path = TempPath("agree");
  std::ofstream(path, std::ios::binary) << cases[0].second;
  StatusOr<SafetensorsFile> read = ReadSafetensors(path);
  std::remove(path.c_str());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->tensors.at("x").ToFloat().data()[0], 1.5f);
}

TEST(SafetensorsTest, AFileBeyondTheHeadroomIsRefusedBeforeItIsRead) {
  // Under a cgroup limit an allocation does not fail, the OOM killer comes: the size is checked
  // against what this process may still take before anything is allocated. A sparse file four
  // times the machine's memory (allocating for it would fail here, with another message).
  const std::string path = TempPath("huge");
  ASSERT_TRUE(WriteSafetensors(path, SampleFile()).ok());
  const double machine = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(4 * machine)), 0) << "the file system has no sparse files";
  StatusOr<SafetensorsFile> r = ReadSafetensors(path);
  std::remove(path.c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  for (const std::string& part : {path, std::string("more than the memory this process may still take"), std::string("cgroup")})
    EXPECT_NE(r.status().message().find(part), std::string::npos) << part << " in: " << r.status().message();
}

// A read that is refused closes the file it opened: a server that retries a bad model repository
// must not run out of file descriptors.
TEST(SafetensorsTest, EveryRefusedReadClosesItsFile) {
  const std::string short_file = TempPath("short"), sparse = TempPath("sparse_fd");
  {
    std::ofstream out(short_file, std::ios::binary);
    out << "abc";
  }
  ASSERT_TRUE(WriteSafetensors(sparse, SampleFile()).ok());
  const double machine = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  ASSERT_EQ(::truncate(sparse.c_str(), static_cast<off_t>(4 * machine)), 0) << "the file system has no sparse files";
  const size_t before = testutil::OpenFdCount();
  for (const std::string& path : {std::string("/tmp"), short_file, sparse}) {
    StatusOr<SafetensorsFile> r = ReadSafetensors(path);
    EXPECT_FALSE(r.ok()) << path;
    EXPECT_EQ(testutil::OpenFdCount(), before) << path << ": " << (r.ok() ? "read" : r.status().ToString());
  }
  std::remove(short_file.c_str());
  std::remove(sparse.c_str());
}

// Bytes read by this process so far (/proc/self/io's rchar: every read() counts).
int64_t BytesReadSoFar() {
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (io >> key >> value)
    if (key == "rchar:") return value;
  return -1;
}

// A header that is not JSON (a file of zeros: header length 0), or a length past the end, is said
// before the data is read: a 64 MiB file was read whole first (and 2 GiB took 13 s).
TEST(SafetensorsTest, ABadHeaderIsSaidBeforeTheDataIsRead) {
  if (BytesReadSoFar() < 0) GTEST_SKIP() << "no /proc/self/io";
  const std::string path = TempPath("zeros");
  for (const std::string& head : {std::string(8, '\0'), MakeFile("{\"a\": 1", "", 1000)}) {
    {
      std::ofstream out(path, std::ios::binary);
      out << head;
    }
    ASSERT_EQ(::truncate(path.c_str(), off_t{64} << 20), 0) << "the file system has no sparse files";
    const int64_t before = BytesReadSoFar();
    const Status s = ReadSafetensors(path).status();
    const int64_t read = BytesReadSoFar() - before;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("header is not valid JSON"), std::string::npos) << s.message();
    EXPECT_LT(read, 1 << 20) << "read " << read << " bytes of a file whose header was bad: " << s.message();
  }
  std::remove(path.c_str());
}

// Files of other formats saved under the name say what they look like and what to do.
TEST(SafetensorsTest, OtherFormatsSayWhatTheyAre) {
  const std::string path = TempPath("foreign");
  auto bytes_of = [](std::initializer_list<int> head, const std::string& tail) {
    std::string s;
    for (int b : head) s.push_back(static_cast<char>(b));
    return s + tail;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1234\n", "git lfs pull"},
      {bytes_of({'P', 'K', 3, 4, 0x14, 0, 0, 0, 8, 0}, "archive/data.pkl"), "tools/export_pytorch.py"},
      {bytes_of({0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20}, "j\xa8P\x19."), "tools/export_pytorch.py"},
      {bytes_of({0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0, 0, 8, 8, 0}, ""), "HDF5"},
  };
  for (const auto& [bytes, hint] : cases) {
    {
      std::ofstream out(path, std::ios::binary);
      out << bytes;
    }
    const Status s = ReadSafetensors(path).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(hint), std::string::npos) << s.message();
  }
  // A safetensors file whose header is merely broken, or cut short, gets no such guess (a header
  // of 896 bytes starts 0x80 0x03, as a pickle does).
  for (const std::string& bytes : {MakeFile("{\"a\":"), MakeFile(std::string(896, ' ')).substr(0, 500)}) {
    {
      std::ofstream out(path, std::ios::binary);
      out << bytes;
    }
    const Status s = ReadSafetensors(path).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_EQ(s.message().find("(it "), std::string::npos) << s.message();
  }
  std::remove(path.c_str());
}

// A FIFO under the name is refused at once: opening it waited for a writer, for good.
TEST(SafetensorsTest, AFifoIsRefusedWithoutWaitingForAWriter) {
  const Status s = testutil::ReadFromAFifo(TempPath("fifo"),
                                           [](const std::string& path) { return ReadSafetensors(path).status(); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("not a regular file"), std::string::npos) << s.message();
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = "/nonexistent_dir_cellserve/weights.safetensors";
  StatusOr<SafetensorsFile> r = ReadSafetensors(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

TEST(SafetensorsTest, ReadErrorIsPrefixedWithPath) {
  const std::string path = TempPath("bad");
  {
    std::ofstream out(path, std::ios::binary);
    out << "abc";
  }
  StatusOr<SafetensorsFile> r = ReadSafetensors(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind(path + ": ", 0), 0u) << r.status().message();
  std::remove(path.c_str());
}

TEST(SafetensorsTest, TooShortForHeaderLength) {
  for (size_t len : {0, 1, 4, 7}) {
    ExpectInvalid(std::string(len, '\0'), {"too short"});
  }
  // Null pointer with zero size is just an empty file.
  EXPECT_EQ(ParseSafetensors(nullptr, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, TruncatedValidFileAtSeveralLengths) {
  const std::string bytes = SampleBytes();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  ExpectInvalid(bytes.substr(0, 3), {"too short"});
  ExpectInvalid(bytes.substr(0, 8), {"past the end of the file"});
  ExpectInvalid(bytes.substr(0, 8 + n / 2), {"past the end of the file"});
  ExpectInvalid(bytes.substr(0, 8 + n + 10), {"past the end of the data"});
  ExpectInvalid(bytes.substr(0, bytes.size() - 1), {"past the end of the data"});
}

TEST(SafetensorsTest, HeaderLengthPastEndOfFile) {
  ExpectInvalid(MakeFile("{}", "", 100), {"header length 100", "past the end of the file"});
}

TEST(SafetensorsTest, HeaderLengthHuge) {
  ExpectInvalid(MakeFile("{}", "", kMaxSafetensorsHeaderBytes + 1), {"exceeds the limit"});
  ExpectInvalid(MakeFile("{}", "", UINT64_MAX - 1), {"exceeds the limit"});
}

TEST(SafetensorsTest, BadJson) {
  ExpectInvalid(MakeFile("{\"a\": "), {"not valid JSON"});
  ExpectInvalid(MakeFile("{'a': 1}"), {"not valid JSON"});
  ExpectInvalid(MakeFile("{} trailing"), {"not valid JSON"});
  ExpectInvalid(MakeFile("{\"\xff\": 1}"), {"not valid JSON"});  // invalid UTF-8
  ExpectInvalid(MakeFile(""), {"not valid JSON"});
}

TEST(SafetensorsTest, NonObjectJson) {
  ExpectInvalid(MakeFile("[1, 2]"), {"not an object"});
  ExpectInvalid(MakeFile("42"), {"not an object"});
  ExpectInvalid(MakeFile("\"x\""), {"not an object"});
  ExpectInvalid(MakeFile("null"), {"not an object"});
}

TEST(SafetensorsTest, TensorEntryNotAnObject) {
  ExpectInvalid(MakeFile(R"({"w": [1, 2]})"), {"'w'", "not a JSON object"});
}

TEST(SafetensorsTest, DuplicateKey) {
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                         R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                         std::string(8, '\0')),
                {"duplicate", "'w'"});
}

TEST(SafetensorsTest, UnknownDType) {
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})",
                         std::string(8, '\0')),
                {"'w'", "I64", "F32, F16, BF16"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})",
                         std::string(4, '\0')),
                {"'w'", "dtype"});
  ExpectInvalid(MakeFile(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0')),
                {"'w'", "missing \"dtype\""});
}

TEST(SafetensorsTest, BadShape) {
  const std::string data(16, '\0');
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", data),
                {"'w'", "non-negative integers", "-1"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", data),
                {"'w'", "non-negative integers"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", data),
                {"'w'", "non-negative integers", "string"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})", data),
                {"'w'", "not a list"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "data_offsets": [0, 16]}})", data),
                {"'w'", "missing \"shape\""});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [[[[1]]]], "data_offsets": [0, 4]}})", data),
                {"'w'", "non-negative integers", "array"});
}

TEST(SafetensorsTest, ShapeOverflow) {
  ExpectInvalid(
      MakeFile(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})",
               std::string(4, '\0')),
      {"'w'", "overflow"});
  // Fits int64 elements but not bytes.
  ExpectInvalid(
      MakeFile(R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}})",
               std::string(4, '\0')),
      {"'w'", "overflow"});
  ExpectInvalid(
      MakeFile(R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})",
               std::string(4, '\0')),
      {"'w'", "non-negative integers"});
}

TEST(SafetensorsTest, BadDataOffsets) {
  const std::string data(16, '\0');
  for (const char* offsets : {"[0]", "[0, 4, 8]", "[-4, 0]", "[0, -4]", "\"0,4\"", "[0, 4.0]",
                              "{\"begin\": 0}"}) {
    ExpectInvalid(MakeFile(std::string(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": )") +
                               offsets + "}}",
                           data),
                  {"'w'", "data_offsets"});
  }
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [1]}})", data),
                {"'w'", "missing \"data_offsets\""});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", data),
                {"'w'", "begin > end"});
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})",
                         std::string(16, '\0')),
                {"'w'", "[12, 20]", "past the end of the data (16 bytes)"});
  ExpectInvalid(
      MakeFile(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [18446744073709551600, 18446744073709551608]}})",
               std::string(16, '\0')),
      {"'w'", "data_offsets"});
}

TEST(SafetensorsTest, OffsetsShapeMismatch) {
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
                         std::string(24, '\0')),
                {"'w'", "shape [2, 3] with dtype F32 needs 24 bytes, data_offsets give 20"});
  ExpectInvalid(MakeFile(R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})",
                         std::string(8, '\0')),
                {"'w'", "needs 6 bytes, data_offsets give 8"});
}

TEST(SafetensorsTest, OverlappingTensors) {
  ExpectInvalid(MakeFile(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                         R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                         std::string(12, '\0')),
                {"tensors 'a' [0, 8) and 'b' [4, 12) overlap"});
  // Listed out of order, the two that overlap are named with their ranges.
  ExpectInvalid(MakeFile(R"({"c": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},)"
                         R"( "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                         R"( "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}})",
                         std::string(24, '\0')),
                {"tensors 'b' [8, 20) and 'c' [16, 24) overlap"});
  // Identical ranges overlap too.
  ExpectInvalid(MakeFile(R"({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},)"
                         R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                         std::string(4, '\0')),
                {"overlap"});
  // Empty tensors hold no bytes and overlap nothing.
  EXPECT_TRUE(Parse(MakeFile(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "b": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                             std::string(8, '\0')))
                  .ok());
}

TEST(SafetensorsTest, BadMetadata) {
  ExpectInvalid(MakeFile(R"({"__metadata__": [1]})"), {"__metadata__", "not a JSON object"});
  ExpectInvalid(MakeFile(R"({"__metadata__": {"k": 1}})"), {"__metadata__", "'k'", "not a string"});
}

TEST(SafetensorsTest, DeeplyNestedJsonDoesNotCrash) {
  const int depth = 200000;
  std::string header = "{\"w\": " + std::string(depth, '[') + std::string(depth, ']') + "}";
  ExpectInvalid(MakeFile(header), {"'w'"});
  std::string shape = std::string(R"({"w": {"dtype": "F32", "data_offsets": [0, 0], "shape": [)") +
                      std::string(depth, '[') + std::string(depth, ']') + "]}}";
  ExpectInvalid(MakeFile(shape), {"'w'", "shape"});
}

// Every truncation of a valid file, then a few thousand seeded random corruptions of the header
// and length: the parser must never crash, and must either fail or return a self-consistent file.
TEST(SafetensorsTest, TruncationAndCorruptionNeverCrash) {
  const std::string bytes = SampleBytes();
  for (size_t len = 0; len < bytes.size(); ++len) {
    StatusOr<SafetensorsFile> r = Parse(bytes.substr(0, len));
    EXPECT_FALSE(r.ok()) << "truncated at " << len;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  std::mt19937 rng(12345);
  int parsed_ok = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % (8 + n);  // length prefix or header
      if (rng() % 2) {
        b[pos] = static_cast<char>(rng() & 0xff);
      } else {
        b[pos] = static_cast<char>(b[pos] ^ (1u << (rng() % 8)));
      }
    }
    StatusOr<SafetensorsFile> r = Parse(b);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
      continue;
    }
    ++parsed_ok;
    for (const auto& [name, t] : r->tensors) {
      EXPECT_EQ(static_cast<int64_t>(t.bytes.size()),
                ShapeNumElements(t.shape) * DTypeSize(t.dtype))
          << name;
    }
  }
  // Flips inside string values and spaces keep some files valid; most must fail.
  EXPECT_LT(parsed_ok, 4000);
}

}  // namespace
}  // namespace cellserve
