// libFuzzer target: ParseSafetensors must never crash; whatever it accepts must serialize and
// re-parse to the same tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/safetensors.h"

namespace {

bool SameFile(const cellserve::SafetensorsFile& a, const cellserve::SafetensorsFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  auto ia = a.tensors.begin();
  auto ib = b.tensors.begin();
  for (; ia != a.tensors.end(); ++ia, ++ib) {
    if (ia->first != ib->first || ia->second.dtype != ib->second.dtype ||
        ia->second.shape != ib->second.shape || ia->second.bytes != ib->second.bytes) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cellserve::StatusOr<cellserve::SafetensorsFile> parsed = cellserve::ParseSafetensors(data, size);
  if (!parsed.ok()) {
    if (parsed.status().code() != cellserve::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  cellserve::StatusOr<std::string> bytes = cellserve::SerializeSafetensors(*parsed);
  if (!bytes.ok()) __builtin_trap();
  cellserve::StatusOr<cellserve::SafetensorsFile> again = cellserve::ParseSafetensors(
      reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  if (!again.ok() || !SameFile(*parsed, *again)) __builtin_trap();
  return 0;
}
