//! Helicopter Parent: attach the real pdb to a supervised Python 3.14 program, as an
//! ordinary user, under Yama `ptrace_scope=1`.
//!
//! - [`crate::core`]: the I/O-free protocol, lifecycle state machine and journal.
//! - [`crate::pyruntime`]: pure knowledge of CPython's debug offsets and process layout.
//! - [`crate::io`]: the thin adapters: FIFOs, processes, signals, memory injection.
//! - [`crate::conformance`]: the pure half of the `heli-conformance` suite (case model,
//!   reply patterns, dialect mapping); its runner is [`crate::io::conformance`].
pub mod conformance;
pub mod core;
pub mod io;
pub mod pyruntime;
