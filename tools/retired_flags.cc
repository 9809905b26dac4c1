#include "tools/retired_flags.h"

#include <cstdio>

namespace cellserve::tools {

void AddRetiredFlags(Flags& flags) {
  flags.Add("blas-threads", "",
            "no effect (kept so old command lines run): the CPU kernels are cellserve's own, one thread "
            "per device; set --devices instead");
}

void WarnAboutRetiredFlags(const Flags& flags, const std::string& command) {
  if (!flags.Get("blas-threads").empty())
    std::fprintf(stderr,
                 "cellserve %s: warning: --blas-threads has no effect (cellserve does not use OpenBLAS; each "
                 "CPU device is one thread: set --devices) and will be removed\n",
                 command.c_str());
}

}  // namespace cellserve::tools
