//! All end-to-end tests in one binary: real FIFOs, real processes, real Python 3.14.
#![allow(clippy::disallowed_methods)]

mod attach;
mod cli_durations;
mod client_pty;
mod client_session;
mod client_trust;
mod conformance;
mod flood;
mod inject;
mod lifecycle;
mod pipe_dir_security;
mod protocol;
mod replies;
mod sessions;
mod support;
mod tree_stop;
mod wake;
