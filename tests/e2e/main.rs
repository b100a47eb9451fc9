//! All end-to-end tests in one binary: real FIFOs, real processes, real Python (the minor
//! version under test: see `support`).
#![allow(clippy::disallowed_methods)]

mod attach;
mod attach_wait;
mod builds;
mod cli_durations;
mod client_pty;
mod client_session;
mod client_trust;
mod conformance;
mod flood;
mod inject;
mod lifecycle;
mod odd_names;
mod pipe_dir_security;
mod protocol;
mod replies;
mod sessions;
mod socket;
mod stack_reader;
mod support;
mod tree;
mod tree_stop;
mod wake;
