#!/bin/busybox sh
# PID 1 of the Yama test VM (packed into the initramfs by assets.sh).
#
# Why a VM at all: the checks need a real kernel with Yama at a chosen ptrace_scope and an
# unprivileged user; development and CI machines have neither. There is no disk image: the
# host's root file system is shared read-only over 9p and the job runs chrooted into it, so
# every host binary (the project's build, the provisioned python3.14) keeps its host path.
# The job (/run/work/job.sh, written by test-yama.sh into a read-write 9p share) runs as
# root here and drops to uid 1000 for every process under test.

/bin/busybox --install -s /bin
export PATH=/bin

say() { echo "rig-init: $*"; }
# Whatever goes wrong, power off: the host notices the missing exit status and fails.
die() { say "FATAL: $*"; sync; poweroff -f; sleep 5; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# virtio + 9p are modules in Debian's kernel; the order in /modules/order respects their
# dependencies (insmod does not resolve them).
for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" || die "insmod $m failed"
done

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose hostroot /host \
  || die "cannot mount the host root (9p tag hostroot)"

# Fresh kernel file systems inside the chroot; the 9p share shows the host's own /proc etc.
mount -t proc proc /host/proc || die "mount proc"
mount -t sysfs sysfs /host/sys || die "mount sysfs"
mount -t securityfs securityfs /host/sys/kernel/security 2>/dev/null || true
mount -t devtmpfs devtmpfs /host/dev || die "mount devtmpfs"
mount -t devpts devpts /host/dev/pts 2>/dev/null || true
mkdir -p /host/dev/shm && mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm || die "mount /dev/shm (multiprocessing's semaphores live there)"
# The host root is read-only: everything the job writes goes to this tmpfs (pipe dirs,
# temp files) or to the work share (results).
mount -t tmpfs -o mode=755 tmpfs /host/run || die "mount tmpfs on /run"
mkdir -p /host/run/work /host/run/tmp
chmod 1777 /host/run/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none work /host/run/work \
  || die "cannot mount the work share (9p tag work)"

# pdb's remote attach talks over a localhost TCP socket.
ip link set lo up || die "cannot bring up lo"

scope=1
for arg in $(cat /proc/cmdline); do
  case $arg in rig.scope=*) scope=${arg#rig.scope=} ;; esac
done
[ -e /proc/sys/kernel/yama/ptrace_scope ] || die "this kernel has no Yama"
echo "$scope" > /proc/sys/kernel/yama/ptrace_scope || die "cannot set ptrace_scope=$scope"

say "kernel $(uname -r), ptrace_scope=$(cat /proc/sys/kernel/yama/ptrace_scope), starting the job"
chroot /host /bin/sh /run/work/job.sh
status=$?
echo "$status" > /host/run/work/exit-status
say "job exited with status $status"
sync
umount /host/run/work 2>/dev/null
poweroff -f
