#!/usr/bin/env bash
# Prints the path of a CPython interpreter of the asked flavour, provisioning a private one
# if needed.
#
# usage: provision-python.sh [FLAVOUR]
#   FLAVOUR   3.14 (the default), 3.15: the standard build
#             3.14-dbg, 3.15-dbg:       Debian's debug build (python3.Xd, Py_DEBUG)
#             3.14-shared, 3.15-shared: the interpreter in a shared libpython3.X.so, run by a
#                                       three-line launcher calling Py_BytesMain (how
#                                       --enable-shared builds and embedding programs run)
#
# Order: without FLAVOUR, $HELI_PYTHON if set; then `python3.X` (`python3.Xd` for -dbg) on
# PATH; else a private copy unpacked from Debian's unstable binary packages into a cache
# directory (no system change; the -shared launcher is compiled with `cc`).
# Why not `apt-get install`: sid's python3.X needs a newer glibc than bookworm's, so the
# private copy carries its own glibc and is patched to use it (DT_RPATH, never
# LD_LIBRARY_PATH, which would leak into every process the interpreter starts).
set -euo pipefail

flavour=${1:-}
log() { echo "provision-python: $*" >&2; }
die() { log "$*"; exit 1; }

if [[ -z $flavour ]]; then
  if [[ -n ${HELI_PYTHON:-} ]]; then echo "$HELI_PYTHON"; exit 0; fi
  flavour=3.14
fi
[[ $flavour =~ ^3\.(14|15)(-dbg|-shared)?$ ]] ||
  die "unknown flavour '$flavour': use 3.14 or 3.15, optionally with -dbg or -shared"
minor=${flavour%%-*}  # 3.14
build=${flavour#"$minor"}; build=${build#-}  # "", dbg or shared
hex_minor=${minor#3.}

# An installed interpreter of the right flavour serves as it is.
case $build in
  "") on_path=python$minor ;;
  dbg) on_path=python${minor}d ;;
  shared) on_path= ;;  # a system python3.X is rarely the shared-library build: always ours
esac
if [[ -n $on_path ]] && command -v "$on_path" >/dev/null 2>&1; then command -v "$on_path"; exit 0; fi

cache=${HELI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/helicopter-parent}
# The standard flavour keeps the prefix name it always had, so existing caches stay valid.
prefix=$cache/python$minor${build:+-$build}
case $build in
  "") py=$prefix/usr/bin/python$minor ;;
  dbg) py=$prefix/usr/bin/python${minor}d ;;
  # The name must contain "python": CPython's remote-exec finds the runtime by file name.
  shared) py=$prefix/usr/bin/python$minor-shared ;;
esac
stamp=$prefix/.provisioned
if [[ -x $py && -f $stamp ]]; then echo "$py"; exit 0; fi

mkdir -p "$cache"
# Several provisionings may run at once (parallel tests, two checkouts sharing the cache):
# one at a time, and whoever waited finds the work done.
exec 9>"$cache/.provision.lock"
flock 9
if [[ -x $py && -f $stamp ]]; then echo "$py"; exit 0; fi

need() {
  command -v "$1" >/dev/null 2>&1 && return
  log "installing $2"
  apt-get install -y -qq "$2" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$2" >&2; }
}
need patchelf patchelf
need dpkg-deb dpkg
[[ $build != shared ]] || need cc gcc

sources=/etc/apt/sources.list.d/debian.sources
uri=$(awk '/^URIs:/ {print $2; exit}' "$sources" 2>/dev/null || true)
[[ -n $uri ]] || die "cannot read the Debian mirror from $sources"

apt_dir=$cache/apt
debs=$apt_dir/debs-$flavour
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$debs"
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

pkgs=(python$minor python$minor-minimal libpython$minor-minimal libpython$minor-stdlib libc6
  libssl3t64 libexpat1 zlib1g libffi8 libbz2-1.0 liblzma5 libncursesw6 libreadline8t64
  libsqlite3-0 libtinfo6 libuuid1 libzstd1 libdb5.3t64 libmpdec4)
case $build in
  dbg) pkgs+=(python$minor-dbg libpython$minor-dbg) ;;
  shared) pkgs+=(libpython$minor) ;;
esac
log "downloading ${#pkgs[@]} packages for $flavour"
(cd "$debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2)

tmp=$prefix.tmp
rm -rf "$tmp" && mkdir -p "$tmp"
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
libdir=$prefix/usr/lib/x86_64-linux-gnu
loader=$prefix/usr/lib64/ld-linux-x86-64.so.2
# The loader and rpath are final paths: patched or linked for where the prefix will live.
case $build in
  "" | dbg)
    [[ -x $tmp${py#"$prefix"} ]] || die "$flavour: the packages hold no ${py#"$prefix"}"
    patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libdir" "$tmp${py#"$prefix"}"
    ;;
  shared)
    # --allow-shlib-undefined: libpython's own symbols come from sid's newer glibc, which
    # bookworm's linker cannot see. --disable-new-dtags (DT_RPATH): libpython's own
    # dependencies must also find the private glibc; DT_RUNPATH would serve only ours.
    printf '%s\n' 'extern int Py_BytesMain(int, char **);' \
      'int main(int argc, char **argv) { return Py_BytesMain(argc, argv); }' >"$tmp/launcher.c"
    cc -O2 -o "$tmp${py#"$prefix"}" "$tmp/launcher.c" "$tmp/usr/lib/x86_64-linux-gnu/libpython$minor.so.1.0" \
      -Wl,--allow-shlib-undefined -Wl,--disable-new-dtags -Wl,-rpath,"$libdir" \
      -Wl,--dynamic-linker="$loader"
    rm "$tmp/launcher.c"
    ;;
esac
rm -rf "$prefix" && mv "$tmp" "$prefix"
log "precompiling the standard library"
"$py" -m compileall -q -j0 "$prefix/usr/lib/python$minor" >/dev/null 2>&1 || true
"$py" -c "
import sys, pdb, ctypes, _remote_debugging
assert sys.version_info[:2] == (3, $hex_minor), sys.version
assert hasattr(sys, 'remote_exec')
assert ('$build' == 'dbg') == hasattr(sys, 'gettotalrefcount'), 'debug build mismatch'
" >&2
"$py" --version >"$stamp"
log "ready: $flavour at $py ($("$py" --version))"
echo "$py"
