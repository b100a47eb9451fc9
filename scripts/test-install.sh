#!/usr/bin/env bash
# The installed binaries, end to end, for both ways of installing (README, Install):
#   wheel [WHEEL]  a fresh virtual environment of the provisioned Python 3.14 with nothing
#                  but the wheel in it (default: the one `just wheel` built); the venv's
#                  own python runs the target, as a Python developer would start a program
#   cargo          `cargo install --locked --path .` into a fresh --root
# Then the seed's session (attach, p counter, q, twice, then terminate) with the INSTALLED
# heli-controller and heli-client, found on PATH as a user would find them; pdb comes from
# the target's interpreter. When ../shared/acceptance/seed-session is there, it runs
# against the installed binaries too.
#
# usage: scripts/test-install.sh wheel [WHEEL] | cargo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
log() { echo "test-install: $*" >&2; }

version=$(awk -F'"' '/^version *=/ {print $2; exit}' "$root/Cargo.toml")
mode=${1:-}
py=$("$root/scripts/provision-python.sh" 3.14)
work=$(mktemp -d "${TMPDIR:-/tmp}/heli-install.XXXXXX")
ctl=
cleanup() {
  # The controller stops its whole tree when it ends (see README, Stopping).
  if [[ -n $ctl ]] && kill -0 "$ctl" 2>/dev/null; then
    kill "$ctl" 2>/dev/null; sleep 1; kill -9 "$ctl" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

case $mode in
  wheel)
    wheel=${2:-}
    if [[ -z $wheel ]]; then
      shopt -s nullglob
      wheels=("$root"/target/wheels/helicopter_parent-"$version"-*.whl)
      (( ${#wheels[@]} == 1 )) || fail "expected one wheel for $version in target/wheels (run: just wheel), found ${#wheels[@]}"
      wheel=${wheels[0]}
    fi
    [[ -f $wheel ]] || fail "no wheel at $wheel"
    tools=$("$root/scripts/wheel-tools.sh")
    # Nothing but the wheel (--no-index: no dependency can come from PyPI).
    venv=$work/venv
    "$py" -m venv --without-pip "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 120 "$tools/bin/python" -m pip --python "$venv/bin/python" \
      install -q --no-index --no-deps "$wheel"
    log "installed $(basename "$wheel") into a fresh venv of $("$venv/bin/python" --version)"
    installed=$(PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 60 "$tools/bin/python" -m pip --python "$venv/bin/python" list --format=freeze)
    [[ $installed == "helicopter-parent==$version" ]] || fail "the venv holds more or other than the wheel: $installed"
    bindir=$venv/bin
    target_python=$venv/bin/python
    ;;
  cargo)
    # A path install builds in the checkout's target directory: after `just build` it only copies.
    timeout 900 cargo install --quiet --locked --path "$root" --root "$work/cargo-root"
    log "cargo install --path . into $work/cargo-root"
    bindir=$work/cargo-root/bin
    target_python=$py
    ;;
  *) fail "usage: $0 wheel [WHEEL] | cargo" ;;
esac

outer_path=$PATH
export PATH="$bindir:$PATH"
for bin in heli-controller heli-client heli-replay heli-conformance; do
  [[ $(command -v "$bin") == "$bindir/$bin" ]] || fail "$bin is not the installed one: $(command -v "$bin" || echo none)"
  got=$(timeout 10 "$bin" --version) || fail "$bin --version failed"
  [[ $got == "$bin $version" ]] || fail "$bin --version printed '$got'"
done
log "on PATH from $bindir: heli-controller heli-client heli-replay heli-conformance, each '--version' right"

# --- the seed session with the installed binaries ---
# A counter that grows fast, so two attaches see different values; it names its pid so
# the check can see the target gone after terminate.
cat >"$work/target.py" <<'PY'
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))

def work_loop():
    counter = 0
    while True:
        counter += 1
        time.sleep(0.02)

work_loop()
PY
pipes=$work/pipes
heli-controller --pipe-dir "$pipes" --python "$target_python" --no-journal \
  "$work/target.py" "$work/target.pid" >"$work/controller.log" 2>&1 &
ctl=$!
for _ in $(seq 200); do [[ -s $work/target.pid && -p $pipes/control ]] && break; sleep 0.05; done
[[ -s $work/target.pid && -p $pipes/control ]] || fail "no target or pipes after 10 s: $(tail -n 3 "$work/controller.log")"
tpid=$(cat "$work/target.pid")

out=$(printf 'attach\np counter\nq\nattach\np counter\nq\nterminate\n' |
  timeout 90 heli-client --pipe-dir "$pipes" 2>&1) || fail "heli-client failed ($?): $out"
mapfile -t counts < <(grep -oE '^\(Pdb\) [0-9]+$' <<<"$out" | awk '{print $2}')
(( ${#counts[@]} == 2 )) || fail "expected two counter values, got: $out"
(( counts[1] > counts[0] )) || fail "the counter did not grow: ${counts[*]}"
(( $(grep -c 'Debugger detached' <<<"$out") == 2 )) || fail "'Debugger detached' not printed twice: $out"

for _ in $(seq 100); do kill -0 "$ctl" 2>/dev/null || break; sleep 0.05; done
kill -0 "$ctl" 2>/dev/null && fail "the controller still runs 5 s after terminate"
wait "$ctl" && status=0 || status=$?
ctl=
(( status == 0 )) || fail "the controller exited $status after terminate: $(tail -n 3 "$work/controller.log")"
kill -0 "$tpid" 2>/dev/null && fail "the target ($tpid) still runs after terminate"
[[ -e $pipes/control ]] && fail "the pipes were left behind"
log "ok ($mode): installed seed session, counter ${counts[0]} -> ${counts[1]}, terminated cleanly"

# --- the shared acceptance check, with the installed binaries ---
check=${HELI_ACCEPTANCE:-}
for candidate in "$root/../shared/acceptance/seed-session" "$root/../../shared/acceptance/seed-session"; do
  [[ -n $check ]] || { [[ -x $candidate ]] && check=$candidate; }
done
if [[ -n $check ]]; then
  log "acceptance ($check) with BIN=$bindir"
  # The check's own helpers run with the outer PATH; it finds the binaries through BIN.
  PATH=$outer_path PY="$py" BIN="$bindir" timeout 180 "$check"
else
  log "acceptance: no ../shared/acceptance/seed-session; skipped"
fi
