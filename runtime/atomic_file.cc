#include "runtime/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace cellserve {

namespace {

// The descriptor /dev/stdout, /dev/stderr, /dev/fd/N or /proc/self/fd/N names, or -1.
int InheritedDescriptor(const std::string& path) {
  if (path == "/dev/stdout") return 1;
  if (path == "/dev/stderr") return 2;
  for (const char* prefix : {"/dev/fd/", "/proc/self/fd/"}) {
    const std::string p(prefix);
    if (path.size() > p.size() && path.compare(0, p.size(), p) == 0 &&
        path.find_first_not_of("0123456789", p.size()) == std::string::npos)
      return std::atoi(path.c_str() + p.size());
  }
  return -1;
}

}  // namespace

StatusOr<WriteTarget> ResolveWriteTarget(const std::string& path) {
  // Reopening such a path would truncate a file the shell opened for appending, and renaming over
  // it would replace that file: the descriptor is written.
  if (const int fd = InheritedDescriptor(path); fd >= 0) return WriteTarget{path, true, fd};
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return WriteTarget{path, false};  // created
  WriteTarget target{path, false};
  if (S_ISLNK(st.st_mode)) {
    // Through the link: stat follows it (also /proc's magic links, such as /dev/stdout's, which
    // realpath cannot name). A link to nothing yet: its target is created.
    if (::stat(path.c_str(), &st) != 0) {
      char to[PATH_MAX];
      const ssize_t n = ::readlink(path.c_str(), to, sizeof to - 1);
      if (n <= 0) return target;
      std::string link_target(to, static_cast<size_t>(n));
      const size_t slash = path.rfind('/');
      if (link_target[0] != '/' && slash != std::string::npos) link_target = path.substr(0, slash + 1) + link_target;
      target.path = link_target;
      return target;
    }
    if (S_ISREG(st.st_mode)) {
      char* real = ::realpath(path.c_str(), nullptr);
      if (real) {
        target.path = real;
        std::free(real);
      }
    }
  }
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path + " is a directory; give a file's path");
  target.in_place = !S_ISREG(st.st_mode);
  return target;
}

namespace {

bool AllDigits(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; }

// Whether `rest` (what follows "PATH.tmp.") is "PID.N" of a process that no longer runs.
bool OfADeadWriter(const std::string& rest) {
  const size_t dot = rest.find('.');
  if (dot == std::string::npos || dot > 9 || !AllDigits(rest.substr(0, dot)) || !AllDigits(rest.substr(dot + 1)))
    return false;
  const pid_t pid = static_cast<pid_t>(std::stol(rest.substr(0, dot)));
  if (pid <= 0 || pid == ::getpid()) return false;
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

void RemoveStaleTemporaries(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string prefix = (slash == std::string::npos ? path : path.substr(slash + 1)) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;  // the write that follows says what is wrong with the folder
  const time_t now = ::time(nullptr);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0 || !OfADeadWriter(name.substr(prefix.size()))) continue;
    const std::string full = dir + "/" + name;
    struct stat st {};
    if (::lstat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime >= kStaleTemporarySeconds)
      ::unlink(full.c_str());
  }
  ::closedir(d);
}

}  // namespace

std::string TemporaryBeside(const std::string& path) {
  RemoveStaleTemporaries(path);
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
}

StatusOr<TemporaryFile> CreateTemporaryBeside(const std::string& path) {
  struct stat replaced {};
  const bool keep_mode = ::stat(path.c_str(), &replaced) == 0 && S_ISREG(replaced.st_mode);
  for (int attempt = 0;; ++attempt) {
    TemporaryFile t;
    t.path = TemporaryBeside(path);
    t.fd = ::open(t.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (t.fd >= 0) {
      if (keep_mode) (void)::fchmod(t.fd, replaced.st_mode & 07777);
      return t;
    }
    const int err = errno;
    if (err == EEXIST && attempt < 100) continue;  // planted, or left: the next name
    const std::string msg = "cannot create " + t.path + ": " + std::strerror(err);
    return err == ENOENT ? NotFound(msg) : Internal(msg);
  }
}

namespace {

Status WriteAll(int fd, const std::string& name, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal("writing " + name + ": " + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

}  // namespace

Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  ASSIGN_OR_RETURN(const WriteTarget target, ResolveWriteTarget(path));
  if (target.inherited_fd >= 0) return WriteAll(target.inherited_fd, path, bytes);
  if (target.in_place) {
    const int fd = ::open(target.path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return Internal("cannot open " + path + ": " + std::strerror(errno));
    Status s = WriteAll(fd, path, bytes);
    if (::close(fd) != 0 && s.ok()) s = Internal("closing " + path + ": " + std::strerror(errno));
    return s;
  }
  ASSIGN_OR_RETURN(const TemporaryFile created, CreateTemporaryBeside(target.path));
  const std::string& tmp = created.path;
  const int fd = created.fd;
  if (Status s = WriteAll(fd, tmp, bytes); !s.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  const int sync_rc = ::fsync(fd);
  const int sync_err = errno;
  const int close_rc = ::close(fd);
  if (sync_rc != 0 || close_rc != 0) {
    const int err = sync_rc != 0 ? sync_err : errno;
    ::unlink(tmp.c_str());
    return Internal("flushing " + tmp + ": " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), target.path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Internal("renaming " + tmp + " to " + target.path + ": " + std::strerror(err));
  }
  return OkStatus();
}

}  // namespace cellserve
