#!/usr/bin/env bash
# The committed goldens must be what make_goldens.py produces (so they can be trusted and
# regenerated): weights, spec.json and README.md byte for byte; each cases.json parsed, with inputs,
# tokens and structure equal and floats within a relative 1e-5 (PyTorch's float outputs round
# differently on another CPU; the weights are exact). See make_goldens.py. Needs Debian's
# python3-torch; skipped (exit 77) where torch is not installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "skipped: /usr/bin/python3 has no torch (apt-get install python3-torch)"
  exit 77
fi
exec /usr/bin/python3 tests/golden/make_goldens.py --check
