#!/usr/bin/env bash
# Soak: CYCLES attach/detach cycles (default 1000) against one supervised target, each a
# real `heli-client` session (`attach`, `p counter`, `q`, `quit`) that runs a real
# `python3.14 -m pdb -p`. Prints the controller's and the target's RSS, open fds and
# threads before the first cycle, after the first (the warm baseline: the first grant
# loads what every later one reuses), every 100 cycles and at the end, then the cycle
# time p50/p99/max. Fails if a cycle fails or if fds or threads grew after the warm-up.
#
# With MODE `grant`, a cycle is one GRANT_ACCESS exchange on the pipes and no pdb: the
# controller's injection path alone, to tell its growth from pdb's.
#
# usage: scripts/soak.sh [CYCLES] [pdb|grant]   (needs target/release from `just build`)
set -euo pipefail

cycles=${1:-1000}
mode=${2:-pdb}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
python=$("$root/scripts/provision-python.sh")
work=$(mktemp -d /tmp/heli-soak.XXXXXX)
ctl=""
target=""
watchdog=""
drain=""

cleanup() {
    # Whatever happened, nothing started here outlives the script.
    [[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null || true
    [[ -n $ctl ]] && kill -KILL "$ctl" 2>/dev/null || true
    [[ -n $target ]] && kill -KILL "$target" 2>/dev/null || true
    [[ -n $drain ]] && kill "$drain" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The controller's stderr comes through a FIFO so that readiness is an event (its
# "listening on" line), not a guess.
mkfifo "$work/stderr"
"$bin/heli-controller" --pipe-dir "$work/pipes" --python "$python" \
    --journal "$work/journal.jsonl" "$root/tests/fixtures/counter.py" \
    >"$work/target.out" 2>"$work/stderr" &
ctl=$!
# A deadline for the whole soak: 3 s a cycle is ten times the usual cycle.
budget=$((cycles * 3 + 60))
(sleep "$budget" && echo "soak: over its $budget s budget, killing the controller" >&2 \
    && kill -KILL "$ctl") &
watchdog=$!

exec 3<"$work/stderr"
while :; do
    IFS= read -r -t 30 -u 3 line || { echo "soak: controller did not start" >&2; exit 1; }
    echo "$line" >>"$work/controller.log"
    if [[ $line == *" started: "* ]]; then
        target=$(awk '{print $3}' <<<"$line")
    fi
    [[ $line == *"listening on"* ]] && break
done
# Keep reading its log so that it never blocks on a full pipe.
cat <&3 >>"$work/controller.log" &
drain=$!

sample() { # label pid -> "rss_kB fds threads"
    local pid=$2
    local rss threads fds
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$rss $fds $threads"
}

row() { # label
    local c t
    read -r -a c <<<"$(sample ctl "$ctl")"
    read -r -a t <<<"$(sample target "$target")"
    printf '%-10s %12s %8s %8s %12s %8s %8s %12s\n' "$1" "${c[0]}" "${c[1]}" "${c[2]}" \
        "${t[0]}" "${t[1]}" "${t[2]}" "$(stat -c %s "$work/journal.jsonl")"
    last_row=("${c[@]}" "${t[@]}")
}

if [[ $mode == grant ]]; then
    # Held open read-write for the whole run: the reply never meets a pipe without a
    # reader, and no open blocks.
    exec 4<>"$work/pipes/response"
fi

cycle() { # -> output of one cycle; fails if the cycle failed
    if [[ $mode == grant ]]; then
        # Our own shell is the client: a live process of our uid.
        printf 'GRANT_ACCESS %d\n' $$ >"$work/pipes/control"
        local reply
        IFS= read -r -t 10 -u 4 reply || return 1
        [[ $reply == READY ]] && echo "Permission granted, Debugger detached"
        echo "$reply"
    else
        # The client's own --timeout covers the exchange; `timeout` bounds pdb as well.
        printf 'attach\np counter\nq\nquit\n' |
            timeout -k 5 30 "$bin/heli-client" --pipe-dir "$work/pipes" --timeout 10 2>&1
    fi
}

echo "soak ($mode): $cycles attach/detach cycles, controller $ctl, target $target ($python)"
printf '%-10s %12s %8s %8s %12s %8s %8s %12s\n' cycle "ctl RSS kB" "ctl fds" "ctl thr" \
    "tgt RSS kB" "tgt fds" "tgt thr" "journal B"
row start

# A cycle's last descriptors (the watcher of the client that just exited, the revocation
# still running in the target) close a moment after the client returns, so one sample can
# catch a transient one. A leak stays: the settled count is the lowest of a few samples
# taken over half a second, for the baseline after the first cycle and for the end.
settled() { # pid index -> the lowest value of field `index` over 10 samples
    local lowest=999999 v
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        v=$(sample settled "$1" | awk -v k="$2" '{print $k}')
        ((v < lowest)) && lowest=$v
        sleep 0.05
    done
    echo "$lowest"
}
times=()
started=$EPOCHREALTIME
for ((i = 1; i <= cycles; i++)); do
    t0=$EPOCHREALTIME
    if ! out=$(cycle); then
        echo "soak: cycle $i failed:" >&2
        echo "$out" >&2
        exit 1
    fi
    t1=$EPOCHREALTIME
    if [[ $out != *"Debugger detached"* || $out != *"Permission granted"* ]]; then
        echo "soak: cycle $i did not attach and detach:" >&2
        echo "$out" >&2
        exit 1
    fi
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) * 1000}')")
    if ((i == 1)); then
        row "1 (warm)"
        warm=("${last_row[@]}")
        warm[1]=$(settled "$ctl" 2)
        warm[2]=$(settled "$ctl" 3)
        warm[4]=$(settled "$target" 2)
        warm[5]=$(settled "$target" 3)
    elif ((i % 100 == 0 || i == cycles)); then
        row "$i"
    fi
done
total=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')

printf '%s\n' "${times[@]}" | sort -n | awk -v total="$total" '
    { t[NR] = $1 }
    END {
        p50 = t[int((NR - 1) * 0.50) + 1]; p99 = t[int((NR - 1) * 0.99) + 1]
        printf "cycle time over %d cycles: p50 %.1f ms, p99 %.1f ms, max %.1f ms; total %s s\n",
            NR, p50, p99, t[NR], total
    }'

end=("${last_row[@]}")
end[1]=$(settled "$ctl" 2)
end[2]=$(settled "$ctl" 3)
end[4]=$(settled "$target" 2)
end[5]=$(settled "$target" 3)
printf 'growth after warm-up: controller RSS %+d kB, fds %+d, threads %+d; target RSS %+d kB, fds %+d, threads %+d\n' \
    $((end[0] - warm[0])) $((end[1] - warm[1])) $((end[2] - warm[2])) \
    $((end[3] - warm[3])) $((end[4] - warm[4])) $((end[5] - warm[5]))

# Stop through the protocol, as a user would, and check that everything ended.
printf 'terminate\n' | timeout -k 5 15 "$bin/heli-client" --pipe-dir "$work/pipes" >/dev/null 2>&1
wait "$ctl" && code=0 || code=$?
ctl=""
kill -0 "$target" 2>/dev/null && { echo "soak: target still running after terminate" >&2; exit 1; }
target=""
echo "controller exit $code; grants logged: $(grep -cE 'granted ptrace access|may attach' "$work/controller.log")"

fail=0
for k in 1 2 4 5; do
    ((end[k] > warm[k])) && fail=1
done
if ((fail)); then
    echo "soak: FAILED: fds or threads grew after the warm-up" >&2
    exit 1
fi
echo "soak: ok"
