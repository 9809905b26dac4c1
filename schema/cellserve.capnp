# cellserve RPC protocol, version 1 (DESIGN.md §7).
#
# One interface, `Cellserve`, is the bootstrap capability of every server (`cellserve serve
# --listen`, and the routers of the cluster). Every call answers with a value: a method that can
# fail returns a union of its result and an `Error` (a code of DESIGN.md §7 plus a message for
# people). A call never fails with a bare exception for a reason the server understands; a
# capnp exception means the transport broke (connection lost, a message over the size limit).
#
# Compatibility: fields are only ever added (new ordinals, at the end), never renumbered or
# retyped; `protocolVersion` in `Health` says which version a server speaks. Clients for other
# languages: `capnp compile -o<lang> schema/cellserve.capnp` (see README).

@0x983d3a1d129475c2;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("cellserve::rpc");

const protocolVersion :UInt32 = 1;

enum ErrorCode {
  # The codes of DESIGN.md §7, one to one with cellserve::StatusCode.
  unknown @0;            # never sent on purpose; a client reading it should treat it as internal
  invalidArgument @1;    # bad input: empty or over-long, token out of vocabulary, malformed tree
  notFound @2;           # no such model (or version)
  resourceExhausted @3;  # queues or state pool full, or too many calls on this connection
  deadlineExceeded @4;   # the request's deadline passed; its cells were removed
  cancelled @5;          # the request was cancelled (client gone, server stopping)
  unavailable @6;        # the server is draining or has no node to run the request
  internal @7;           # a bug or a device failure
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;      # for people: what was wrong and what to do
}

struct Tree {
  # A binary tree for treelstm models. A leaf has a token and no children; an internal node has
  # exactly two children and token -1. The server validates everything (one root, no cycles, no
  # shared children, indices in range, binary, tokens in the vocabulary) and names the problem.
  nodes @0 :List(Node);
  struct Node {
    token @0 :Int32 = -1;  # leaf: token id in [0, vocabulary); internal node: -1
    left @1 :Int32 = -1;   # internal node: index into `nodes` of the left child; leaf: -1
    right @2 :Int32 = -1;  # internal node: index of the right child; leaf: -1
  }
}

struct InferOptions {
  timeoutMs @0 :UInt32;       # deadline, relative to the server's receipt; 0 = none. Past it the
                              # request's cells leave the queues and it answers deadlineExceeded.
  priority @1 :Int8;          # reserved for the queue policy (DESIGN.md §10); accepted and ignored
  maxDecodeLength @2 :UInt32; # seq2seq: decoder steps at most; 0 = the model's max_decode_len;
                              # larger values are clamped to it
}

struct InferRequest {
  model @0 :Text;             # model name, as `models` lists it
  version @1 :UInt32;         # 0 = whichever version the server has; else must match exactly
  input :union {
    tokens @2 :List(Int32);   # lstm, seq2seq: token ids in [0, vocabulary)
    tree @3 :Tree;            # treelstm
  }
  options @4 :InferOptions;
}

struct InferResult {
  model @0 :Text;
  version @1 :UInt32;
  label @2 :Int32 = -1;          # lstm, treelstm: argmax of `logits`; seq2seq: -1
  logits @3 :List(Float32);      # lstm, treelstm: the head's logits
  tokens @4 :List(Int32);        # seq2seq: decoded tokens (EOS included when produced)
  scores @5 :List(Float32);      # seq2seq: the winning logit of each step
  serverMicros @6 :UInt64;       # time from the server's receipt to its answer
}

struct InferReply {
  union {
    result @0 :InferResult;
    error @1 :Error;
  }
}

interface TokenSink {
  # Receives a seq2seq request's decoder tokens as they are produced, in order (index 0, 1, ...).
  # Every token is delivered before `inferStream` returns its reply.
  token @0 (index :UInt32, token :Int32) -> stream;
}

enum ModelKind {
  lstm @0;
  seq2seq @1;
  treelstm @2;
}

struct ModelInfo {
  name @0 :Text;
  version @1 :UInt32;
  kind @2 :ModelKind;
  vocabularySize @3 :UInt32;       # input token ids are in [0, vocabularySize)
  hidden @4 :UInt32;
  layers @5 :UInt32;
  classes @6 :UInt32;              # lstm, treelstm: logits per answer
  targetVocabularySize @7 :UInt32; # seq2seq: output token ids are in [0, targetVocabularySize)
  eosId @8 :Int32;                 # seq2seq
  maxDecodeLength @9 :UInt32;      # seq2seq
  maxInputTokens @10 :UInt32;      # tokens (or tree leaves) per request at most
  dtype @11 :Text;                 # weight storage: F32, F16 or BF16
}

enum ServingState {
  serving @0;    # taking requests
  notReady @1;   # starting (models loading) or stopped
  draining @2;   # stopping: new requests are refused with `unavailable`, accepted ones finish
}

struct Health {
  state @0 :ServingState;
  protocolVersion @1 :UInt32;
  requestsInFlight @2 :Int64;   # admitted on the devices and not yet answered
  slotsInUse @3 :Int64;         # state slots held by requests, all devices
  accepted @4 :Int64;           # counters since start
  completed @5 :Int64;
  failed @6 :Int64;
  rejected @7 :Int64;
  devices @8 :UInt32;
  connections @9 :UInt32;       # RPC connections open now
  callsInFlight @10 :UInt32;    # infer calls being served now, all connections
  reason @11 :Text;             # why it is not serving, for an operator (loading the models, a
                                # stuck device, no node yet); empty while serving or when the
                                # state says it all
}

interface Cellserve {
  infer @0 (request :InferRequest) -> (reply :InferReply);
  # Runs one request and answers once. Dropping the call (or the connection) cancels it: its
  # cells leave the queues and its state slots are freed.

  inferStream @1 (request :InferRequest, sink :TokenSink) -> (reply :InferReply);
  # As infer, and pushes each decoder token (seq2seq) to `sink` as it is produced; the reply
  # comes after the last token. For lstm and treelstm models nothing is pushed.

  models @2 () -> (models :List(ModelInfo));
  health @3 () -> (health :Health);
}
