// Writing a file so that readers see the old bytes or the new ones, never a part: the bytes go to
// a temporary file beside it (a unique name per process and call, so concurrent writers do not
// clobber each other's), are fsync'ed, and the temporary is renamed over the path. Errors are
// Status values naming the file and the errno text: NOT_FOUND when the folder does not exist,
// INTERNAL otherwise; the temporary is removed on every error. Thread-safe.
#pragma once

#include <string>

#include "runtime/status.h"

namespace cellserve {

Status WriteFileAtomically(const std::string& path, const std::string& bytes);

}  // namespace cellserve
