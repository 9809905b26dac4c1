#!/usr/bin/env bash
# valgrind memcheck over the CUDA device code on the fake runtime: fake "device" memory is heap,
# so every kernel's reads and writes are checked against the real buffer sizes (what
# compute-sanitizer does on a GPU). Usage: valgrind.sh TEST_BINARY [GTEST_FILTER] (default: a
# subset of about 30 s). Exit 77 (skipped) without valgrind.
set -euo pipefail
if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed: skipped"
  exit 77
fi
only="${2:-Kinds/CudaMatchesCpu.*lstm_fp32:Kinds/CudaMatchesCpu.*treelstm_bf16:*BackToBack*:*OutOfMemory*:*Destructor*:*FoldedTables*:CudaDeviceFaultTest.*}"
exec valgrind --error-exitcode=9 --leak-check=no -q "$1" --gtest_filter="$only"
