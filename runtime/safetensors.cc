#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/atomic_file.h"
#include "runtime/memory_limit.h"

namespace cellserve {
namespace {

using Json = nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";

std::string Quoted(const std::string& name) { return "'" + name + "'"; }

// A JSON integer >= 0 that fits int64; nothing for floats ("2.0"), negatives and strings.
std::optional<int64_t> NonNegativeInt(const Json& j) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

// SAX handler for the checking pass: tracks nesting depth, records duplicate keys of the top-level
// object and the parser's error message. Never throws.
struct HeaderChecker {
  int64_t depth = 0;
  std::set<std::string> keys;
  bool has_duplicate = false;
  std::string duplicate;
  std::string error;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(Json::number_integer_t) { return true; }
  bool number_unsigned(Json::number_unsigned_t) { return true; }
  bool number_float(Json::number_float_t, const Json::string_t&) { return true; }
  bool string(Json::string_t&) { return true; }
  bool binary(Json::binary_t&) { return true; }
  bool start_object(std::size_t) { ++depth; return true; }
  bool end_object() { --depth; return true; }
  bool start_array(std::size_t) { ++depth; return true; }
  bool end_array() { --depth; return true; }
  bool key(Json::string_t& k) {
    if (depth == 1 && !keys.insert(k).second && !has_duplicate) {
      has_duplicate = true;
      duplicate = k;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    // "[json.exception.parse_error.101] parse error at line 1, column 7: ..." without the tag;
    // the "last read" part can hold raw bytes from the file, so keep the message printable ASCII.
    std::string what = ex.what();
    const size_t tag_end = what.rfind("] ", what.find(" parse error"));
    if (what.rfind("[json.exception.", 0) == 0 && tag_end != std::string::npos) {
      what.erase(0, tag_end + 2);
    }
    for (char& c : what) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    }
    error = what.empty() ? "parse error" : what;
    return false;
  }
};

// Describes a JSON value for an error message without dumping it (dump() recurses).
std::string Describe(const Json& j) {
  if (j.is_number()) return j.dump();
  return std::string("a JSON ") + j.type_name();
}

// Where a tensor's bytes lie in the data buffer; used for the overlap check.
struct Range {
  uint64_t begin;
  uint64_t end;
  const std::string* name;
};

struct TensorEntry {
  RawTensor tensor;             // dtype and shape; bytes filled later (ParseUnguarded, ReadTensors)
  uint64_t begin = 0, end = 0;  // its bytes in the data buffer
};

// A file's header, checked against the size of the data after it: every tensor's dtype, shape and
// byte range (in range, matching, no overlap), and the metadata. No tensor bytes yet.
struct Layout {
  std::map<std::string, TensorEntry> entries;
  std::map<std::string, std::string> metadata;
};

// Parses one tensor entry; `data_size` is the length of the data buffer.
StatusOr<TensorEntry> ParseTensorEntry(const std::string& name, const Json& entry, uint64_t data_size) {
  const std::string what = "tensor " + Quoted(name);
  if (!entry.is_object()) return InvalidArgument(what + ": entry is not a JSON object");

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return InvalidArgument(what + ": missing \"dtype\"");
  if (!dtype_it->is_string()) return InvalidArgument(what + ": \"dtype\" is not a string");
  StatusOr<DType> dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return dtype.status().WithContext(what);

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return InvalidArgument(what + ": missing \"shape\"");
  if (!shape_it->is_array()) return InvalidArgument(what + ": \"shape\" is not a list");
  std::vector<int64_t> shape;
  shape.reserve(shape_it->size());
  for (const Json& d : *shape_it) {
    const std::optional<int64_t> v = NonNegativeInt(d);
    if (!v) {
      return InvalidArgument(what + ": \"shape\" must be a list of non-negative integers, got " +
                             Describe(d));
    }
    shape.push_back(*v);
  }
  const int64_t numel = ShapeNumElements(shape);
  const int64_t elem_size = DTypeSize(*dtype);
  if (numel < 0 || numel > std::numeric_limits<int64_t>::max() / elem_size) {
    return InvalidArgument(what + ": shape " + ShapeToString(shape) +
                           " has too many elements (overflow)");
  }
  const uint64_t needed = static_cast<uint64_t>(numel * elem_size);

  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end()) return InvalidArgument(what + ": missing \"data_offsets\"");
  const bool pair = off_it->is_array() && off_it->size() == 2;
  const std::optional<int64_t> first = pair ? NonNegativeInt((*off_it)[0]) : std::nullopt;
  const std::optional<int64_t> second = pair ? NonNegativeInt((*off_it)[1]) : std::nullopt;
  if (!first || !second)
    return InvalidArgument(what + ": \"data_offsets\" must be two non-negative integers [begin, end]");
  const int64_t begin = *first, end = *second;
  if (begin > end) {
    return InvalidArgument(what + ": data_offsets [" + std::to_string(begin) + ", " +
                           std::to_string(end) + "] have begin > end");
  }
  if (static_cast<uint64_t>(end) > data_size) {
    return InvalidArgument(what + ": data_offsets [" + std::to_string(begin) + ", " +
                           std::to_string(end) + "] run past the end of the data (" +
                           std::to_string(data_size) + " bytes)");
  }
  const uint64_t given = static_cast<uint64_t>(end - begin);
  if (given != needed) {
    return InvalidArgument(what + ": shape " + ShapeToString(shape) + " with dtype " +
                           DTypeName(*dtype) + " needs " + std::to_string(needed) +
                           " bytes, data_offsets give " + std::to_string(given));
  }

  // All checks passed: [begin, end) lies within the data.
  TensorEntry parsed;
  parsed.tensor.dtype = *dtype;
  parsed.tensor.shape = std::move(shape);
  parsed.begin = static_cast<uint64_t>(begin);
  parsed.end = static_cast<uint64_t>(end);
  return parsed;
}

StatusOr<std::map<std::string, std::string>> ParseMetadata(const Json& meta) {
  if (!meta.is_object()) return InvalidArgument("\"__metadata__\" is not a JSON object");
  std::map<std::string, std::string> metadata;
  for (auto it = meta.begin(); it != meta.end(); ++it) {
    if (!it.value().is_string()) {
      return InvalidArgument("\"__metadata__\" value for key " + Quoted(it.key()) +
                             " is not a string");
    }
    metadata[it.key()] = it.value().get<std::string>();
  }
  return metadata;
}

// The header's length: the file's first 8 bytes, little-endian.
uint64_t HeaderLength(const uint8_t* first8) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];
  return n;
}

// The header's JSON: valid, no duplicate top-level key, an object.
Status CheckHeaderJson(const char* header_begin, const char* header_end) {
  // First a SAX pass: it reports where the JSON is broken (the DOM parser without exceptions
  // only says "discarded") and rejects duplicate top-level keys (the DOM keeps only the last).
  HeaderChecker checker;
  Json::sax_parse(header_begin, header_end, &checker);
  if (!checker.error.empty()) return InvalidArgument("header is not valid JSON: " + checker.error);
  if (checker.has_duplicate) {
    return InvalidArgument("header has duplicate key " + Quoted(checker.duplicate));
  }
  return OkStatus();
}

// The header (JSON text) and the data's size after it: the layout, every range checked.
StatusOr<Layout> ParseLayout(const char* header_begin, const char* header_end, uint64_t data_size) {
  RETURN_IF_ERROR(CheckHeaderJson(header_begin, header_end));
  Json header = Json::parse(header_begin, header_end, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return InvalidArgument("header is not valid JSON");
  if (!header.is_object()) return InvalidArgument("header JSON is not an object");

  Layout layout;
  std::vector<Range> ranges;
  ranges.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == kMetadataKey) {
      ASSIGN_OR_RETURN(layout.metadata, ParseMetadata(it.value()));
      continue;
    }
    ASSIGN_OR_RETURN(TensorEntry entry, ParseTensorEntry(name, it.value(), data_size));
    auto inserted = layout.entries.emplace(name, std::move(entry));
    const TensorEntry& e = inserted.first->second;
    ranges.push_back(Range{e.begin, e.end, &inserted.first->first});  // stable: map nodes do not move
  }

  // Overlap check: sort by start; each non-empty range must start at or after the previous end.
  // Empty ranges hold no bytes and cannot overlap anything.
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const Range& r) { return r.begin == r.end; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return InvalidArgument("tensors " + Quoted(*ranges[i - 1].name) + " [" +
                             std::to_string(ranges[i - 1].begin) + ", " +
                             std::to_string(ranges[i - 1].end) + ") and " +
                             Quoted(*ranges[i].name) + " [" + std::to_string(ranges[i].begin) +
                             ", " + std::to_string(ranges[i].end) + ") overlap");
    }
  }
  return layout;
}

// The header's length from the first 8 of `size` bytes, checked against the limit and the size.
StatusOr<uint64_t> CheckedHeaderLength(const uint8_t* first8, uint64_t size) {
  if (size < 8) {
    return InvalidArgument("file is " + std::to_string(size) +
                           " bytes; too short for the 8-byte header length");
  }
  const uint64_t header_len = HeaderLength(first8);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return InvalidArgument("header length " + std::to_string(header_len) + " exceeds the limit of " +
                           std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  }
  if (header_len > size - 8) {
    return InvalidArgument("header length " + std::to_string(header_len) +
                           " runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  return header_len;
}

StatusOr<SafetensorsFile> ParseUnguarded(const uint8_t* data, size_t size) {
  ASSIGN_OR_RETURN(const uint64_t header_len, CheckedHeaderLength(data, size));
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  const uint8_t* buffer = data + 8 + header_len;
  ASSIGN_OR_RETURN(Layout layout, ParseLayout(header_begin, header_begin + header_len, size - 8 - header_len));
  SafetensorsFile file;
  file.metadata = std::move(layout.metadata);
  for (auto& [name, e] : layout.entries) {
    e.tensor.bytes.assign(buffer + e.begin, buffer + e.end);  // in range: ParseLayout checked
    file.tensors.emplace(name, std::move(e.tensor));
  }
  return file;
}

std::string ErrnoText(int err) { return std::strerror(err); }

// What a file that is not safetensors looks like it is, from its first bytes ("" if nothing known).
std::string ForeignFormatHint(const std::vector<uint8_t>& head) {
  auto starts = [&](const std::string& prefix) {
    return head.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), head.begin(),
                                                      [](char a, uint8_t b) { return static_cast<uint8_t>(a) == b; });
  };
  if (starts("version https://git-lfs"))
    return " (it is a Git LFS pointer, not the weights: run `git lfs pull` where the model was cloned)";
  if (starts(std::string("PK\x03\x04", 4)) || (head.size() >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5))
    return " (it starts as a zip archive or a Python pickle does: a PyTorch checkpoint from torch.save? Write "
           "the model with tools/export_pytorch.py)";
  if (starts("\x89HDF")) return " (it is an HDF5 file, not safetensors)";
  return "";
}

// Reads from `fd`, appending to `bytes`, until it holds `want` bytes or the file ends.
Status ReadUpTo(int fd, const std::string& path, size_t want, std::vector<uint8_t>& bytes) {
  uint8_t chunk[1 << 16];
  while (bytes.size() < want) {
    const ssize_t n = ::read(fd, chunk, std::min(sizeof(chunk), want - bytes.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal("reading " + path + ": " + ErrnoText(errno));
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  return OkStatus();
}

// Reads the header of `path` (`size` bytes): its 8-byte length and then its JSON text, the length
// checked before more is read (a file of zeros, a checkpoint of another format, a length that runs
// past the end: said at once, not after reading gigabytes). Returns those 8 + N bytes.
StatusOr<std::vector<uint8_t>> ReadHeader(int fd, const std::string& path, size_t size) {
  std::vector<uint8_t> head;
  RETURN_IF_ERROR(ReadUpTo(fd, path, std::min<size_t>(size, 64), head));
  const StatusOr<uint64_t> checked = CheckedHeaderLength(head.data(), head.size() < 8 ? head.size() : size);
  if (!checked.ok()) {
    // What other formats' first bytes read as: an LFS pointer, a zip, a pickle or HDF5 file all
    // give a length far past the limit (a mere truncated safetensors file does not: no guess).
    const bool past_limit = head.size() >= 8 && HeaderLength(head.data()) > kMaxSafetensorsHeaderBytes;
    return past_limit ? InvalidArgument(checked.status().message() + ForeignFormatHint(head)) : checked.status();
  }
  const uint64_t header_len = *checked;
  RETURN_IF_ERROR(ReadUpTo(fd, path, 8 + header_len, head));
  if (head.size() < 8 + header_len) return InvalidArgument("the file ended within its header (it shrank while read?)");
  head.resize(8 + header_len);  // the first read may have gone past a short header into the data
  return head;
}

// Reads `bytes.size()` bytes at `offset` of `fd` into `bytes`; false if the file ends first.
StatusOr<bool> ReadAt(int fd, const std::string& path, uint64_t offset, std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, size_t{1} << 30),
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal("reading " + path + ": " + ErrnoText(errno));
    }
    if (n == 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The tensors of `layout`, each read from `fd` straight into its own bytes (the data begins at
// `data_offset`): the file is never held whole beside them.
StatusOr<SafetensorsFile> ReadTensors(int fd, const std::string& path, uint64_t data_offset, Layout layout) {
  SafetensorsFile file;
  file.metadata = std::move(layout.metadata);
  for (auto& [name, e] : layout.entries) {
    e.tensor.bytes.resize(static_cast<size_t>(e.end - e.begin));
    ASSIGN_OR_RETURN(const bool whole, ReadAt(fd, path, data_offset + e.begin, e.tensor.bytes));
    if (!whole) return InvalidArgument("the file ended within tensor " + Quoted(name) + "'s data (it shrank while read?)");
    file.tensors.emplace(name, std::move(e.tensor));
  }
  return file;
}

}  // namespace

StatusOr<SafetensorsFile> ParseSafetensors(const uint8_t* data, size_t size) {
  if (data == nullptr && size != 0) return InvalidArgument("null data");
  // The parser is written not to throw; this is the last guard (e.g. std::bad_alloc).
  try {
    static const uint8_t kEmpty[1] = {0};
    return ParseUnguarded(data ? data : kEmpty, size);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("the tensors of this file do not fit in the memory this process may use");
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("malformed safetensors file: ") + e.what());
  } catch (...) {
    return InvalidArgument("malformed safetensors file");
  }
}

StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below; regular files read
  // as usual).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return NotFound("cannot open " + path + ": " + ErrnoText(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + ": not a regular file");
  }
  // Reading holds the tensors: about the file's size. More than this process may take would end in
  // the OOM killer (under a cgroup limit allocations do not fail), so it is an error before
  // anything is read (a sparse file, a copy gone wrong).
  if (Status fits = CheckHeadroom(static_cast<double>(st.st_size), ReservableHeadroomOfThisProcess(),
                                  path + ": reading this " + MiBText(static_cast<double>(st.st_size)) +
                                      " MiB file takes that much");
      !fits.ok()) {
    ::close(fd);
    return fits;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  StatusOr<SafetensorsFile> read = Internal("not read");
  // The parser is written not to throw; this is the last guard (an allocation that fails all the
  // same is an error, not a crash).
  try {
    read = [&]() -> StatusOr<SafetensorsFile> {
      ASSIGN_OR_RETURN(const std::vector<uint8_t> head, ReadHeader(fd, path, size));
      const char* header = reinterpret_cast<const char*>(head.data() + 8);
      ASSIGN_OR_RETURN(Layout layout, ParseLayout(header, header + (head.size() - 8), size - head.size()));
      return ReadTensors(fd, path, head.size(), std::move(layout));
    }();
  } catch (const std::bad_alloc&) {
    read = ResourceExhausted(path + ": " + std::to_string(st.st_size) +
                             " bytes do not fit in the memory this process may use");
  } catch (const std::exception& e) {
    read = InvalidArgument(std::string("malformed safetensors file: ") + e.what());
  }
  ::close(fd);
  if (!read.ok() && read.status().code() == StatusCode::kInvalidArgument) return read.status().WithContext(path);
  return read;
}

StatusOr<std::string> SerializeSafetensors(const SafetensorsFile& file) {
  try {
    Json header = Json::object();
    uint64_t offset = 0;
    for (const auto& [name, t] : file.tensors) {  // std::map: name order
      const std::string what = "tensor " + Quoted(name);
      if (name == kMetadataKey) return InvalidArgument(what + ": the name is reserved");
      if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
        return InvalidArgument(what + ": invalid dtype");
      }
      const int64_t numel = ShapeNumElements(t.shape);
      const int64_t elem_size = DTypeSize(t.dtype);
      if (numel < 0 || numel > std::numeric_limits<int64_t>::max() / elem_size) {
        return InvalidArgument(what + ": invalid shape " + ShapeToString(t.shape));
      }
      const uint64_t needed = static_cast<uint64_t>(numel * elem_size);
      if (needed != t.bytes.size()) {
        return InvalidArgument(what + ": shape " + ShapeToString(t.shape) + " with dtype " +
                               DTypeName(t.dtype) + " needs " + std::to_string(needed) +
                               " bytes, has " + std::to_string(t.bytes.size()));
      }
      header[name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + needed}}};
      offset += needed;
    }
    if (!file.metadata.empty()) {
      Json meta = Json::object();
      for (const auto& [k, v] : file.metadata) meta[k] = v;
      header[kMetadataKey] = std::move(meta);
    }
    // Strict: a name or metadata string that is not valid UTF-8 throws type_error, caught below.
    std::string json = header.dump();
    // Pad with spaces (allowed by the format) so the data starts 8-byte aligned.
    json.append((8 - json.size() % 8) % 8, ' ');

    std::string out;
    out.reserve(8 + json.size() + offset);
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    out += json;
    for (const auto& entry : file.tensors) {
      const std::vector<uint8_t>& b = entry.second.bytes;
      out.append(reinterpret_cast<const char*>(b.data()), b.size());
    }
    return out;
  } catch (const Json::type_error& e) {
    return InvalidArgument(std::string("tensor name or metadata is not valid UTF-8: ") + e.what());
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("cannot serialize safetensors: ") + e.what());
  }
}

Status WriteSafetensors(const std::string& path, const SafetensorsFile& file) {
  ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(file));
  return WriteFileAtomically(path, bytes);
}

}  // namespace cellserve
