//! All end-to-end tests in one binary: real FIFOs, real processes, real Python (the minor
//! version under test: see `support`).
#![allow(clippy::disallowed_methods)]

mod attach;
mod builds;
mod conformance;
mod inject;
mod lifecycle;
mod protocol;
mod sessions;
mod support;
