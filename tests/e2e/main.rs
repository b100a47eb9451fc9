//! All end-to-end tests in one binary: real FIFOs, real processes, real Python 3.14.
#![allow(clippy::disallowed_methods)]

mod attach;
mod client_pty;
mod client_session;
mod client_trust;
mod conformance;
mod inject;
mod lifecycle;
mod protocol;
mod sessions;
mod support;
