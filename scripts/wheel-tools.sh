#!/usr/bin/env bash
# Prints the directory of a private virtual environment (Python 3.14 from
# provision-python.sh) holding a current pip and maturin: the tools `just wheel` builds
# with and `just test-wheel` installs with. Created on first use under target/ (~10 s,
# PyPI), then reused.
#
# Why not `python -m venv` with pip: the provisioned interpreter is Debian's, and Debian
# ships ensurepip separately, so the venv is made --without-pip and any pip >= 22.3 on the
# machine (`python3 -m pip`, else Debian's python3-pip) installs a pip into it through
# `pip --python`. From then on the venv's own pip does the work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "wheel-tools: $*" >&2; }
die() { log "$*"; exit 1; }

tools=$root/target/wheel-tools
maturin_spec='maturin>=1.5,<2'
stamp=$tools/.ready
if [[ -x $tools/bin/maturin && -f $stamp && $(cat "$stamp") == "$maturin_spec" ]]; then
  echo "$tools"; exit 0
fi

py=$("$root/scripts/provision-python.sh" 3.14)
# An old pip under 3.14 warns about its own sources (SyntaxWarning); the warnings are noise.
export PYTHONWARNINGS=ignore::SyntaxWarning PIP_DISABLE_PIP_VERSION_CHECK=1

# A pip that can install into another interpreter's environment (--python: pip 22.3+).
outer_pip() {
  local python
  for python in python3 /usr/bin/python3; do
    if "$python" -m pip --version >/dev/null 2>&1 &&
      "$python" -c 'import sys, pip; v = tuple(int(p) for p in pip.__version__.split(".")[:2]); sys.exit(v < (22, 3))' 2>/dev/null; then
      echo "$python"; return
    fi
  done
  if command -v apt-get >/dev/null 2>&1; then
    log "no pip >= 22.3 found: installing Debian's python3-pip"
    { apt-get install -y -qq python3-pip || { apt-get update -qq && apt-get install -y -qq python3-pip; }; } >&2
    /usr/bin/python3 -m pip --version >/dev/null 2>&1 && { echo /usr/bin/python3; return; }
  fi
  die "no pip >= 22.3 to bootstrap the tools venv (install python3-pip)"
}

rm -rf "$tools"
"$py" -m venv --without-pip "$tools"
log "installing pip and $maturin_spec into $tools"
"$(outer_pip)" -m pip --python "$tools/bin/python" install -q pip >&2
"$tools/bin/python" -m pip install -q "$maturin_spec" >&2
[[ -x $tools/bin/maturin ]] || die "maturin did not install into $tools"
echo "$maturin_spec" >"$stamp"
echo "$tools"
