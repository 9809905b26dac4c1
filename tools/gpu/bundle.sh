#!/usr/bin/env bash
# Packs what a GPU machine needs to check the CUDA backend into .gpu-bundle/ (git-ignored), for a
# machine that has the NVIDIA driver and CUDA 13 libraries but none of our build dependencies (the
# device machines lent to some sessions: see docs/ARCHITECTURE.md, "The GPU backend").
#   tools/gpu/bundle.sh [BUILD_DIR]     (default build; run ./cellserve.sh build first)
# Bundle: payload.tar.gz with bin/ (cuda_backend_test, cuda_cluster_test, golden_cuda_test,
# bench_cuda_lstm, bench_rpc, cellserve and its CUDA plugin libcellserve_cuda.so; golden_test and
# kernels_test for the host CPU's AMX path) and lib/ (their
# shared libraries except the C/C++ runtime and CUDA's own, which the GPU machine has), the
# benchmark corpus, and run.sh (tools/gpu/run.sh), which unpacks the payload beside itself and runs
# every GPU check in one go:
#   bash .gpu-bundle/run.sh OUT_DIR
# Packed because a device call carries at most 64 MiB with the working tree: unpacked, OpenBLAS
# alone is 36 MiB and the whole came within 1 MiB of the limit. The script fails if the bundle
# and the tracked files together pass 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${1:-build}"
BUNDLE=.gpu-bundle
bins=("$BUILD_DIR/tests/gpu/cuda_backend_test" "$BUILD_DIR/tests/gpu/cuda_cluster_test"
      "$BUILD_DIR/tests/golden/golden_cuda_test" "$BUILD_DIR/tests/golden/golden_test"
      "$BUILD_DIR/tests/unit/kernels_test"
      "$BUILD_DIR/bench/bench_cuda_lstm" "$BUILD_DIR/bench/bench_rpc" "$BUILD_DIR/cellserve"
      "$BUILD_DIR/libcellserve_cuda.so")
for b in "${bins[@]}"; do
  [[ -f "$b" ]] || { echo "gpu bundle: $b is missing: build with CUDA first (./cellserve.sh build)" >&2; exit 1; }
done
rm -rf "$BUNDLE"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$BUNDLE" "$STAGE/bin" "$STAGE/lib"
cp "${bins[@]}" "$STAGE/bin/"
strip "$STAGE"/bin/*  # the bundle travels under a 64 MiB limit
# Shared libraries: everything ldd resolves except glibc, the C++ runtime and CUDA's libraries.
for b in "${bins[@]}"; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
  grep -v '^/usr/local/cuda' | while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
tar -czf "$BUNDLE/payload.tar.gz" -C "$STAGE" bin lib
corpus="${CELLSERVE_CACHE:-${HOME:-/tmp}/.cache/cellserve}/sotu_sentences.txt"  # as cellserve.sh
# The end-to-end steps need it; without it they would fail on the GPU machine, where time is scarce.
[[ -f "$corpus" ]] || { echo "gpu bundle: no corpus ($corpus): run ./cellserve.sh corpus first" >&2; exit 1; }
gzip -c "$corpus" >"$BUNDLE/sotu_sentences.txt.gz"
cp tools/gpu/run.sh "$BUNDLE/run.sh"
du -sh "$BUNDLE"
# What a device call would carry: the tracked files and the bundle (64 MiB at most; 4 kept spare).
travels=$(( $(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c) + $(cat "$BUNDLE"/* | wc -c) ))
if ((travels > 60 * 1024 * 1024)); then
  echo "gpu bundle: the tracked files and the bundle come to $((travels / 1048576)) MiB, over the 60 MiB kept under" \
    "a device call's 64 MiB: make the bundle smaller" >&2
  exit 1
fi
echo "gpu bundle: a device call carries $((travels / 1048576)) MiB with it (of 64)"
echo "gpu bundle: $BUNDLE ready; on the GPU machine, from the repository root: bash $BUNDLE/run.sh OUT_DIR"
