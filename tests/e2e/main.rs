//! All end-to-end tests in one binary: real FIFOs, real processes, real Python 3.14.
mod inject;
mod support;
