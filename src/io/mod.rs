//! Thin adapters between the OS and [`crate::core`]: each turns OS events into core inputs
#![allow(clippy::disallowed_methods)] // the edge reads clocks; the core does not
//! or carries out core effects. Decisions live in the core, not here.
pub mod inject;
