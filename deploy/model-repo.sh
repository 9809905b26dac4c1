#!/bin/sh
# cellserve-model-repo: assembles a cellserve model repository (DIR/NAME/spec.json +
# DIR/NAME/weights.safetensors, README "Models") from model specs kept apart from their weights,
# as the Kubernetes manifests keep them: specs in a ConfigMap, weights on a volume. The container
# images install it as /usr/local/bin/cellserve-model-repo; the pods run it as an initContainer.
#
#   cellserve-model-repo SPECS_DIR WEIGHTS_DIR REPO_DIR
#
#   SPECS_DIR    NAME.spec.json files (the ConfigMap's keys; other files are ignored)
#   WEIGHTS_DIR  NAME/weights.safetensors for each model (a volume)
#   REPO_DIR     written: NAME/spec.json (a copy) and NAME/weights.safetensors (a symbolic link
#                into WEIGHTS_DIR by its absolute path, so the server must see WEIGHTS_DIR at
#                the same path)
#
# Every model is then loaded and checked with `cellserve model show` (spec fields, tensor names,
# shapes, dtype), so a wrong spec or stale weights stop the pod here, with the error in the
# initContainer's log, instead of at serving time.
#
# Environment:
#   CELLSERVE_DEMO_WEIGHTS  "true" or "1": a model whose weights file is missing gets seeded
#                           random weights (`cellserve model init`, written into WEIGHTS_DIR, so
#                           WEIGHTS_DIR must be writable). Same seed, same weights on every machine.
#                           For demos only: the answers are meaningless. Default: off, and a
#                           missing weights file is an error.
#   CELLSERVE_DEMO_SEED     seed of those weights (default 1)
#   CELLSERVE               the cellserve binary (default: cellserve on PATH)
#
# Exit status: 0 when every model loads; 1 otherwise; 2 bad usage. POSIX sh (Debian's dash).
set -eu

CELLSERVE="${CELLSERVE:-cellserve}"
DEMO="${CELLSERVE_DEMO_WEIGHTS:-0}"
SEED="${CELLSERVE_DEMO_SEED:-1}"

if [ "$#" -ne 3 ]; then
  echo "usage: cellserve-model-repo SPECS_DIR WEIGHTS_DIR REPO_DIR" >&2
  exit 2
fi
SPECS="$1"
WEIGHTS="$2"
REPO="$3"

fail() {
  echo "cellserve-model-repo: $*" >&2
  exit 1
}

case "$DEMO" in
  1 | true | yes) DEMO=1 ;;
  0 | false | no | "") DEMO=0 ;;
  *) fail "CELLSERVE_DEMO_WEIGHTS must be true or false, got '$DEMO'" ;;
esac

# A field of a flat JSON object (spec.json has no nesting): the number or string after "KEY":,
# or nothing when the key is absent. The quotes around KEY keep "vocab_size" from matching
# "target_vocab_size".
field() {
  tr -d '\n\r' <"$2" |
    sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([A-Za-z0-9_.+-]*\)\"\{0,1\}.*/\1/p"
}

# Writes seeded random weights for the spec $1 (model $2) to $3, atomically (rename in the same
# folder), so a pod killed halfway never leaves a truncated file that looks like weights.
make_demo_weights() {
  spec="$1" name="$2" dest="$3"
  kind="$(field kind "$spec")"
  set -- --name "$name" --kind "$kind" --seed "$SEED"
  for pair in hidden:hidden embed_dim:embed layers:layers vocab_size:vocab \
    max_input_tokens:max-input-tokens max_batch:max-batch dtype:dtype; do
    v="$(field "${pair%%:*}" "$spec")"
    [ -n "$v" ] && set -- "$@" "--${pair#*:}" "$v"
  done
  case "$kind" in
    seq2seq) extra="target_vocab_size:target-vocab max_decode_len:max-decode-len" ;;
    *) extra="classes:classes" ;;
  esac
  for pair in $extra; do
    v="$(field "${pair%%:*}" "$spec")"
    [ -n "$v" ] && set -- "$@" "--${pair#*:}" "$v"
  done
  mkdir -p "$(dirname "$dest")"
  tmp="$(mktemp -d "$(dirname "$dest")/.demo-weights.XXXXXX")"
  if ! "$CELLSERVE" model init --repo "$tmp" "$@" >&2; then
    rm -rf "$tmp"
    fail "$name: could not make demo weights (cellserve model init $*)"
  fi
  mv "$tmp/$name/weights.safetensors" "$dest"
  rm -rf "$tmp"
}

[ -d "$SPECS" ] || fail "no specs folder $SPECS"
mkdir -p "$REPO" "$WEIGHTS"
WEIGHTS="$(cd "$WEIGHTS" && pwd)"  # the links into it must not depend on where they are
count=0
for spec in "$SPECS"/*.spec.json; do
  [ -e "$spec" ] || fail "no NAME.spec.json in $SPECS (the models ConfigMap)"
  name="$(basename "$spec" .spec.json)"
  case "$name" in
    "" | . | .. | *[!A-Za-z0-9_.-]*) fail "bad model name '$name' (letters, digits, _ - .)" ;;
  esac
  spec_name="$(field name "$spec")"
  [ "$spec_name" = "$name" ] ||
    fail "$spec: its \"name\" is '$spec_name'; the file must be called $spec_name.spec.json"

  weights="$WEIGHTS/$name/weights.safetensors"
  if [ ! -f "$weights" ]; then
    [ "$DEMO" = 1 ] ||
      fail "$name: no weights at $weights: copy the model's weights.safetensors there (docs/OPERATIONS.md), or set demo-weights: \"true\" for random ones"
    echo "cellserve-model-repo: WARNING: $name: demo mode: seeded random weights (seed $SEED), the answers mean nothing" >&2
    make_demo_weights "$spec" "$name" "$weights"
  fi

  mkdir -p "$REPO/$name"
  cp "$spec" "$REPO/$name/spec.json"
  ln -sf "$weights" "$REPO/$name/weights.safetensors"
  if ! "$CELLSERVE" model show --repo "$REPO" --name "$name" >/dev/null; then
    fail "$name: cellserve model show refused it (above): unreadable weights, or a spec that does not match $weights (wrong spec, or stale weights: delete them)"
  fi
  echo "cellserve-model-repo: $name: ready ($weights)" >&2
  count=$((count + 1))
done
echo "cellserve-model-repo: $count model(s) in $REPO" >&2
