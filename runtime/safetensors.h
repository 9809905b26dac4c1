// safetensors reader and writer (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data. Supports F32, F16, BF16. The parser trusts nothing:
// header length, JSON, dtypes, shapes, offsets (in range, matching shape*dtype, no overlap) are all
// checked and a bad file is an INVALID_ARGUMENT naming the problem; a file or tensors that do not
// fit in memory are RESOURCE_EXHAUSTED (never an exception): ReadSafetensors refuses, before
// reading, a file that is more than this process may still take (runtime/memory_limit.h). It reads
// the header first, then each tensor's bytes straight into the tensor (never the file whole).
// Pure functions (ReadSafetensors reads the file and /proc); thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "runtime/status.h"
#include "runtime/tensor.h"

namespace cellserve {

struct SafetensorsFile {
  std::map<std::string, RawTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Largest header we accept (the format's own limit is 100 MB).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

StatusOr<SafetensorsFile> ParseSafetensors(const uint8_t* data, size_t size);
StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);
// Serializes with tensors in name order, data packed in that order. Fails (INVALID_ARGUMENT) if a
// tensor's byte size does not match its shape and dtype.
StatusOr<std::string> SerializeSafetensors(const SafetensorsFile& file);
Status WriteSafetensors(const std::string& path, const SafetensorsFile& file);

}  // namespace cellserve
