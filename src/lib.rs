//! Helicopter Parent: attach the real pdb to a supervised Python 3.14+ program, as an
//! ordinary user, under Yama `ptrace_scope=1`.
//!
//! - [`crate::core`]: the I/O-free protocol, lifecycle state machine and journal.
//! - [`crate::pyruntime`]: pure knowledge of CPython's debug offsets and process layout.
//! - [`crate::io`]: the thin adapters: FIFOs, processes, signals, memory injection.
//! - [`crate::cli`]: command-line helpers the binaries share.
//!
//! The `heli-conformance` test harness is not part of this library: it lives with its
//! binary in `src/bin/heli-conformance/` and uses only this library's public API.
// clippy.toml bans clocks and sleeps; the ban is for the core alone (its time arrives as a
// number from the driver), while the edge must read clocks.
#![allow(clippy::disallowed_methods)]

pub mod cli;
#[deny(clippy::disallowed_methods)]
pub mod core;
pub mod io;
pub mod pyruntime;
