//! Thin adapters between the OS and [`crate::core`]: each turns OS events into core inputs
//! or carries out core effects. Decisions live in the core, not here.

pub mod client;
pub mod client_watch;
pub mod controller;
pub mod controllers;
pub mod exchange;
pub mod find_python;
pub mod grant;
pub mod inject;
pub mod journal_writer;
pub mod keeper;
pub mod pipes;
pub mod procfs;
pub mod socket_exchange;
pub mod socket_server;
pub mod stack_reader;
pub mod startup_waker;
pub mod tree;
pub mod tree_waker;
pub mod wake;
