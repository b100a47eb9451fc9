//! The I/O-free core: every decision of the project. No files, processes, threads or
//! clocks here (`clippy.toml` keeps the clocks out); everything the core knows arrives as
//! an input, and everything it wants done leaves as an effect.
//!
//! - [`supervisor`]: the controller's lifecycle (its state diagram is above its `State`).
//! - [`delivery`]: getting an injected script picked up by the target, the one policy.
//! - [`ptrace_policy`]: who may attach to whom under Yama, and whether a grant helps.
//! - [`wire`]: the pipe protocol's parsing and formatting.
//! - [`client`]: the client's REPL (its own driver contract and state diagram), and in
//!   [`client::trust`] what the client trusts before it sends or runs anything.
//! - [`tree`]: the supervised tree: who belongs to it, and the replies about it.
//! - [`journal`]: the journal's records and its replay (the same fold, effects rendered).
//!
//! # Driver contract
//! 1. Build a [`supervisor::Supervisor`] (or a [`journal::Transcribed`], which also keeps
//!    the transcript, for replay and tests) from a [`supervisor::Config`].
//! 2. For every fact observed at the edge, journal it, then call `handle(now, input)`
//!    with `now` in milliseconds since the session started; carry out the returned
//!    [`supervisor::Effect`]s in order. An effect that asks a question (inspect a pid,
//!    carry out a delivery action) is answered by the next input.
//! 3. Wait for the next fact or until [`supervisor::Supervisor::poll_timeout`]; if that
//!    moment comes first, feed [`supervisor::Input::DeadlineReached`].
//! 4. Stop after carrying out [`supervisor::Effect::Exit`].
//!
//! Peer misbehaviour (bad lines, dead client pids, a target that never runs the grant) is
//! answered with an `ERROR:` reply; it is never an `Err` of the core. Driver misuse (an
//! input that cannot come in the current state) is a bug: a debug assertion.
#![deny(clippy::wildcard_enum_match_arm)]
pub mod client;
pub mod delivery;
pub mod journal;
pub mod ptrace_policy;
pub mod signals;
pub mod stacks;
pub mod supervisor;
pub mod tree;
pub mod wire;

#[cfg(test)]
mod supervisor_tests;
