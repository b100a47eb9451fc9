#!/usr/bin/env bash
# Makes a fresh Debian 12 machine ready: `just` (not a Debian 12 package) and every Python
# build `just test` uses: 3.14 and 3.15, each as release, debug and shared-libpython build
# (provisioned privately when missing, ~15 s each the first time). Idempotent and quiet
# when all is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v just >/dev/null 2>&1; then
  echo "bootstrap: installing just (cargo install just --locked; takes a few minutes once)" >&2
  cargo install just --locked --quiet
fi
"$here/provision-python.sh" >/dev/null  # the default: $HELI_PYTHON, else 3.14
for flavour in 3.14 3.15 3.14-dbg 3.15-dbg 3.14-shared 3.15-shared; do
  "$here/provision-python.sh" "$flavour" >/dev/null
done
