#!/usr/bin/env bash
# Makes a fresh Debian 12 machine ready: `just` (not a Debian 12 package) and Python 3.14
# (provisioned privately when missing). Idempotent and quiet when all is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v just >/dev/null 2>&1; then
  echo "bootstrap: installing just (cargo install just --locked; takes a few minutes once)" >&2
  cargo install just --locked --quiet
fi
"$here/provision-python.sh" >/dev/null
