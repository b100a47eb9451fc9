# Helicopter Parent tasks. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := env_var('HOME') + "/.cargo/bin:" + env_var('PATH')

# The minor versions `just test` runs the end-to-end suite and the acceptance check against
pythons := "3.14 3.15"

# Print the path of a Python (3.14, 3.15, 3.15-dbg, 3.14-shared...), provisioning it when missing
python flavour="3.14":
    @scripts/provision-python.sh {{flavour}}

# Build the release binaries
build:
    cargo build --release --bins

# Run the demo: the controller with the demo target (attach from another terminal)
demo: build
    @echo "In another terminal: target/release/heli-client   (then: attach, p counter, q, quit)"
    target/release/heli-controller --python "$(scripts/provision-python.sh)" tests/fixtures/demo_target.py

# The end-to-end runs (real Python, real pdb) cover each minor version's release, debug and
# shared-libpython builds; the second minor runs only the e2e binary (unit tests are
# version-free).
# All tests: unit, end-to-end and acceptance against 3.14 and 3.15, conformance in both dialects, both ways of installing
test: build
    HELI_TEST_PYTHON=3.14 cargo test
    HELI_TEST_PYTHON=3.15 cargo test --test e2e
    just conformance
    just acceptance
    just test-wheel
    just test-cargo-install

# maturin lives in a private venv (scripts/wheel-tools.sh), installed from PyPI once.
# Build the wheel that carries the binaries (maturin, `bindings = "bin"`) into target/wheels
wheel:
    #!/usr/bin/env bash
    set -euo pipefail
    tools=$(scripts/wheel-tools.sh)
    rm -f target/wheels/helicopter_parent-*.whl
    "$tools/bin/maturin" build --release --locked --quiet -o target/wheels
    "$tools/bin/python" -m zipfile -l target/wheels/helicopter_parent-*.whl

# The acceptance check runs against the installed binaries too, when it is present.
# The wheel installed alone into a fresh Python 3.14 venv, then the seed session with its binaries
test-wheel: wheel
    scripts/test-install.sh wheel

# `cargo install --path .` into a fresh root, then the seed session with its binaries
test-cargo-install: build
    scripts/test-install.sh cargo

# Each binary generates its own, from its command-line definition (src/cli/extras.rs).
# Shell completions (bash, zsh, fish) for every binary into DIR
completions DIR="target/completions": build
    scripts/install-extras.sh completions {{DIR}}

# Man pages (section 1) for every binary into DIR
man DIR="target/man": build
    scripts/install-extras.sh man {{DIR}}

# Where shells and man look under PREFIX: share/bash-completion/completions,
# share/zsh/site-functions, share/fish/vendor_completions.d, share/man/man1. BIN: which
# binaries generate them (e.g. ~/.cargo/bin or a venv's bin for installed ones).
# Completions and man pages under PREFIX
install-extras PREFIX BIN="target/release": build
    scripts/install-extras.sh prefix {{PREFIX}} {{BIN}}

# The seed's example session, checked from outside (needs ../shared/acceptance)
acceptance: build
    #!/usr/bin/env bash
    set -euo pipefail
    # The checkout sits next to `shared` (or, as a worktree, one level deeper).
    check=${HELI_ACCEPTANCE:-../shared/acceptance/seed-session}
    [[ -x $check || -n ${HELI_ACCEPTANCE:-} ]] || check=../../shared/acceptance/seed-session
    if [[ ! -x $check ]]; then echo "acceptance: $check not found; skipped"; exit 0; fi
    for minor in {{pythons}}; do
        echo "== acceptance with Python $minor"
        PY="$(scripts/provision-python.sh "$minor")" BIN=target/release "$check"
    done

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

# Prints the table and writes target/bench/bench.{md,json}; SECTIONS (grant, attach, rest,
# requests) runs only those. `cargo bench --bench inject` has the injector's details.
# The one benchmark table: each row beside its reference, measured in the same run
bench *SECTIONS:
    cargo build --release --bins
    cargo bench --bench table -- {{SECTIONS}}

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
