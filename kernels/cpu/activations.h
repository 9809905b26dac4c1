// Branch-free float activations that the compiler vectorizes (the fused element-wise pass runs
// them on every gate of every cell). ExpApprox is the Cephes expf polynomial with the range
// reduction done by a rounding constant instead of floor(): max relative error about 2 ulp over
// [-87, 88], inputs clamped to that range (NaN to -87, as the AVX2 lanes do). Sigmoid and Tanh build on it; Tanh's absolute error is
// about 1e-7. Header-only, pure functions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace cellserve::cpu {

inline float ExpApprox(float x) {
  // `x > -87 ? x : -87` is what maxps does: a NaN becomes -87 here as in the vector lanes
  // (std::max would keep it, then cast it to int: undefined, and other bits than the lanes').
  x = std::min(x > -87.0f ? x : -87.0f, 88.0f);
  // n = round(x / ln 2) via the 1.5 * 2^23 trick (exact for |x / ln 2| < 2^22).
  const float shifter = 12582912.0f;
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // Cody-Waite: ln 2 = C1 - C2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n; n in [-126, 127] after the clamp
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + ExpApprox(-x)); }

inline float Tanh(float x) { return 2.0f / (1.0f + ExpApprox(-2.0f * x)) - 1.0f; }

}  // namespace cellserve::cpu
