#!/usr/bin/env bash
# install.sh DIR --offline|--prefer-offline: installs the manifest validators (npm kubernetes-models
# and js-yaml, pinned by package-lock.json beside this script) into DIR, unless DIR already holds
# them for this lock file. --offline (the k8s_manifests test): from npm's cache only; a test never
# downloads. --prefer-offline (./cellserve.sh deps): online where the cache lacks them.
# Exit 0 when they are there; otherwise npm's last lines on stderr and exit 1 (tried again next time).
set -euo pipefail
dir="$1" mode="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if cmp -s "$here/package-lock.json" "$dir/package-lock.json" &&
   [[ -f "$dir/node_modules/kubernetes-models/package.json" && -f "$dir/node_modules/js-yaml/package.json" ]]; then
  exit 0
fi
echo "installing kubernetes-models and js-yaml into $dir ($mode)"
mkdir -p "$dir"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
if ! timeout 300 npm ci --prefix "$dir" "$mode" --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1; then
  grep -v EBADENGINE "$dir/npm.log" | tail -n 20 >&2
  rm -f "$dir/package-lock.json"
  exit 1
fi
