//! Thin adapters between the OS and [`crate::core`]: each turns OS events into core inputs
//! or carries out core effects. Decisions live in the core, not here.
pub mod inject;
