#!/usr/bin/env bash
# Prepares the Yama VM's assets in a cache directory and prints two lines: the kernel
# image and the initramfs. Usage: assets.sh CACHE_DIR
#
# Everything comes from Debian packages: qemu-system-x86 is installed (it is a program
# the host runs); the kernel and busybox-static are only downloaded and unpacked into the
# cache (no install, no postinst, nothing changes on the host). Each step is skipped when
# its result is already in the cache, so only the first run pays (~1 min).
set -euo pipefail

cache=${1:?usage: assets.sh CACHE_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "yama-rig: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
mkdir -p "$cache"

as_root_apt() {
  [[ $(id -u) == 0 ]] || die "need root to run apt-get $* (or install it yourself)"
  apt-get "$@" >&2
}

# --- qemu -----------------------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  log "installing qemu-system-x86"
  as_root_apt install -y -qq --no-install-recommends qemu-system-x86 \
    || { as_root_apt update -qq && as_root_apt install -y -qq --no-install-recommends qemu-system-x86; } \
    || die "cannot install qemu-system-x86"
fi

# Download and unpack one Debian package into DIR (once; DIR/.unpacked marks success).
fetch_pkg() {
  local pkg=$1 dir=$2
  [[ -f $dir/.unpacked ]] && return 0
  log "downloading $pkg"
  local tmp
  tmp=$(mktemp -d "$cache/dl.XXXXXX")
  # APT::Sandbox::User=root: the _apt user could not write into a root-only cache dir.
  if ! (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2); then
    # Stale package lists (e.g. a kernel update removed the old version): refresh once.
    [[ $(id -u) == 0 ]] && apt-get update -qq >&2
    (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download "$pkg" >&2) || die "cannot download $pkg"
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  dpkg-deb -x "$tmp"/*.deb "$dir.tmp"
  rm -rf "$tmp" "$dir" && mv "$dir.tmp" "$dir"
  touch "$dir/.unpacked"
}

# --- kernel: Debian's stock kernel has Yama built in -----------------------------------
resolve_kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kpkg=$(resolve_kernel)
if [[ -z $kpkg && $(id -u) == 0 ]]; then
  # A fresh CI image may have no package lists at all.
  log "no package lists: apt-get update"
  apt-get update -qq >&2 || true
  kpkg=$(resolve_kernel)
fi
if [[ -z $kpkg ]]; then
  # Offline or no lists: fall back to whatever kernel is already cached.
  kpkg=$(ls -1 "$cache/kernel" 2>/dev/null | sort -V | tail -n1 || true)
  [[ -n $kpkg ]] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
fi
kdir=$cache/kernel/$kpkg
fetch_pkg "$kpkg" "$kdir"
kver=${kpkg#linux-image-}
vmlinuz=$kdir/boot/vmlinuz-$kver
[[ -f $vmlinuz ]] || die "no $vmlinuz in $kpkg"
grep -qx 'CONFIG_SECURITY_YAMA=y' "$kdir/boot/config-$kver" || die "$kpkg is built without Yama"

# --- busybox, for the initramfs ---------------------------------------------------------
bbdir=$cache/busybox-static
fetch_pkg busybox-static "$bbdir"
busybox=$bbdir/bin/busybox
[[ -x $busybox ]] || die "no busybox in busybox-static"

# --- initramfs: busybox + /init + the virtio/9p modules --------------------------------
# Keyed on the kernel and the init script, so editing init.sh rebuilds it.
key=$(cat "$here/init.sh" <(echo "$kpkg") | sha256sum | cut -c1-16)
initrd=$cache/initrd-$key.cpio.gz
if [[ ! -f $initrd ]]; then
  log "building the initramfs"
  stage=$(mktemp -d "$cache/initrd.XXXXXX")
  mkdir -p "$stage"/{bin,dev,proc,sys,modules}
  cp "$busybox" "$stage/bin/busybox"
  install -m 0755 "$here/init.sh" "$stage/init"
  moddir=$kdir/lib/modules/$kver
  for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p; do
    # Built into this kernel: nothing to load.
    grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null && continue
    src=$(find "$moddir/kernel" -name "$m.ko*" | head -n1)
    [[ -n $src ]] || die "module $m not found in $kpkg"
    case $src in
      *.xz) xz -dc "$src" >"$stage/modules/$m.ko" ;;
      *.zst) zstd -qdc "$src" >"$stage/modules/$m.ko" ;;
      *.gz) gzip -dc "$src" >"$stage/modules/$m.ko" ;;
      *) cp "$src" "$stage/modules/$m.ko" ;;
    esac
    echo "$m" >>"$stage/modules/order"
  done
  # busybox's own cpio writes the newc format the kernel wants (no cpio package needed).
  (cd "$stage" && find . -mindepth 1 | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9 >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"
  # Old initramfs builds are dead weight.
  find "$cache" -maxdepth 1 -name 'initrd-*.cpio.gz' ! -name "${initrd##*/}" -delete
fi

echo "$vmlinuz"
echo "$initrd"
