#!/usr/bin/env bash
# Runs Helicopter Parent's Yama checks in a VM: a real kernel with Yama, ptrace_scope
# 1, 0, 2 and 3 in turn, every process under test as the unprivileged uid 1000.
# Entry point of `just test-yama` and of CI. Prints one line per check, then
# "N passed, N failed"; exits non-zero if any check failed or the VM did not finish.
#
# Why a VM: the behaviour that matters (a client may attach only after the target
# declared it with PR_SET_PTRACER) exists only under Yama as a non-root user; development
# and CI machines run as root without Yama. See scripts/yama-rig/README.md.
#
# Environment:
#   HELI_BIN                 directory with heli-controller and heli-client
#                            (default <repo>/target/release; build first)
#   HELI_RIG_BREAK_GRANT=1   the controller runs with HELI_DISABLE_GRANT=1 (answers READY
#                            without injecting): the rig must then report failures
#   HELI_RIG_ONLY=rules      only the kernel-rule checks (no project binaries needed)
#   HELI_RIG_SCOPES          scopes to test, default "1 0 2 3" (3 always runs last)
#   HELI_RIG_TIMEOUT         seconds before a hung VM is killed (default 480)
#   HELI_RIG_CACHE           VM assets and run logs
#                            (default ${XDG_CACHE_HOME:-$HOME/.cache}/helicopter-parent/yama-rig)
#   HELI_RIG_SHARED_CACHE    python3.14 + byte code, must be readable by uid 1000
#                            (default /var/cache/helicopter-parent)
#   HELI_RIG_MORE_PYTHONS    provision-python.sh flavours whose targets also get the scope-1
#                            seed session (default "3.15"; empty for none)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { echo "yama-rig: $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

cache=${HELI_RIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/helicopter-parent/yama-rig}
shared=${HELI_RIG_SHARED_CACHE:-/var/cache/helicopter-parent}
bin=${HELI_BIN:-$repo/target/release}
only=${HELI_RIG_ONLY:-all}
break_grant=${HELI_RIG_BREAK_GRANT:-0}
vm_timeout=${HELI_RIG_TIMEOUT:-480}
fixture=$repo/tests/fixtures/counter.py

[[ $only == all || $only == rules ]] || die "HELI_RIG_ONLY must be 'rules' or unset"
# Scope 3 cannot be lowered until reboot: whatever the order asked for, it goes last.
read -r -a scopes <<<"${HELI_RIG_SCOPES:-1 0 2 3}"
scopes_json=$(printf '%s\n' "${scopes[@]}" | awk '$1 ~ /^[0-3]$/ {print ($1 == 3 ? 1 : 0) " " $1}' \
  | sort -s -k1,1n | awk '{printf "%s%s", (NR > 1 ? "," : ""), $2}')
[[ -n $scopes_json ]] || die "HELI_RIG_SCOPES must list scopes 0-3"

if [[ $only == all ]]; then
  for b in heli-controller heli-client; do
    [[ -x $bin/$b ]] || die "$bin/$b is missing: run \`cargo build --release\` first (or set HELI_BIN)"
  done
  bin=$(cd "$bin" && pwd)
fi

# --- Python 3.14 where uid 1000 can reach it ------------------------------------------
# The default provisioning cache is under $HOME (/root is 0700 on CI), which uid 1000 in
# the guest cannot traverse: provision a copy into a world-readable cache instead.
mkdir -p "$shared" || die "cannot create $shared (set HELI_RIG_SHARED_CACHE to a directory uid 1000 can read)"
chmod a+rx "$shared" 2>/dev/null || true
py=$(HELI_CACHE=$shared "$repo/scripts/provision-python.sh") || die "cannot provision python3.14"
more_pythons=()
for flavour in ${HELI_RIG_MORE_PYTHONS-3.15}; do
  more_pythons+=("$(HELI_CACHE=$shared "$repo/scripts/provision-python.sh" "$flavour")") ||
    die "cannot provision Python $flavour"
done

# The guest's root is read-only, so Python could not cache byte code there: compile the
# stdlib once into a prefix tree, passed to the guest as PYTHONPYCACHEPREFIX. One tree
# serves every interpreter: each minor version has its own stdlib path and .pyc tag.
pycache=$shared/pycache
for p in "$py" "${more_pythons[@]}"; do
  stdlib=$("$p" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  stamp=$pycache/.compiled-$( (echo "$p"; "$p" --version) | sha256sum | cut -c1-16)
  if [[ ! -f $stamp ]]; then
    log "precompiling $stdlib into $pycache"
    mkdir -p "$pycache"
    PYTHONPYCACHEPREFIX=$pycache "$p" -m compileall -q -j0 "$stdlib" >/dev/null 2>&1 || true
    touch "$stamp"
  fi
done
stdlib=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

# --- Stage what the guest runs where uid 1000 can read it -------------------------------
# CI may clone anywhere (e.g. under a 0700 home): the guest gets copies of the rig, the
# fixture and the binaries in the shared cache, so the checkout's permissions never
# matter. One directory per run, removed on exit.
stage=$(mktemp -d "$shared/stage-XXXXXX")
trap 'rm -rf "$stage"' EXIT
# Same layout as the repository: probe.py finds the fixture relative to itself.
mkdir -p "$stage/scripts/yama-rig" "$stage/tests/fixtures" "$stage/bin"
cp "$here"/*.py "$stage/scripts/yama-rig/"
cp "$fixture" "$stage/tests/fixtures/"
# The targets of guest_checks.py's waiting and tree phases, beside the main fixture.
for extra in sleep_until_usr1.py wait_asyncio_server.py spawned_child.py; do
  cp "$(dirname "$fixture")/$extra" "$stage/tests/fixtures/"
done
fixture=$stage/tests/fixtures/${fixture##*/}
if [[ $only == all ]]; then
  cp "$bin/heli-controller" "$bin/heli-client" "$stage/bin/"
  bin=$stage/bin
fi
chmod -R a+rX "$stage"
rig=$stage/scripts/yama-rig

# --- Everything the guest's uid 1000 touches must be readable by it --------------------
# (CI clones the repository anywhere, e.g. under a 0700 home.) Checked here, as uid 1000,
# to fail early with the directory to fix; the guest checks again.
blocker() { # first component of $1 that uid 1000 cannot traverse/read
  local p=$1 cur=""
  IFS=/ read -r -a parts <<<"${p#/}"
  for part in "${parts[@]}"; do
    cur=$cur/$part
    setpriv --reuid=1000 --regid=1000 --clear-groups -- test -r "$cur" -a \( ! -d "$cur" -o -x "$cur" \) \
      || { echo "$cur"; return; }
  done
}
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
  need=("$py" "$stdlib/pdb.py" "$pycache" "$rig/probe.py" "$rig/guest_checks.py" "$fixture"
    "${more_pythons[@]}")
  [[ $only == all ]] && need+=("$bin/heli-controller" "$bin/heli-client")
  for f in "${need[@]}"; do
    b=$(blocker "$f")
    [[ -z $b ]] || die "uid 1000 cannot reach $f (blocked at $b, mode $(stat -c %A "$b")); \
make the path world-readable, or clone/build elsewhere"
  done
else
  log "not root: skipping the host-side readability check (the guest checks it)"
fi

# --- VM assets (cached) ----------------------------------------------------------------
mapfile -t assets < <("$here/assets.sh" "$cache")
[[ ${#assets[@]} == 2 ]] || die "assets.sh failed"
vmlinuz=${assets[0]} initrd=${assets[1]}

# --- One run directory: shared read-write with the guest, kept for diagnosis -----------
runs=$cache/runs
mkdir -p "$runs"
run=$(mktemp -d "$runs/$(date +%Y%m%d-%H%M%S)-XXXX")
chmod 755 "$run"
ln -sfn "$run" "$runs/latest"
# Keep the 10 newest runs.
ls -1dt "$runs"/2* 2>/dev/null | tail -n +11 | xargs -r rm -rf

cfg_bin=$([[ $only == all ]] && echo "$bin" || true)
"$py" - "$run/config.json" "$py" "$cfg_bin" "$rig" "$fixture" "$pycache" "$only" "$break_grant" "$scopes_json" \
  "${more_pythons[@]}" <<'PY'
import json, sys
out, py, bin_, rig, fixture, pycache, only, brk, scopes, *more = sys.argv[1:]
json.dump({"python": py, "bin": bin_ or None, "rig": rig, "fixture": fixture,
           "pycache_prefix": pycache, "only": only, "break_grant": brk == "1",
           "scopes": [int(s) for s in scopes.split(",")], "more_pythons": more},
          open(out, "w"), indent=1)
PY
# Run in the guest's chroot by /init, as root, with a clean environment.
cat >"$run/job.sh" <<JOB
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
  HOME=/run/tmp TMPDIR=/run/tmp LANG=C.UTF-8 PYTHONPYCACHEPREFIX='$pycache' PYTHONDONTWRITEBYTECODE=1 \\
  '$py' '$rig/guest_checks.py' /run/work
JOB

# --- Boot ------------------------------------------------------------------------------
# /dev/kvm may exist on a CPU without vmx/svm, and a KVM guest then hangs at boot.
if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]]; then
  accel=(-accel kvm -cpu host) mode=kvm
else
  accel=(-accel tcg,thread=multi -cpu max) mode=tcg
fi
console=$run/console.log
log "booting ${vmlinuz##*/} ($mode, scopes ${scopes_json//,/ }$([[ $break_grant == 1 ]] && echo ', GRANT BROKEN ON PURPOSE')); console log: $console"
start=$SECONDS
set +e
timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 -machine q35 "${accel[@]}" -smp 2 -m 1024 \
  -nodefaults -display none -serial stdio -no-reboot \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rig.scope=${scopes_json%%,*}" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
  -fsdev "local,id=work,path=$run,security_model=passthrough,multidevs=remap" \
  -device virtio-9p-pci,fsdev=work,mount_tag=work \
  </dev/null >"$console" 2>&1
qemu_status=$?
set -e
log "VM finished after $((SECONDS - start)) s (qemu status $qemu_status)"

# --- Summary ---------------------------------------------------------------------------
passed=0 failed=0
if [[ -f $run/results ]]; then
  while IFS= read -r line; do
    case $line in
      PASS\ *) passed=$((passed + 1)); echo "$line" ;;
      FAIL\ *) failed=$((failed + 1)); echo "$line" ;;
    esac
  done <"$run/results"
fi
if ! grep -qx DONE "$run/results" 2>/dev/null; then
  failed=$((failed + 1))
  if [[ $qemu_status == 124 || $qemu_status == 137 ]]; then
    echo "FAIL vm: killed after ${vm_timeout}s, the guest job did not finish"
  else
    echo "FAIL vm: the guest job did not finish (qemu status $qemu_status, job status $(cat "$run/exit-status" 2>/dev/null || echo none))"
  fi
fi
log "console log: $console (per-check logs: $run/logs)"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
