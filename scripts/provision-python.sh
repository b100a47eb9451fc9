#!/usr/bin/env bash
# Prints the path of a CPython 3.14 interpreter, provisioning a private one if needed.
#
# Order: $HELI_PYTHON if set; `python3.14` on PATH; else a private copy unpacked from
# Debian's unstable binary packages into a cache directory (no compiler, no system change).
# Why not `apt-get install`: sid's python3.14 needs a newer glibc than bookworm's, so the
# private copy carries its own glibc and is patched to use it (DT_RPATH, never
# LD_LIBRARY_PATH, which would leak into every process the interpreter starts).
set -euo pipefail

if [[ -n ${HELI_PYTHON:-} ]]; then echo "$HELI_PYTHON"; exit 0; fi
if command -v python3.14 >/dev/null 2>&1; then command -v python3.14; exit 0; fi

cache=${HELI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/helicopter-parent}
prefix=$cache/python3.14
py=$prefix/usr/bin/python3.14
stamp=$prefix/.provisioned
if [[ -x $py && -f $stamp ]]; then echo "$py"; exit 0; fi

log() { echo "provision-python: $*" >&2; }
need() {
  command -v "$1" >/dev/null 2>&1 && return
  log "installing $2"
  apt-get install -y -qq "$2" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$2" >&2; }
}
need patchelf patchelf
need dpkg-deb dpkg

sources=/etc/apt/sources.list.d/debian.sources
uri=$(awk '/^URIs:/ {print $2; exit}' "$sources" 2>/dev/null || true)
[[ -n $uri ]] || { log "cannot read the Debian mirror from $sources"; exit 1; }

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
cat >"$apt_dir/sid.sources" <<SRC
Types: deb
URIs: $uri
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sid.sources" -o Dir::Etc::sourceparts=/nonexistent
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
log "reading the unstable package lists"
apt-get "${apt_opts[@]}" -qq update >&2

pkgs=(python3.14 python3.14-minimal libpython3.14-minimal libpython3.14-stdlib libc6
  libssl3t64 libexpat1 zlib1g libffi8 libbz2-1.0 liblzma5 libncursesw6 libreadline8t64
  libsqlite3-0 libtinfo6 libuuid1 libzstd1 libdb5.3t64 libmpdec4)
log "downloading ${#pkgs[@]} packages"
(cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2)

rm -rf "$prefix.tmp" && mkdir -p "$prefix.tmp"
for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$prefix.tmp"; done
tmp_py=$prefix.tmp/usr/bin/python3.14
# The interpreter and rpath are final paths: patch for where the prefix will live.
patchelf --set-interpreter "$prefix/usr/lib64/ld-linux-x86-64.so.2" --force-rpath \
  --set-rpath "$prefix/usr/lib/x86_64-linux-gnu" "$tmp_py"
rm -rf "$prefix" && mv "$prefix.tmp" "$prefix"
log "precompiling the standard library"
"$py" -m compileall -q -j0 "$prefix/usr/lib/python3.14" >/dev/null 2>&1 || true
"$py" -c 'import sys, pdb, ctypes, _remote_debugging; assert sys.version_info[:2] == (3, 14); sys.remote_exec' >&2
"$py" --version >"$stamp"
log "ready: $("$py" --version)"
echo "$py"
