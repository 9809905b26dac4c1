#!/usr/bin/env bash
# k8s_manifests_test.sh CELLSERVE_BINARY: offline checks of deploy/ (no cluster, no Docker engine).
#
#  1. npm: kubernetes-models and js-yaml, pinned by deploy/validate/package-lock.json, installed
#     into ${CELLSERVE_CACHE:-~/.cache/cellserve}/npm-k8s-validate when missing, from npm's cache
#     only (--offline; `./cellserve.sh deps` fills that cache), never into the repository.
#  2. YAML: every file under deploy/k8s parses with js-yaml and, where python3 has a yaml module,
#     with PyYAML to the same values (YAML 1.1 vs 1.2 surprises such as `on`, `0755`, `1e3`).
#  3. Render deploy/k8s/base, overlays/gpu and single with deploy/validate/render.mjs (the subset
#     of kustomize they use), and the renderer's feature fixture; where `kubectl kustomize`
#     exists, the renderer must produce exactly kustomize's objects.
#  4. Validate every rendered object (deploy/validate/validate.mjs): Kubernetes API schema by
#     apiVersion/kind, unknown fields, references between objects, the project's pod rules.
#  5. Self-tests: broken copies (replicas: "two", a misspelled containres, an unknown kind, a
#     selector that matches nothing) must fail, each for its reason; the renderer refuses a
#     kustomize field it does not implement; the Dockerfile check fails on a missing COPY source.
#  6. deploy/Dockerfile: static checks and the runtime packages against `ldd CELLSERVE_BINARY`.
#  7. The binary: every subcommand (serve, router, node, health) and flag the manifests pass exists
#     (`cellserve SUB --help`); the initContainer's
#     cellserve-model-repo builds the repository from the ConfigMap's specs (demo weights); the
#     serve container's command line serves it, its readiness probe command says serving, and
#     SIGTERM drains and exits 0 within the pod's termination grace period.
# Prints one line per check and "N passed, M failed"; exit 0 only if none failed.
set -euo pipefail

BIN="${1:?usage: k8s_manifests_test.sh CELLSERVE_BINARY}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VALIDATE="$ROOT/deploy/validate"
CACHE="${CELLSERVE_CACHE:-${HOME:-/tmp}/.cache/cellserve}"  # as cellserve.sh
NPM_DIR="$CACHE/npm-k8s-validate"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/k8s_manifests_test.XXXXXX")"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM  # a signal runs no EXIT trap: make it an exit
trap 'exit 130' INT

passed=0
failed=0
pass() {
  echo "ok: $*"
  passed=$((passed + 1))
}
fail() {
  echo "FAILED: $*"
  failed=$((failed + 1))
}
finish() {
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit
}

for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "k8s_manifests_test: $tool not found (./cellserve.sh deps)"; exit 1; }
done
# PyYAML, for the cross-parse: the default python3 or Debian's.
PYYAML=""
for py in python3 /usr/bin/python3; do
  if "$py" -c "import yaml" 2>/dev/null; then PYYAML="$py"; break; fi
done

# ---- 1. npm packages ----------------------------------------------------------------------------
# From npm's cache only: a test never downloads (./cellserve.sh deps installs them, online if the
# cache lacks them).
if ! "$VALIDATE/install.sh" "$NPM_DIR" --offline; then
  fail "kubernetes-models/js-yaml are neither installed in $NPM_DIR nor in npm's cache: run ./cellserve.sh deps"
  finish
fi
export CELLSERVE_NODE_MODULES="$NPM_DIR/node_modules"
pass "npm: kubernetes-models $(node -p "require('$NPM_DIR/node_modules/kubernetes-models/package.json').version")"

# ---- 2. YAML ------------------------------------------------------------------------------------
yaml_ok=1
: >"$WORK/yaml-pairs"
while IFS= read -r -d '' f; do
  j="$WORK/yaml-$(echo "${f#"$ROOT"/}" | tr / _).json"
  if node "$VALIDATE/render.mjs" --yaml-to-json "$f" >"$j" 2>"$WORK/err"; then
    printf '%s\t%s\n' "$f" "$j" >>"$WORK/yaml-pairs"
  else
    fail "js-yaml: ${f#"$ROOT"/}: $(cat "$WORK/err")"
    yaml_ok=0
  fi
done < <(find "$ROOT/deploy/k8s" "$VALIDATE/testdata" -name '*.yaml' -print0 | sort -z)
((yaml_ok)) && pass "js-yaml parses $(wc -l <"$WORK/yaml-pairs") YAML files"
if [[ -n "$PYYAML" ]]; then
  if "$PYYAML" - "$WORK/yaml-pairs" <<'EOF'; then
import json, sys, yaml
bad = 0
for line in open(sys.argv[1]):
    y, j = line.rstrip("\n").split("\t")
    try:
        docs = [d for d in yaml.safe_load_all(open(y)) if d is not None]
    except yaml.YAMLError as e:
        print(f"PyYAML cannot parse {y}: {e}")
        bad += 1
        continue
    if docs != json.load(open(j)):
        print(f"{y}: PyYAML (YAML 1.1) and js-yaml (YAML 1.2) read different values: quote the ambiguous scalars")
        bad += 1
sys.exit(1 if bad else 0)
EOF
    pass "PyYAML reads every file to the same values as js-yaml"
  else
    fail "PyYAML cross-parse"
  fi
else
  echo "skip: no python3 with a yaml module (Debian: python3-yaml); js-yaml parsed the files"
fi

# ---- 3. render ----------------------------------------------------------------------------------
KUBECTL=""
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then KUBECTL=kubectl; fi
declare -A RENDERED=()
for dir in deploy/k8s/base deploy/k8s/overlays/gpu deploy/k8s/single deploy/validate/testdata/features; do
  out="$WORK/$(echo "$dir" | tr / _).json"
  if node "$VALIDATE/render.mjs" "$ROOT/$dir" >"$out" 2>"$WORK/err"; then
    pass "render $dir: $(node -p "JSON.parse(require('fs').readFileSync('$out')).map(o => o.kind).join(' ')")"
    RENDERED[$dir]="$out"
  else
    fail "render $dir: $(cat "$WORK/err")"
    continue
  fi
  if [[ -n "$KUBECTL" ]]; then
    if ! "$KUBECTL" kustomize "$ROOT/$dir" >"$WORK/kustomize.yaml" 2>"$WORK/err"; then
      fail "kubectl kustomize $dir: $(cat "$WORK/err")"
    elif node "$VALIDATE/render.mjs" --compare "$ROOT/$dir" "$WORK/kustomize.yaml" >/dev/null 2>"$WORK/err"; then
      pass "render.mjs = kubectl kustomize ($("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')) on $dir"
    else
      fail "render.mjs differs from kubectl kustomize on $dir:"$'\n'"$(cut -c1-2000 "$WORK/err")"
    fi
  fi
done
[[ -z "$KUBECTL" ]] && echo "skip: no kubectl here: render.mjs not compared with kustomize"

# ---- 4. validate --------------------------------------------------------------------------------
DEPLOYS=(deploy/k8s/base deploy/k8s/overlays/gpu deploy/k8s/single)
for dir in "${DEPLOYS[@]}"; do
  [[ -n "${RENDERED[$dir]:-}" ]] || continue
  if node "$VALIDATE/validate.mjs" "${RENDERED[$dir]}" >"$WORK/out" 2>&1; then
    pass "validate $dir: $(tail -n 1 "$WORK/out" | sed 's/.*: //') against the Kubernetes schemas"
  else
    fail "validate $dir:"$'\n'"$(cat "$WORK/out")"
  fi
done

# ---- 5. self-tests: the checks catch what they claim to -----------------------------------------
BASE_JSON="${RENDERED[deploy/k8s/base]:-}"
if [[ -n "$BASE_JSON" ]]; then
  python3 - "$BASE_JSON" "$WORK" <<'EOF'
import copy, json, sys
objs = json.load(open(sys.argv[1]))
def broken(name, change):
    o = copy.deepcopy(objs)
    change(o)
    json.dump(o, open(f"{sys.argv[2]}/broken-{name}.json", "w"))
first = lambda o, kind: next(x for x in o if x["kind"] == kind)
def replicas(o): first(o, "Deployment")["spec"]["replicas"] = "two"
def containres(o):
    spec = first(o, "StatefulSet")["spec"]["template"]["spec"]
    spec["containres"] = copy.deepcopy(spec["containers"])  # the real list stays: only the strict check sees it
def kind(o): first(o, "Deployment")["kind"] = "Deploymnet"
def selector(o): first(o, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "routr"
for f in (replicas, containres, kind, selector):
    broken(f.__name__, f)
EOF
  check_broken() {  # NAME EXPECTED-MESSAGE
    if node "$VALIDATE/validate.mjs" --expect-invalid "$WORK/broken-$1.json" >"$WORK/out" 2>&1 &&
       grep -q -- "$2" "$WORK/out"; then
      pass "self-test: $1 is rejected ($(grep -m1 -- "$2" "$WORK/out" | sed 's/^[^:]*: //'))"
    else
      fail "self-test: $1 was not rejected with '$2':"$'\n'"$(cat "$WORK/out")"
    fi
  }
  check_broken replicas "spec/replicas must be integer"
  check_broken containres "unknown field /spec/template/spec/containres"
  check_broken kind "unknown apiVersion/kind apps/v1/Deploymnet"
  check_broken selector "PodDisruptionBudget/cellserve/cellserve-router: selector matches no workload"
fi

mkdir -p "$WORK/unsupported"
cat >"$WORK/unsupported/kustomization.yaml" <<'EOF'
resources: []
commonLabels:
  app: x
EOF
if ! node "$VALIDATE/render.mjs" "$WORK/unsupported" >/dev/null 2>"$WORK/err" && grep -q "not supported" "$WORK/err"; then
  pass "self-test: render.mjs refuses a kustomize field it does not implement ($(grep -o "'commonLabels' is not supported" "$WORK/err"))"
else
  fail "self-test: render.mjs accepted commonLabels, which it does not implement"
fi

# ---- 6. Dockerfile ------------------------------------------------------------------------------
if python3 "$VALIDATE/check_dockerfile.py" "$ROOT" "$BIN" >"$WORK/out" 2>&1; then
  while IFS= read -r line; do pass "${line#check_dockerfile.py: }"; done <"$WORK/out"
else
  fail "deploy/Dockerfile:"$'\n'"$(cat "$WORK/out")"
fi
mkdir -p "$WORK/dfroot/deploy"
for entry in "$ROOT"/*; do
  [[ "$(basename "$entry")" == deploy ]] || ln -s "$entry" "$WORK/dfroot/$(basename "$entry")"
done
cp "$ROOT/deploy/Dockerfile" "$ROOT/deploy/Dockerfile.dockerignore" "$ROOT/deploy/model-repo.sh" "$WORK/dfroot/deploy/"
sed -i 's#^COPY tools/ tools/#COPY toolz/ tools/#' "$WORK/dfroot/deploy/Dockerfile"
if ! python3 "$VALIDATE/check_dockerfile.py" "$WORK/dfroot" >"$WORK/out" 2>&1 && grep -q "toolz/ does not exist" "$WORK/out"; then
  pass "self-test: the Dockerfile check rejects a missing COPY source"
else
  fail "self-test: the Dockerfile check accepted COPY toolz/:"$'\n'"$(cat "$WORK/out")"
fi
cp "$ROOT/deploy/Dockerfile" "$WORK/dfroot/deploy/Dockerfile"
sed -i '/^COPY cluster\/ cluster\//d' "$WORK/dfroot/deploy/Dockerfile"
if ! python3 "$VALIDATE/check_dockerfile.py" "$WORK/dfroot" >"$WORK/out" 2>&1 &&
  grep -q "stage build does not COPY cluster/" "$WORK/out"; then
  pass "self-test: the Dockerfile check rejects a build stage that leaves out a folder CMake adds"
else
  fail "self-test: the Dockerfile check accepted a build stage without cluster/:"$'\n'"$(cat "$WORK/out")"
fi

# ---- 7. the binary against the manifests --------------------------------------------------------
# Every cellserve command line in the rendered manifests: container args (ENTRYPOINT is cellserve)
# and exec probes that start with `cellserve`.
for dir in "${DEPLOYS[@]}"; do
  [[ -n "${RENDERED[$dir]:-}" ]] || continue
  node -e '
    const objs = JSON.parse(require("fs").readFileSync(process.argv[1]));
    for (const o of objs) {
      const spec = o.spec?.template?.spec;
      if (!spec) continue;
      for (const c of spec.containers ?? []) {
        if (c.args && !c.command) console.log(JSON.stringify(c.args));
        for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
          const cmd = c[p]?.exec?.command;
          if (cmd?.[0] === "cellserve") console.log(JSON.stringify(cmd.slice(1)));
        }
      }
    }' "${RENDERED[$dir]}"
done | sort -u >"$WORK/command-lines"
# No command line found would check nothing below and pass.
[[ -s "$WORK/command-lines" ]] || fail "no cellserve command line found in the rendered manifests"
while IFS= read -r line; do
  sub="$(node -p "JSON.parse(process.argv[1])[0]" "$line")"
  if ! "$BIN" "$sub" --help >"$WORK/help" 2>&1; then
    fail "deploy/k8s runs 'cellserve $sub', which does not exist ($line)"
    continue
  fi
  missing=""
  for flag in $(node -p "JSON.parse(process.argv[1]).filter(a => a.startsWith('--')).map(a => a.split('=')[0]).join(' ')" "$line"); do
    grep -q -- "^  ${flag}\( \|$\)" "$WORK/help" || missing+=" $flag"
  done
  if [[ -z "$missing" ]]; then
    pass "cellserve $sub knows every flag of $line"
  else
    fail "cellserve $sub does not know$missing (used in deploy/k8s: $line)"
  fi
done <"$WORK/command-lines"

SINGLE_JSON="${RENDERED[deploy/k8s/single]:-}"
if [[ -n "$SINGLE_JSON" ]]; then
  # The ConfigMap's specs and demo-weights flag, the serve container's args (with the container's
  # paths and addresses replaced by local ones), its readiness probe and its grace period.
  python3 - "$SINGLE_JSON" "$WORK" <<'EOF'
import json, os, sys
objs = json.load(open(sys.argv[1]))
work = sys.argv[2]
cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "cellserve-models")
os.makedirs(f"{work}/specs", exist_ok=True)
for key, text in cm["data"].items():
    open(f"{work}/specs/{key}", "w").write(text)
dep = next(o for o in objs if o["kind"] == "Deployment")
pod = dep["spec"]["template"]["spec"]
c = next(c for c in pod["containers"] if c["name"] == "serve")
args, out, i = c["args"], [], 0
while i < len(args):
    a = args[i]
    if a == "--listen":
        out += ["--listen", "127.0.0.1:0", "--port-file", f"{work}/port"]; i += 2; continue
    if a == "--metrics-port":
        out += ["--metrics-port", "0"]; i += 2; continue
    if a == "--model-repo":
        out += ["--model-repo", f"{work}/models"]; i += 2; continue
    out.append(a); i += 1
open(f"{work}/serve-args", "w").write("\n".join(out) + "\n")
open(f"{work}/probe-args", "w").write("\n".join(c["readinessProbe"]["exec"]["command"][1:]) + "\n")
open(f"{work}/grace", "w").write(str(pod["terminationGracePeriodSeconds"]))
init = next(i for i in pod["initContainers"] if i["name"] == "model-repo")
open(f"{work}/init-command", "w").write(" ".join(init["command"]))
open(f"{work}/demo-weights", "w").write(cm["data"].get("demo-weights", "false"))
EOF
  if [[ "$(cat "$WORK/init-command")" != "cellserve-model-repo /etc/cellserve/specs /weights /models" ]]; then
    fail "the initContainer's command changed ($(cat "$WORK/init-command")): update this test"
  elif CELLSERVE="$BIN" CELLSERVE_DEMO_WEIGHTS="$(cat "$WORK/demo-weights")" \
       sh "$ROOT/deploy/model-repo.sh" "$WORK/specs" "$WORK/weights" "$WORK/models" >"$WORK/out" 2>&1; then
    pass "cellserve-model-repo: $(tail -n 1 "$WORK/out" | sed 's/^cellserve-model-repo: //') from the ConfigMap's specs"
  else
    fail "cellserve-model-repo on the ConfigMap's specs:"$'\n'"$(cat "$WORK/out")"
  fi
  # Relative folders (by hand): the links still point at the weights.
  if (cd "$WORK" && CELLSERVE="$BIN" sh "$ROOT/deploy/model-repo.sh" specs weights models-relative >"$WORK/out" 2>&1); then
    pass "cellserve-model-repo with relative folders"
  else
    fail "cellserve-model-repo with relative folders:"$'\n'"$(cat "$WORK/out")"
  fi

  if [[ -f "$WORK/models/sentiment/spec.json" ]]; then
    mapfile -t serve_args <"$WORK/serve-args"
    mapfile -t probe_args <"$WORK/probe-args"
    grace="$(cat "$WORK/grace")"
    "$BIN" "${serve_args[@]}" >"$WORK/serve.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
      [[ -s "$WORK/port" ]] && break
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    ready=0
    if [[ -s "$WORK/port" ]]; then
      # The readiness probe's own command, pointed at the local port.
      for i in "${!probe_args[@]}"; do
        [[ "${probe_args[$i]}" == --addr ]] && probe_args[$((i + 1))]="127.0.0.1:$(cat "$WORK/port")"
      done
      for _ in $(seq 1 60); do
        if "$BIN" "${probe_args[@]}" >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.5
      done
    fi
    if ((ready)) && models="$("$BIN" models --addr "127.0.0.1:$(cat "$WORK/port")" 2>&1)"; then
      pass "serve with the manifest's args: the readiness probe says serving; models: $(echo "$models" | awk 'NR > 1 {print $1}' | tr '\n' ' ')"
      kill -TERM "$SERVER_PID"
      # The drain must end well inside the grace period, which also covers the 5 s preStop.
      code=""
      for _ in $(seq 1 $(((grace - 5) * 10))); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
          wait "$SERVER_PID" && code=0 || code=$?
          break
        fi
        sleep 0.1
      done
      if [[ "$code" == 0 ]]; then
        SERVER_PID=""
        pass "SIGTERM: serve drained and exited 0 within the grace period ($grace s, less the 5 s preStop)"
      else
        fail "SIGTERM: serve did not exit 0 within $((grace - 5)) s (exit '${code:-still running}'); log:"$'\n'"$(tail -n 20 "$WORK/serve.log")"
      fi
    else
      fail "serve with the manifest's args did not become ready:"$'\n'"$(tail -n 20 "$WORK/serve.log")"
    fi
  else  # the serve, probe and SIGTERM checks would vanish unseen
    fail "the initContainer made no models/sentiment (the ConfigMap's model renamed?): serve was not checked"
  fi
fi

finish
