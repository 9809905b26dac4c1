#!/usr/bin/env bash
# End-to-end test of the `cellserve` command line as a user runs it: model init for every kind,
# run real sentences (alone and batched must agree), inspect, and the errors a user can hit.
# Usage: cli_test.sh PATH/TO/cellserve [PATH/TO/libthrowing_cuda_plugin.so]   (ctest passes
# both). Bounded: small models, a few seconds.
set -uo pipefail
CELLSERVE="$1"
THROWING_PLUGIN="${2:-}"
source "$(dirname "$0")/lib.sh"

REPO="$WORK/models"
check "top-level help" 0 "model" -- "$CELLSERVE" --help
check "no command is a usage error" 2 "usage" -- "$CELLSERVE"
check "unknown command" 2 "unknown command" -- "$CELLSERVE" frobnicate
for sub in "model init" "model show" "model list" "model convert" "run" "corpus" "serve" "bench"; do
  # shellcheck disable=SC2086
  check "$sub --help" 0 "usage: cellserve $sub" -- "$CELLSERVE" $sub --help
done

check "init lstm" 0 "wrote .*lstm model" -- "$CELLSERVE" model init --repo "$REPO" --name cls --kind lstm \
  --hidden 64 --layers 2 --vocab 5000 --classes 3 --seed 4 --init-scale 0.3
check "init seq2seq" 0 "seq2seq model" -- "$CELLSERVE" model init --repo "$REPO" --name mt --kind seq2seq \
  --hidden 48 --layers 2 --vocab 5000 --target-vocab 300 --max-decode-len 10 --init-scale 0.3
check "init treelstm (F16 weights)" 0 "treelstm model" -- "$CELLSERVE" model init --repo "$REPO" --name tree \
  --kind treelstm --hidden 40 --vocab 5000 --classes 5 --dtype F16 --init-scale 0.3
check "init refuses to overwrite" 1 "already exists.*--force" -- "$CELLSERVE" model init --repo "$REPO" --name cls
check "init --force overwrites" 0 "wrote" -- "$CELLSERVE" model init --repo "$REPO" --name cls --force \
  --hidden 64 --layers 2 --vocab 5000 --classes 3 --seed 4 --init-scale 0.3
check "init rejects a bad kind" 2 "unknown model kind 'gru'" -- "$CELLSERVE" model init --repo "$REPO" --name g --kind gru
check "init rejects a bad size" 2 "hidden" -- "$CELLSERVE" model init --repo "$REPO" --name z --hidden 0
check "init: sizes each in range whose weights do not fit are a clear error" 1 "out of memory making the weights" -- \
  bash -c 'ulimit -v 2000000; "$1" model init --repo "$2" --name huge --hidden 65536 --vocab 16777216' _ "$CELLSERVE" "$REPO"
check "init needs --name" 2 "missing required flag --name" -- "$CELLSERVE" model init --repo "$REPO"
check "init rejects unknown flags" 2 "unknown flag --hiden" -- "$CELLSERVE" model init --repo "$REPO" --name x --hiden 3
check "list" 0 "^cls$" -- "$CELLSERVE" model list --repo "$REPO"
check "show" 0 "decoder.1" -- "$CELLSERVE" model show --repo "$REPO" --name mt
# vocab 5000 x 4 gates x hidden 64 floats = 4.9 MiB; only the first layer is token-fed.
check "show: the first layer's folded table" 0 "lstm.0 .*token-fed, folded table 4.9 MiB" -- \
  "$CELLSERVE" model show --repo "$REPO" --name cls
# lines_without CELLSERVE REPO MODEL WORD: model show's lstm.1 and head lines are there (2 of them),
# and neither has WORD (a crash or an empty listing fails: it has no such lines).
lines_without() {
  local out lines
  out="$("$1" model show --repo "$2" --name "$3" 2>&1)" || { echo "model show failed: $out"; return 1; }
  lines="$(grep -E '^ +(lstm\.1|head) ' <<<"$out")"
  if [[ "$(grep -c . <<<"$lines")" != 2 ]]; then echo "no lstm.1 and head lines: $out"; return 1; fi
  if grep -q -- "$4" <<<"$lines"; then echo "$lines"; return 1; fi
  echo "lstm.1 and head: no $4"
}
check "show: no table for a layer fed by a layer" 0 "lstm.1 and head: no token-fed" -- \
  lines_without "$CELLSERVE" "$REPO" cls token-fed
# model convert: a BF16 copy (rounded, and says how far), F32 back from F16 exactly, and the errors.
check "convert cls to BF16" 0 "cls, weights F32 -> BF16; [0-9]+ of [0-9]+ weights rounded, largest change" -- \
  "$CELLSERVE" model convert --repo "$REPO" --name cls --dtype BF16 --to cls-bf16
check "show the BF16 copy" 0 '"dtype": "BF16"' -- "$CELLSERVE" model show --repo "$REPO" --name cls-bf16
check "show: a BF16 model's weights are streamed as 16 bits" 0 "weights also packed as BF16" -- \
  "$CELLSERVE" model show --repo "$REPO" --name cls-bf16
check "show: an F32 model's are not" 0 "listed, no 16 bits" -- bash -c \
  'out="$("$1" model show --repo "$2" --name cls 2>&1)" && grep -qE "^ +head " <<<"$out" || { echo "no listing: $out"; exit 1; }
   if grep -q "16 bits" <<<"$out"; then echo "$out"; exit 1; fi; echo "listed, no 16 bits"' _ "$CELLSERVE" "$REPO"
check "convert F16 to F32 is exact" 0 "weights F16 -> F32; 0 of [0-9]+ weights rounded" -- \
  "$CELLSERVE" model convert --repo "$REPO" --name tree --dtype F32 --to tree-f32
check "convert refuses to overwrite" 1 "already exists.*--force" -- \
  "$CELLSERVE" model convert --repo "$REPO" --name cls --dtype BF16 --to cls-bf16
check "convert refuses to replace the model itself" 1 "already exists; pick another --to" -- \
  "$CELLSERVE" model convert --repo "$REPO" --name cls --dtype BF16 --to cls --force
check "convert rejects a bad dtype" 2 "F8" -- "$CELLSERVE" model convert --repo "$REPO" --name cls --dtype F8 --to x
check "convert names a missing model, and those there" 1 "'nope'.*cls-bf16" -- \
  "$CELLSERVE" model convert --repo "$REPO" --name nope --dtype BF16 --to y

SENTENCES=("The state of the Union is strong." "We hold these truths to be self-evident." "Peace." \
  "It is in the midst of this that an irredeemable and depreciated currency has been accepted by the people.")
for m in cls mt tree cls-bf16 tree-f32; do
  check "run $m: batched equals alone" 0 "batched results equal alone: +yes" -- \
    "$CELLSERVE" run --model-repo "$REPO" --model "$m" "${SENTENCES[@]}"
done
check "run from a corpus file" 0 "batched results equal alone: +yes" -- bash -c \
  "printf '%s\n' 'One sentence here.' 'And another one, longer than the first.' > '$WORK/c.txt' &&
   '$CELLSERVE' run --model-repo '$REPO' --model cls --corpus '$WORK/c.txt' --sentences 2"
# Folded (the default) and not: the same classes, logits and translations, to the printed digits.
run_columns() {
  "$CELLSERVE" run --model-repo "$REPO" --model "$1" "${SENTENCES[@]}" "${@:2}" |
    grep -E '^ +[0-9]+ ' | sed -E 's/ [0-9]+\.[0-9]+ +[A-Z].*$//'
}
for m in cls mt tree; do
  folded="$(run_columns "$m")"
  plain="$(run_columns "$m" --fold-max-mib 0)"
  check "run $m: --fold-max-mib 0 answers as folded" 0 "^same$" -- bash -c \
    '[[ -n "$1" && "$1" == "$2" ]] && echo same || printf "folded:\n%s\nnot folded:\n%s\n" "$1" "$2"' _ "$folded" "$plain"
done
# An F16 model and its exact F32 copy: the same answers, to the printed digits.
f16="$(run_columns tree)"
f32="$(run_columns tree-f32)"
check "run tree-f32: answers as the F16 original" 0 "^same$" -- bash -c \
  '[[ -n "$1" && "$1" == "$2" ]] && echo same || printf "F16:\n%s\nF32 copy:\n%s\n" "$1" "$2"' _ "$f16" "$f32"
# A config file (--config; for serve, node and router also CELLSERVE_CONFIG) gives flags; the
# command line wins over it.
printf '# run the small classifier\nmodel-repo = %s\nmodel = "mt"\nfold-max-mib = 0\n' "$REPO" > "$WORK/run.conf"
check "run --config: the file's flags" 0 "loaded model 'mt'" -- "$CELLSERVE" run --config "$WORK/run.conf" "Peace."
check "run --config: the command line wins" 0 "loaded model 'cls'" -- \
  "$CELLSERVE" run --config "$WORK/run.conf" --model cls "Peace."
printf 'model-repo = %s\nmodels = cls\nlisten = 127.0.0.1:1\n' "$REPO" > "$WORK/serve.conf"
check "serve: CELLSERVE_CONFIG names the file, and says what the environment hides" 0 \
  "serve.conf:3: 'listen' is set by CELLSERVE_LISTEN, which wins over the file" -- bash -c \
  'printf "cls\tPeace.\n" | env CELLSERVE_CONFIG="$1" CELLSERVE_LISTEN=127.0.0.1:0 "$2" serve --stdin 2>&1' \
  _ "$WORK/serve.conf" "$CELLSERVE"
check "serve: CELLSERVE_CONFIG's models are served" 0 '"line":1,"model":"cls","label"' -- bash -c \
  'printf "cls\tPeace.\n" | env CELLSERVE_CONFIG="$1" "$2" serve --stdin' _ "$WORK/serve.conf" "$CELLSERVE"
check "run (like a probe's health) does not read CELLSERVE_CONFIG" 2 "missing required flag --model" -- \
  env CELLSERVE_CONFIG="$WORK/run.conf" "$CELLSERVE" run "Peace."
printf 'model-repo = %s\nmodle = cls\n' "$REPO" > "$WORK/bad.conf"
check "run --config: a misspelt flag names the file and line" 2 "bad.conf:2: unknown flag 'modle' for cellserve run" -- \
  "$CELLSERVE" run --config "$WORK/bad.conf" "Peace."
check "run --config: a missing file is a clear error" 2 "cannot read the config file" -- \
  "$CELLSERVE" run --config "$WORK/none.conf" "Peace."
mkdir -p "$WORK/conf.d" && cp "$WORK/bad.conf" "$WORK/conf.d/"
check "serve: CELLSERVE_CONFIG naming a folder is refused, not read as empty" 2 "is a folder; give the file in it" -- \
  env CELLSERVE_CONFIG="$WORK/conf.d" "$CELLSERVE" serve --model-repo "$REPO" --stdin
check "run: a negative --fold-max-mib is refused" 2 "fold-max-mib must be in" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model cls --fold-max-mib -1 "hello"
check "run: an unknown --cpu-precision is refused" 2 "cpu-precision must be fp32 or bf16, not 'fp16'" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model cls --cpu-precision fp16 "hello"
if command -v taskset >/dev/null; then
  check "serve --pin-threads on too few CPUs is a usage error" 2 "1 device thread\\(s\\) need 2 CPUs, this process may use 1" -- \
    taskset -c 0 "$CELLSERVE" serve --model-repo "$REPO" --stdin --pin-threads --devices 1
fi
check "serve: a metrics port out of range is a usage error" 2 "metrics-port must be in \\[0, 65535\\], got 70000" -- \
  env CELLSERVE_METRICS_PORT=70000 "$CELLSERVE" serve --model-repo "$REPO" --stdin
check "serve: an unknown --cpu-precision is refused" 2 "cpu-precision must be fp32 or bf16" -- \
  "$CELLSERVE" serve --model-repo "$REPO" --stdin --cpu-precision tf32
# bf16 compute (AMX tiles) where this CPU has AMX-BF16; else the refusal says why and what to do.
if grep -qw amx_bf16 /proc/cpuinfo; then
  for m in cls mt tree; do
    check "run $m --cpu-precision bf16: batched equal alone" 0 "batched results equal alone: +yes" -- \
      "$CELLSERVE" run --model-repo "$REPO" --model "$m" --cpu-precision bf16 "We the people." "In order to form a more perfect union, establish justice."
  done
  check "run --compare-precision: how many answers changed, by length" 0 "answers changed: +[0-9]+ of 2 .*class" -- \
    "$CELLSERVE" run --model-repo "$REPO" --model cls --compare-precision "We the people." "In order to form a more perfect union."
  check "run --compare-precision on seq2seq compares tokens" 0 "answers changed: +[0-9]+ of 1 .*output tokens" -- \
    "$CELLSERVE" run --model-repo "$REPO" --model mt --cpu-precision bf16 --compare-precision "We the people."
  check "serve --cpu-precision bf16 says so" 0 "bf16 compute on AMX tiles" -- bash -c \
    'printf "cls\tPeace.\n" | "$1" serve --model-repo "$2" --stdin --cpu-precision bf16 2>&1' _ "$CELLSERVE" "$REPO"
else
  check "run --cpu-precision bf16 without AMX: a clear refusal" 1 "no AMX-BF16.*use --cpu-precision fp32" -- \
    "$CELLSERVE" run --model-repo "$REPO" --model cls --cpu-precision bf16 "hello"
  check "run --compare-precision without AMX: a clear refusal" 1 "compare-precision .*needs AMX-BF16: .*no AMX-BF16.*run it on a CPU that has it" -- \
    "$CELLSERVE" run --model-repo "$REPO" --model cls --compare-precision "hello"
fi
# A device whose Submit throws (tests/unit/actors/throwing_cuda_plugin.cc): its worker ends; the
# request is answered UNAVAILABLE, the failure is said, and the process exits 1 to be restarted.
if [[ -n "$THROWING_PLUGIN" ]]; then
  check "serve: a device worker that fails is answered, said, and exits 1" 1 \
    'the cluster failed: device worker 0 stopped' -- bash -c \
    'printf "cls\tPeace.\n" | CELLSERVE_CUDA_PLUGIN="$1" "$2" serve --model-repo "$3" --stdin --backend cuda 2>&1' \
    _ "$THROWING_PLUGIN" "$CELLSERVE" "$REPO"
fi
check "run: unknown model names the ones there" 1 "NOT_FOUND.*'nope'.*cls, cls-bf16, mt, tree, tree-f32" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model nope "hello"
check "run: missing repository" 1 "NOT_FOUND.*does not exist" -- \
  "$CELLSERVE" run --model-repo "$WORK/none" --model cls "hello"
check "run: nothing to run" 2 "TEXT arguments or --corpus" -- "$CELLSERVE" run --model-repo "$REPO" --model cls
check "bench: --json naming the corpus is refused before any run" 2 "--json .* is the --corpus file" -- \
  "$CELLSERVE" bench --model-repo "$REPO" --model cls --corpus "$WORK/c.txt" --json "$WORK/c.txt" --rates 10 --duration-s 1
check "bench: --json in a folder that is not there is refused before any run" 2 "there is no folder" -- \
  "$CELLSERVE" bench --model-repo "$REPO" --model cls --corpus "$WORK/c.txt" --json "$WORK/none/b.json" --rates 10 --duration-s 1
check "run: empty sentence is a clear per-request error" 0 "INVALID_ARGUMENT: empty input" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model cls "" "fine words"
check "run: when every sentence fails it says so and exits 1" 1 "sentences that failed: +2 of 2" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model cls "" "   "
printf '   \n\t\nPeace at last.\n \n' > "$WORK/blanks.txt"
check "run: a folder as --corpus says so" 1 "corpus .* is a folder; give a text file" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model cls --corpus "$WORK"
check "run: blank corpus lines are no sentences" 0 "one sentence: Peace at last" -- bash -c \
  'out="$("$1" run --model-repo "$2" --model cls --corpus "$3" 2>&1)" || { echo "$out"; exit 1; }
   rows="$(grep -cE "^ +[0-9]+ +[0-9]+ +(class|error)" <<<"$out")"
   if [[ "$rows" == 1 ]] && grep -q "Peace at last" <<<"$out"; then echo "one sentence: Peace at last"; else echo "$out"; fi' \
  _ "$CELLSERVE" "$REPO" "$WORK/blanks.txt"

# A lying weights file: truncated on disk.
cp -r "$REPO/cls" "$REPO/broken"
sed -i 's/"name": "cls"/"name": "broken"/' "$REPO/broken/spec.json"
truncate -s 1000 "$REPO/broken/weights.safetensors"
check "run: truncated weights are a clear error" 1 "INVALID_ARGUMENT.*weights.safetensors" -- \
  "$CELLSERVE" run --model-repo "$REPO" --model broken "hello"

printf '%%PDF-1.7\nThe first. The second one here.\n' > "$WORK/paper.pdf"
check "corpus: a PDF is not split into sentences of noise" 1 "paper.pdf is not plain text \(a PDF\)" -- \
  "$CELLSERVE" corpus --input "$WORK/paper.pdf" --out "$WORK/noise.txt"
check "corpus: a binary file names its first NUL byte" 1 "not plain text \(a NUL byte at byte 5; UTF-16 without a byte order mark\?\)" -- bash -c \
  "printf 'Hello\\0world. Another sentence here.\\n' > '$WORK/blob.txt' && '$CELLSERVE' corpus --input '$WORK/blob.txt' --out '$WORK/noise.txt'"
check "corpus: UTF-16 text says how to convert it" 1 "u16.txt is UTF-16 text; convert it to UTF-8 first: iconv -f UTF-16" -- bash -c \
  "printf '\\xff\\xfeH\\0i\\0.\\0' > '$WORK/u16.txt' && '$CELLSERVE' corpus --input '$WORK/u16.txt' --out '$WORK/noise.txt'"
check "corpus from a folder" 0 "2 sentences" -- bash -c \
  "mkdir -p '$WORK/txt' && echo 'First sentence. Second one!' > '$WORK/txt/a.txt' &&
   '$CELLSERVE' corpus --input '$WORK/txt' --out '$WORK/s.txt'"
check "corpus written into its input folder, twice, does not read itself" 0 "2 sentences" -- bash -c \
  "'$CELLSERVE' corpus --input '$WORK/txt' --out '$WORK/txt/out.txt' >/dev/null &&
   '$CELLSERVE' corpus --input '$WORK/txt' --out '$WORK/txt/out.txt'"
# /dev/stdout (a pipe here) is written to, not replaced; a link's target gets the corpus.
check "corpus to /dev/stdout writes into the pipe" 0 "^Second one!$" -- bash -c \
  "'$CELLSERVE' corpus --input '$WORK/txt/a.txt' --out /dev/stdout 2>/dev/null | cat"
check "corpus through a symbolic link keeps the link" 0 "link kept, 2 lines in its target" -- bash -c \
  "ln -sf '$WORK/target.txt' '$WORK/link.txt' && '$CELLSERVE' corpus --input '$WORK/txt/a.txt' --out '$WORK/link.txt' 2>/dev/null &&
   test -L '$WORK/link.txt' && echo \"link kept, \$(wc -l < '$WORK/target.txt') lines in its target\""

# tokenize: one line of ids per line in (a blank line stays a blank line: training data stays aligned).
check "tokenize keeps lines aligned" 0 '^[0-9]+ [0-9]+ [0-9]+ [0-9]+//[0-9]+$' -- bash -c \
  "printf 'Peace and war.\n\nThanks\n' | '$CELLSERVE' tokenize --model-repo '$REPO' --model cls | paste -sd/"
check "tokenize without a vocabulary says how to give one" 2 "give --vocab N, or --model-repo DIR --model NAME" -- \
  "$CELLSERVE" tokenize hello
check "tokenize: a vocabulary of reserved ids only is refused" 2 "vocab must be in \[5," -- \
  "$CELLSERVE" tokenize --vocab 4 hello

# serve: requests on stdin, one JSON answer per line, errors as typed codes, drain at EOF.
# Three lines in, three answers out (in completion order), the first with its label.
THREE_ANSWERS='
import json, sys
a = [json.loads(l) for l in sys.stdin]
by = {x.get("line"): x for x in a}
ok = len(a) == 3 and sorted(by) == [1, 2, 3] and by[1].get("model") == "cls" and "label" in by[1]
print("three answers, line 1 labelled" if ok else a)'
check "serve answers every line" 0 '^three answers, line 1 labelled$' -- bash -c \
  'printf "cls\tThe state of the Union is strong.\nnope\thello\ncls\t\n" |
   "$1" serve --stdin --model-repo "$2" --models cls --devices 2 2>/dev/null | python3 -c "$3"' \
  _ "$CELLSERVE" "$REPO" "$THREE_ANSWERS"
check "serve: unknown model is NOT_FOUND" 0 '"line":2,"error":\{"code":"NOT_FOUND"' -- bash -c \
  "printf 'cls\tok\nnope\thello\n' | '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls"
check "serve: empty text is INVALID_ARGUMENT" 0 '"line":1,"error":\{"code":"INVALID_ARGUMENT"' -- bash -c \
  "printf 'cls\t\n' | '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls"
# Input as it comes from other tools: a UTF-8 byte order mark before the first line, a model
# name that is not UTF-8 (answered NOT_FOUND with its bytes escaped; it was never answered), a
# line over 1 MiB (answered INVALID_ARGUMENT, the next line served).
check "serve: a byte order mark before the first line is not part of the model's name" 0 '"line":1,"model":"cls"' -- \
  bash -c "printf '\xef\xbb\xbfcls\tPeace.\n' | '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls 2>&1"
check "serve: a model name that is not UTF-8 is answered NOT_FOUND" 0 '"line":1,"error":\{"code":"NOT_FOUND","message":"unknown model .caf\\\\xe9' -- \
  bash -c "printf 'caf\xe9\tPeace.\n' | '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls 2>&1"
check "serve: a line over 1 MiB is INVALID_ARGUMENT and the next is served" 0 \
  '"line":1,"error":\{"code":"INVALID_ARGUMENT","message":"the line is longer than 1 MiB.*"line":2,"model":"cls"' -- \
  bash -c "{ printf 'cls\t'; head -c 3000000 /dev/zero | tr '\\0' 'a'; printf '\ncls\tPeace.\n'; } |
    '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls --devices 1 2>/dev/null | sort | paste -sd' '"
# Just over the limit (1 MiB + 10 bytes): its newline comes in the same read as its last bytes.
check "serve: a line just over 1 MiB is INVALID_ARGUMENT too" 0 '"line":1,"error":\{"code":"INVALID_ARGUMENT","message":"the line is longer' -- \
  bash -c "{ printf 'cls\t'; head -c \$((1048576 + 6)) /dev/zero | tr '\\0' 'a'; printf '\n'; } |
    '$CELLSERVE' serve --stdin --model-repo '$REPO' --models cls --devices 1 2>/dev/null"
check "infer --json: a flag value that is not UTF-8 still gives one JSON error" 2 '^\{"error":\{"code":"INVALID_ARGUMENT"' -- \
  bash -c "'$CELLSERVE' infer --json --model cls --tokens \$'4,\\xe9' 2>/dev/null"
check "serve: bad policy is a clear error" 2 "unknown policy 'fifo'" -- \
  "$CELLSERVE" serve --model-repo "$REPO" --policy fifo
# A node's and a router's flags are checked before anything loads (the repository here does not exist).
check "node: a bad --join is named before the models load" 2 "--join: 'bad' is not HOST:PORT" -- \
  "$CELLSERVE" node --model-repo "$WORK/none" --join bad
check "node: a --node-name over 256 bytes is refused before the models load" 2 \
  "--node-name: a node name has at most 256 bytes, this one 300" -- \
  "$CELLSERVE" node --model-repo "$WORK/none" --join 127.0.0.1:7411 --node-name "$(printf 'n%.0s' $(seq 300))"
check "node: --report-interval-ms is bounded" 2 "report-interval-ms must be in \[10, 60000\], got 0" -- \
  "$CELLSERVE" node --model-repo "$WORK/none" --join 127.0.0.1:7411 --report-interval-ms 0
check "serve: --max-requests 0 is refused before the models load" 2 "max-requests must be >= 1, got 0" -- \
  "$CELLSERVE" serve --model-repo "$WORK/none" --max-requests 0
check "router: --report-timeout-ms is named" 2 "report-timeout-ms must be >= 100, got 50" -- \
  "$CELLSERVE" router --report-timeout-ms 50
check "router: one port for --listen and --cluster is a usage error, not 'in use by another process'" 2 \
  "--listen and --cluster are both port 47999" -- \
  "$CELLSERVE" router --listen 127.0.0.1:47999 --cluster 127.0.0.1:47999

# bench: a short open-loop run per policy writes the JSON rows users and scripts rely on.
printf '%s\n' "${SENTENCES[@]}" "One more sentence for the corpus." "And a last one." > "$WORK/corpus.txt"
check "bench writes its rows" 0 '"policy": *"padded"' -- bash -c \
  "'$CELLSERVE' bench --model-repo '$REPO' --model cls --policy cellular,padded --corpus '$WORK/corpus.txt' \
     --rates 20 --duration-s 1 --devices 1 --floor-runs 3 --json '$WORK/bench.json' >/dev/null 2>&1 &&
   cat '$WORK/bench.json'"
check "bench: rows have the documented keys" 0 "^every row has every key$" -- python3 -c '
import json, sys
keys = ("policy model offered_rps throughput_rps completed rejected failed p50_ms p90_ms p99_ms max_ms "
        "device_busy unanswered sent mean_ms duration_s load saturation_rps floor_ms mean_batch padding").split()
rows = json.load(open(sys.argv[1]))
missing = [(i, k) for i, r in enumerate(rows) for k in keys if k not in r]
print("every row has every key" if rows and not missing else f"rows {len(rows)}, missing {missing}")' "$WORK/bench.json"
PROFILE="$(cd "$(dirname "$0")/../.." && pwd)/kernels/sim/profiles/gpu-like.json"
check "bench on sim devices" 0 '"policy": *"cellular"' -- bash -c \
  "'$CELLSERVE' bench --model-repo '$REPO' --model cls --policy cellular --corpus '$WORK/corpus.txt' \
     --rates 50 --duration-s 1 --devices 4 --floor-runs 3 --backend sim --sim-profile '$PROFILE' \
     --json '$WORK/sim.json' >/dev/null 2>&1 && cat '$WORK/sim.json'"
check "bench: sim without a profile is a clear error" 1 "needs a profile" -- \
  "$CELLSERVE" bench --model-repo "$REPO" --model cls --corpus "$WORK/corpus.txt" --rates 5 --duration-s 1 \
    --backend sim --json "$WORK/x.json"

check "bench: an infinite duration is a usage error" 2 "duration-s wants a finite number" -- \
  "$CELLSERVE" bench --model-repo "$REPO" --model cls --corpus "$WORK/corpus.txt" --rates 5 --duration-s inf \
    --json "$WORK/x.json"

# Values that used to be read as something else without a word.
check "a switch given a non-boolean value is a usage error" 2 "--stdin is a boolean flag" -- \
  "$CELLSERVE" serve --model-repo "$REPO" --stdin=on
check "serve: --devices beyond int is refused, not wrapped" 2 "devices must be in \\[1, 4096\\]" -- \
  "$CELLSERVE" serve --model-repo "$REPO" --stdin --devices 4294967297
check "model init: a seq2seq target vocabulary too small for BOS and EOS names the flag" 2 "target-vocab must be at least 3" -- \
  "$CELLSERVE" model init --repo "$REPO" --name tiny-mt --kind seq2seq --target-vocab 2
check "model init: a NaN init scale is refused" 2 "init-scale wants a finite number" -- \
  "$CELLSERVE" model init --repo "$REPO" --name nan --kind lstm --init-scale nan
check "model init: an F16 init scale beyond 65504 is refused" 2 "does not fit in F16" -- \
  "$CELLSERVE" model init --repo "$REPO" --name big --kind lstm --dtype F16 --init-scale 1e6
check "infer: a timeout beyond the wire's 32 bits is a usage error" 2 "timeout-ms must be in" -- \
  "$CELLSERVE" infer --addr 127.0.0.1:1 --model cls --timeout-ms 10000000000000000 hello

echo "$pass passed, $failures failed"
[[ "$failures" == 0 ]]
