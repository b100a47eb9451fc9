//! All end-to-end tests in one binary: real FIFOs, real processes, real Python 3.14.
#![allow(clippy::disallowed_methods)]

mod attach;
mod cli_durations;
mod conformance;
mod inject;
mod lifecycle;
mod protocol;
mod replies;
mod sessions;
mod socket;
mod support;
