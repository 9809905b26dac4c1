// Tensors: Tensor is a dense row-major float32 array with a shape (what kernels compute on);
// RawTensor is bytes in a stored dtype (F32, F16, BF16) as read from or written to safetensors.
// Both are plain values (own their storage); thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

enum class DType { kF32, kF16, kBF16 };
constexpr float kF16Max = 65504.0f;  // F16's largest finite value

const char* DTypeName(DType dtype);           // "F32", "F16", "BF16" (safetensors spelling)
StatusOr<DType> ParseDType(const std::string& name);
int DTypeSize(DType dtype);                   // bytes per element

uint16_t FloatToHalf(float f);                // round to nearest even, inf/nan kept
float HalfToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);            // round to nearest even, nan kept
float BFloat16ToFloat(uint16_t b);

// Number of elements of a shape; -1 if a dimension is negative or the product overflows int64.
int64_t ShapeNumElements(const std::vector<int64_t>& shape);
std::string ShapeToString(const std::vector<int64_t>& shape);  // "[4, 16]"

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor. Precondition: valid shape (non-negative dims).
  explicit Tensor(std::vector<int64_t> shape);
  Tensor(std::vector<int64_t> shape, std::vector<float> values);

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t size() const { return static_cast<int64_t>(data_.size()); }
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  std::vector<float>& values() { return data_; }
  const std::vector<float>& values() const { return data_; }

 private:
  std::vector<int64_t> shape_;
  std::vector<float> data_;
};

struct RawTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // ShapeNumElements(shape) * DTypeSize(dtype), little-endian

  // Converts to float32 (exact for F16/BF16).
  Tensor ToFloat() const;
  // Stores `t` in `dtype` (rounding to nearest even for F16/BF16).
  static RawTensor FromFloat(const Tensor& t, DType dtype);
};

}  // namespace cellserve
