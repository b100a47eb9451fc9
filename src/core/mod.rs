//! The I/O-free core: the pipe protocol, the controller's lifecycle state machine and its
//! journal. No files, processes, threads or clocks here (`clippy.toml` keeps the clocks
//! out); everything the core knows arrives as an [`machine::Input`].
//!
//! # Driver contract
//! 1. Build a [`machine::Controller`] (or a [`journal::Session`], which also keeps the
//!    transcript) from a [`machine::Config`].
//! 2. For every fact observed at the edge, journal it, then call `handle(now, input)`
//!    with `now` in milliseconds since the session started; carry out the returned
//!    [`machine::Effect`]s in order.
//! 3. Wait for the next fact or until [`machine::Controller::poll_timeout`]; if that
//!    moment comes first, feed [`machine::Input::DeadlineReached`].
//! 4. Stop after carrying out [`machine::Effect::Exit`].
//!
//! Peer misbehaviour (bad lines, dead client pids, a target that never runs the grant) is
//! answered with an `ERROR:` reply; it is never an `Err` of the core.
pub mod client;
pub mod journal;
pub mod machine;
pub mod ptrace_policy;
pub mod wire;

#[cfg(test)]
mod machine_tests;
