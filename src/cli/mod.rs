//! Helpers the binaries share for their command lines. Pure text handling, no I/O (but
//! for [`extras::generate_if_asked`], which prints what a binary was asked to generate).
pub mod duration;
pub mod exit;
pub mod extras;
pub mod pipe_dir;
