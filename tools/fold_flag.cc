#include "tools/fold_flag.h"

#include <string>

#include "runtime/token_fold.h"

namespace cellserve::tools {

void AddFoldFlag(Flags& flags) {
  const int64_t mib = kDefaultFoldMaxBytes >> 20;
  flags.Add("fold-max-mib", std::to_string(mib),
            "token-fed cells (an LSTM's first layer, tree leaves) get their input's part of the gates "
            "precomputed for every vocabulary entry when that table (vocab x gates floats) takes at most this "
            "many MiB: half the weights per LSTM step when embed = hidden. cpu: one table per process; cuda: one "
            "in each GPU's memory. 0: never");
}

StatusOr<int64_t> FoldMaxBytes(const Flags& flags) {
  ASSIGN_OR_RETURN(const int64_t mib, flags.GetIntIn("fold-max-mib", 0, int64_t{1} << 20, "MiB; 0 turns folding off"));
  return mib << 20;
}

}  // namespace cellserve::tools
