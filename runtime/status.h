// Status and StatusOr<T>: the one error type of the core. Codes map 1:1 onto the RPC error codes
// (DESIGN.md §7). Errors are values, never exceptions. Cheap to copy; OK carries no allocation.
// Thread-compatible: a Status is a plain value.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace cellserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kResourceExhausted,
  kDeadlineExceeded,
  kCancelled,
  kUnavailable,
  kInternal,
};

// "INVALID_ARGUMENT", ... as used on the wire and in logs.
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: token 40000 is outside the vocabulary (32000)".
  std::string ToString() const;
  // A copy with "context: " put before the message, for errors passed up a layer.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// `bytes` as printable ASCII, other bytes as \xNN: for echoing a caller's bytes (a model name, a
// flag's value) in an error message, which goes out as UTF-8 text (capnp Text, JSON) that clients
// decode strictly.
std::string PrintableBytes(const std::string& bytes);

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status)  // NOLINT: implicit by design
      : status_(status.ok() ? Internal("StatusOr constructed from OK status without a value") : status) {
    assert(!status.ok() && "StatusOr needs a value or an error");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace cellserve

#define CS_CONCAT_INNER_(a, b) a##b
#define CS_CONCAT_(a, b) CS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::cellserve::Status cs_status_ = (expr);          \
    if (!cs_status_.ok()) return cs_status_;          \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL_(CS_CONCAT_(cs_or_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()
