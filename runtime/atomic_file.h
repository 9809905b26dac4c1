// Writing a file so that readers see the old bytes or the new ones, never a part: the bytes go to
// a temporary file beside it (a unique name per process and call, so concurrent writers do not
// clobber each other's; created with O_EXCL and O_NOFOLLOW, with the replaced file's mode), are
// fsync'ed, and the temporary is renamed over the path. A symbolic link
// is written through (its target is replaced, the link kept); a device, FIFO or socket
// (/dev/null, a pipe) is written to in place, never replaced; /dev/stdout, /dev/stderr and
// /dev/fd/N are written to the descriptor this process has (whatever it is: a pipe, or a file
// opened for appending); a directory is an error.
// Errors are Status values naming the file and the errno text: NOT_FOUND when the folder does not
// exist, INVALID_ARGUMENT for a directory, INTERNAL otherwise; the temporary is removed on every
// error. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace cellserve {

Status WriteFileAtomically(const std::string& path, const std::string& bytes);

// Where a write "to `path`" lands (for writers that stream, as WriteFileAtomically does for
// bytes in memory): `path` (it may not exist yet), or a symbolic link's target (which may not
// exist yet either); `in_place` for a
// device, FIFO or socket, which is opened and written, not replaced. INVALID_ARGUMENT for a
// directory.
struct WriteTarget {
  std::string path;
  bool in_place = false;
  int inherited_fd = -1;  // /dev/stdout (1), /dev/stderr (2), /dev/fd/N: write there (in_place)
};
StatusOr<WriteTarget> ResolveWriteTarget(const std::string& path);

// A temporary name beside `path`, unique per process and call: "PATH.tmp.PID.N". First it removes
// the temporaries of `path` that writers killed mid-write left (a `model init` interrupted with
// its weights half written): those of a process that no longer runs, untouched for
// kStaleTemporarySeconds (a writer in another PID namespace sharing the folder looks dead).
std::string TemporaryBeside(const std::string& path);
constexpr int64_t kStaleTemporarySeconds = 3600;

// Creates the next temporary of `path` (TemporaryBeside's name) and opens it for writing, with
// O_EXCL and O_NOFOLLOW: a file or link planted at the predictable name is never written through
// (the next name is tried; a link there once sent the weights into the file it pointed to). Its
// mode is that of the file it will replace, when `path` exists (else 0644 less the umask). The
// caller closes `fd` and renames or removes `path`. NOT_FOUND when the folder does not exist,
// INTERNAL otherwise.
struct TemporaryFile {
  int fd = -1;
  std::string path;
};
StatusOr<TemporaryFile> CreateTemporaryBeside(const std::string& path);

}  // namespace cellserve
