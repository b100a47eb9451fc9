#!/usr/bin/env bash
# Prints the path of a py-spy binary for the benchmark's `stack` reference row: $HELI_PYSPY
# if set, else py-spy installed from PyPI into the wheel tools' private venv
# (scripts/wheel-tools.sh; ~5 s once, then reused). Exits non-zero when it cannot.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${HELI_PYSPY:-} ]]; then echo "$HELI_PYSPY"; exit 0; fi
tools=$("$root/scripts/wheel-tools.sh")
spec='py-spy>=0.4,<0.5'
if [[ ! -x $tools/bin/py-spy ]]; then
  echo "py-spy: installing $spec into $tools" >&2
  PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 300 "$tools/bin/python" -m pip install -q "$spec" >&2
fi
"$tools/bin/py-spy" --version >/dev/null
echo "$tools/bin/py-spy"
