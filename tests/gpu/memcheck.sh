#!/usr/bin/env bash
# compute-sanitizer memcheck over the GPU tests: no invalid access, no leak, no CUDA API error.
# Usage: memcheck.sh SANITIZER TEST_BINARY [GTEST_FILTER] (default: every test; tools/gpu/run.sh
# gives a subset to fit a short GPU session). Exit 77 (ctest: skipped) when the sanitizer is not
# installed, no GPU is usable, or the sanitizer cannot use the GPU; otherwise the sanitizer's
# verdict.
set -euo pipefail
sanitizer="$1" binary="$2" only="${3:-}"
if [[ "$only" == *-* ]]; then  # its negative part would swallow the exclusions below
  echo "memcheck.sh: GTEST_FILTER takes positive patterns only, got '$only'" >&2
  exit 2
fi
if [[ -z "$sanitizer" || "$sanitizer" == *NOTFOUND* || ! -x "$sanitizer" ]]; then
  echo "compute-sanitizer not found (it ships with the CUDA toolkit's sanitizer package): skipped"
  exit 77
fi
# Without a GPU every test skips; running them under the sanitizer would prove nothing. (The
# output is captured first: `| grep -q` would stop reading at the match, and under pipefail the
# test binary's SIGPIPE would fail the pipeline and hide the skip.)
probe="$("$binary" --gtest_filter='CudaDeviceTest.Destructor*' 2>&1 || true)"
if "$binary" --gtest_list_tests >/dev/null 2>&1 && grep -q "no GPU" <<<"$probe"; then
  echo "no usable GPU: skipped"
  exit 77
fi
# Some machines run the GPU under a sandbox the sanitizer cannot work with (under gVisor it says
# "Device not supported", then fails the first allocation with error 999): that is a limit of the
# machine, not a memory error of ours, so it is a skip too. One short test tells.
sanitized_probe="$("$sanitizer" --tool memcheck "$binary" --gtest_filter='CudaDeviceTest.Destructor*' 2>&1 || true)"
if grep -q "Device not supported" <<<"$sanitized_probe"; then
  echo "compute-sanitizer cannot use this GPU (\"Device not supported\"): skipped"
  grep -m3 -E "Device not supported|Error|error" <<<"$sanitized_probe" || true
  exit 77
fi
# Left out: the NCCL test (NCCL's peer-access setup may be reported as API errors by the sanitizer)
# and the out-of-memory test (it asks cudaMalloc for 4 TiB on purpose; the sanitizer reports every
# failed API call as an error).
exec "$sanitizer" --tool memcheck --leak-check full --error-exitcode 1 "$binary" \
  --gtest_filter="$only-*Nccl*:*OutOfMemory*"
