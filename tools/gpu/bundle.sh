#!/usr/bin/env bash
# Packs what a GPU machine needs to check the CUDA backend into .gpu-bundle/ (git-ignored), for a
# machine that has the NVIDIA driver and CUDA 13 libraries but none of our build dependencies (the
# device machines lent to some sessions: see docs/ARCHITECTURE.md, "The GPU backend").
#   tools/gpu/bundle.sh [BUILD_DIR]     (default build; run ./cellserve.sh build first)
# Bundle: bin/ (cuda_backend_test, cuda_cluster_test, golden_cuda_test, bench_cuda_lstm, bench_rpc, cellserve and
# its CUDA plugin libcellserve_cuda.so), lib/ (their
# shared libraries except the C/C++ runtime and CUDA's own, which the GPU machine has), the
# benchmark corpus, and run.sh (tools/gpu/run.sh), which runs every GPU check in one go:
#   bash .gpu-bundle/run.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${1:-build}"
BUNDLE=.gpu-bundle
bins=("$BUILD_DIR/tests/gpu/cuda_backend_test" "$BUILD_DIR/tests/gpu/cuda_cluster_test"
      "$BUILD_DIR/tests/golden/golden_cuda_test"
      "$BUILD_DIR/bench/bench_cuda_lstm" "$BUILD_DIR/bench/bench_rpc" "$BUILD_DIR/cellserve"
      "$BUILD_DIR/libcellserve_cuda.so")
for b in "${bins[@]}"; do
  [[ -f "$b" ]] || { echo "gpu bundle: $b is missing: build with CUDA first (./cellserve.sh build)" >&2; exit 1; }
done
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
cp "${bins[@]}" "$BUNDLE/bin/"
strip "$BUNDLE"/bin/*  # the bundle travels under a 64 MiB limit
# Shared libraries: everything ldd resolves except glibc, the C++ runtime and CUDA's libraries.
for b in "${bins[@]}"; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
  grep -v '^/usr/local/cuda' | while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
corpus="${CELLSERVE_CACHE:-${HOME:-/tmp}/.cache/cellserve}/sotu_sentences.txt"  # as cellserve.sh
# The end-to-end steps need it; without it they would fail on the GPU machine, where time is scarce.
[[ -f "$corpus" ]] || { echo "gpu bundle: no corpus ($corpus): run ./cellserve.sh corpus first" >&2; exit 1; }
gzip -c "$corpus" >"$BUNDLE/sotu_sentences.txt.gz"
cp tools/gpu/run.sh "$BUNDLE/run.sh"
du -sh "$BUNDLE"
echo "gpu bundle: $BUNDLE ready; on the GPU machine, from the repository root: bash $BUNDLE/run.sh OUT_DIR"
