# Helicopter Parent tasks. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := env_var('HOME') + "/.cargo/bin:" + env_var('PATH')

# Print the path of Python 3.14, provisioning a private copy when missing
python:
    @scripts/provision-python.sh

# Build the release binaries
build:
    cargo build --release --bins

# Run the demo: the controller with the demo target (attach from another terminal)
demo: build
    @echo "In another terminal: target/release/heli-client   (then: attach, p counter, q, quit)"
    target/release/heli-controller --python "$(scripts/provision-python.sh)" tests/fixtures/demo_target.py

# All tests: unit, end-to-end (real Python 3.14, real pdb), protocol conformance in both
# dialects, and the seed acceptance check
test: build
    cargo test
    just conformance
    just acceptance

# The seed's example session, checked from outside (needs ../shared/acceptance)
acceptance: build
    #!/usr/bin/env bash
    set -euo pipefail
    check=../shared/acceptance/seed-session
    if [[ -x $check ]]; then
        PY="$(scripts/provision-python.sh)" BIN=target/release "$check"
    else
        echo "acceptance: $check not found; skipped"
    fi

# The pipe-protocol conformance suite against our controller, in both dialects (the cases
# are compiled into heli-conformance; `--cases DIR` would run others)
conformance: build
    #!/usr/bin/env bash
    set -euo pipefail
    python="$(scripts/provision-python.sh)"
    for dialect in seed legacy; do
        echo "== heli-conformance --dialect $dialect"
        target/release/heli-conformance \
            --controller "target/release/heli-controller --dialect $dialect --pipe-dir {pipe_dir} --python {python} {target}" \
            --python "$python" --dialect "$dialect"
    done

# Benchmarks (medians and ratios, side by side in one run)
bench:
    cargo build --release --bins
    cargo bench --bench inject
    cargo bench --bench attach

# The end-to-end suite under a real Yama kernel (qemu), as uid 1000 at ptrace_scope 0-3
test-yama: build
    scripts/yama-rig/test-yama.sh

# Record the fixture sessions in tests/fixtures/sessions again, from real controller runs
record-sessions:
    cargo test --test e2e record_sessions -- --ignored --exact sessions::record_sessions
    INSTA_UPDATE=always cargo test --test e2e recorded_sessions || true
    @echo "review: git diff tests/fixtures/sessions tests/e2e/snapshots"

# The bounded fuzz run CI calls: fixed seed, 5,000 core and 20,000 wire cases (< 60 s)
fuzz-short:
    cargo test --test fuzz -- --nocapture

# Optimised but with debug assertions on: the core's driver-misuse checks are debug
# assertions. FUZZ_SEED=... repeats a run.
# The long fuzz run from a fresh seed: prints executions, rate and how deep cases went
fuzz SECONDS="600":
    CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
        FUZZ_SECONDS={{SECONDS}} cargo test --release --target-dir target/fuzz --test fuzz long -- --ignored --nocapture

# MODE=grant: GRANT_ACCESS exchanges alone (the controller's injection path, no pdb).
# Attach/detach cycles (real pdb) against one target: RSS, fds, threads, cycle p50/p99
soak CYCLES="1000" MODE="pdb": build
    scripts/soak.sh {{CYCLES}} {{MODE}}
