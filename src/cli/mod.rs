//! Helpers the binaries share for their command lines. Pure text handling, no I/O.
pub mod duration;
pub mod exit;
