//! Fuzzing without a fuzzing engine: `cargo-fuzz` needs a nightly toolchain and none can
//! be installed here, so a seeded generator feeds the byte-driven targets in
//! [`wire`] and [`core`] (which a coverage-guided engine could feed unchanged).
//!
//! - `cargo test --test fuzz` (and `just fuzz-short`): a fixed seed, a bounded number of
//!   cases, a few seconds; part of `cargo test`.
//! - `just fuzz [SECONDS]`: the long run, optimised with debug assertions kept on (the
//!   core's driver-misuse checks are debug assertions), from a fresh seed; it prints the
//!   seed, executions, rate and how deep the cases went.
//! - A failure prints `FUZZ_SEED=… FUZZ_CASE=…` and the case's bytes in hex; run
//!   `FUZZ_SEED=… FUZZ_CASE=… cargo test --test fuzz replay -- --ignored --nocapture` (or
//!   `FUZZ_HEX=…`) to see it alone with its transcript.
// The clock ban is for the core; the long run's budget and its seed come from the clock.
#![allow(clippy::disallowed_methods)]
mod bytes;
mod core;
mod findings;
mod wire;

use bytes::{hex, unhex, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

const CORE_MAX_LEN: usize = 1024;
const WIRE_MAX_LEN: usize = 256;
/// The fixed seed of the short run: CI sees the same cases every time.
const SHORT_SEED: u64 = 0x4845_4c49_2d39;

#[derive(Clone, Copy, Debug)]
enum Target {
    Core,
    Wire,
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    Some(match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect(name),
        None => text.parse().expect(name),
    })
}

/// Runs one case; on a failure or a panic, says how to replay it, then fails the test.
fn one(target: Target, seed: u64, index: u64, stats: &mut core::Stats) {
    let max = match target {
        Target::Core => CORE_MAX_LEN,
        Target::Wire => WIRE_MAX_LEN,
    };
    let data = Rng::case(seed, index, max);
    let outcome = catch_unwind(AssertUnwindSafe(|| match target {
        Target::Core => core::run(&data).map(|s| stats.add(&s)),
        Target::Wire => wire::run(&data),
    }));
    let repro = || {
        format!(
            "{target:?} case failed: replay with FUZZ_TARGET={target:?} FUZZ_SEED={seed:#x} FUZZ_CASE={index} \
             cargo test --test fuzz replay -- --ignored --nocapture\nFUZZ_HEX={}",
            hex(&data)
        )
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{}\n{why}", repro()),
        Err(panic) => {
            eprintln!("{}", repro());
            std::panic::resume_unwind(panic)
        }
    }
}

#[test]
fn wire_short() {
    let mut stats = core::Stats::default();
    for index in 0..20_000 {
        one(Target::Wire, SHORT_SEED, index, &mut stats);
    }
}

#[test]
fn core_short() {
    let cases = env_u64("FUZZ_SHORT_CASES").unwrap_or(5_000);
    let mut stats = core::Stats::default();
    for index in 0..cases {
        one(Target::Core, SHORT_SEED, index, &mut stats);
    }
    // The cases must reach the interesting states, or a pass means little.
    assert!(stats.attached_entries > cases / 2, "{stats:?}");
    assert!(stats.readies_for_grants > cases / 2, "{stats:?}");
    // Delivery steps: most grants get one or two before their report (or the failure
    // that ends them) comes; more means the policy's surveys and moves ran too.
    assert!(stats.delivers > 3 * cases / 2, "{stats:?}");
    assert!(stats.socket_readies > cases / 20, "{stats:?}");
    // Grants end every way they can: given back, on the holder's exit, at expiry.
    assert!(stats.revocations_done > cases / 4, "{stats:?}");
    assert!(stats.revocations_failed > cases / 20, "{stats:?}");
    assert!(stats.revoke_readies > cases / 10, "{stats:?}");
    assert!(stats.holder_exits > cases / 10, "{stats:?}");
    assert!(stats.expiries > cases / 10, "{stats:?}");
    eprintln!("core_short: {stats:?}");
}

/// The long run: `FUZZ_SECONDS` (default 60) from `FUZZ_SEED` (default: the clock).
#[test]
#[ignore = "long; run by `just fuzz`"]
fn long() {
    let seconds = env_u64("FUZZ_SECONDS").unwrap_or(60);
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("fuzz: seed {seed:#x}, {seconds} s, wire and core cases alternating 1:4");
    let budget = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut stats = core::Stats::default();
    let (mut index, mut wire_cases) = (0u64, 0u64);
    let mut next_report = Duration::from_secs(30);
    while started.elapsed() < budget {
        // Checking the clock every case would cost more than a wire case.
        for _ in 0..100 {
            if index % 5 == 0 {
                one(Target::Wire, seed, index, &mut stats);
                wire_cases += 1;
            } else {
                one(Target::Core, seed, index, &mut stats);
            }
            index += 1;
        }
        if started.elapsed() >= next_report {
            eprintln!("fuzz: {:>4} s, {index} executions", next_report.as_secs());
            next_report += Duration::from_secs(30);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: {index} executions ({} core, {wire_cases} wire) in {elapsed:.1} s = {:.0}/s; \
         core inputs fed {}, lines {}, replies {}, grants {}, delivery steps {}, \
         READY to grants {}, entries into attached {}, grant timeouts {}, \
         revocations {} (done {}, failed {}; by REVOKE_ACCESS {}, exit {}, expiry {}), \
         socket lines {} (READY to socket grants {}), \
         REVOKE_ACCESS refused {}, exits ignored {}, terminal signals {}; \
         later revocation steps {}, revocations cut short {}",
        stats.cases,
        index as f64 / elapsed,
        stats.inputs,
        stats.lines,
        stats.replies,
        stats.grants,
        stats.delivers,
        stats.readies_for_grants,
        stats.attached_entries,
        stats.grant_timeouts,
        stats.revocations,
        stats.revocations_done,
        stats.revocations_failed,
        stats.revoke_readies,
        stats.holder_exits,
        stats.expiries,
        stats.socket_lines,
        stats.socket_readies,
        stats.revoke_errors,
        stats.ignored_exits,
        stats.kernel_signals,
        stats.later_revocation_steps,
        stats.revocations_cut_short
    );
}

/// One case alone: from `FUZZ_HEX`, or from `FUZZ_SEED` and `FUZZ_CASE`.
#[test]
#[ignore = "replays one case named by the environment"]
fn replay() {
    let target = match std::env::var("FUZZ_TARGET").as_deref() {
        Ok("Wire") => Target::Wire,
        _ => Target::Core,
    };
    let data = match std::env::var("FUZZ_HEX") {
        Ok(text) => unhex(&text),
        Err(_) => Rng::case(
            env_u64("FUZZ_SEED").expect("FUZZ_SEED or FUZZ_HEX"),
            env_u64("FUZZ_CASE").expect("FUZZ_CASE"),
            match target {
                Target::Core => CORE_MAX_LEN,
                Target::Wire => WIRE_MAX_LEN,
            },
        ),
    };
    let outcome = match target {
        Target::Core => core::run(&data).map(|stats| eprintln!("passed: {stats:?}")),
        Target::Wire => wire::run(&data),
    };
    if let Err(why) = outcome {
        panic!("{why}");
    }
}
