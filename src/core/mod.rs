//! The I/O-free core (filled in by issue 2).
