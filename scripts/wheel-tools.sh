#!/usr/bin/env bash
# Prints the directory of a private virtual environment (Python 3.14 from
# provision-python.sh) holding a current pip and maturin: the tools `just wheel` builds
# with and `just test-wheel` installs with. Created on first use under target/ (~10 s,
# PyPI), then reused.
#
# Why not `python -m venv` with pip: the provisioned interpreter is Debian's, and Debian
# ships ensurepip separately, so the venv is made --without-pip and any pip on the machine
# (`python3 -m pip`, else Debian's python3-pip) unpacks a current pip into the venv's
# site-packages with --target. Not `pip --python VENV/bin/python`: that runs the outer pip
# under 3.14, and Debian 12's pip 23.0 no longer runs there (pkgutil.ImpImporter is gone).
# From then on the venv's own pip does the work.
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
# pip warnings that are noise here: an older pip's SyntaxWarnings, the version check.
export PYTHONWARNINGS=ignore::SyntaxWarning PIP_DISABLE_PIP_VERSION_CHECK=1

# A Python with pip; any pip will do: it only unpacks pip's own pure-Python wheel.
outer_pip() {
  local python
  for python in python3 /usr/bin/python3; do
    if "$python" -m pip --version >/dev/null 2>&1; then echo "$python"; return; fi
  done
  if command -v apt-get >/dev/null 2>&1; then
    log "no pip found: installing Debian's python3-pip"
    { apt-get install -y -qq python3-pip || { apt-get update -qq && apt-get install -y -qq python3-pip; }; } >&2
    /usr/bin/python3 -m pip --version >/dev/null 2>&1 && { echo /usr/bin/python3; return; }
  fi
  die "no pip to bootstrap the tools venv (install python3-pip)"
}

rm -rf "$tools"
"$py" -m venv --without-pip "$tools"
log "installing pip and $maturin_spec into $tools"
site=$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
PIP_ROOT_USER_ACTION=ignore timeout 300 "$(outer_pip)" -m pip install -q --target "$site" \
  --python-version "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --only-binary=:all: pip >&2
timeout 300 "$tools/bin/python" -m pip install -q "$maturin_spec" >&2
[[ -x $tools/bin/maturin ]] || die "maturin did not install into $tools"
echo "$maturin_spec" >"$stamp"
echo "$tools"
