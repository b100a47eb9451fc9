//! Pure knowledge about a CPython process's memory layout: `/proc/PID/maps` lines, the ELF
//! `.PyRuntime` section arithmetic, the `_Py_DebugOffsets` field positions per version and
//! CPython's version-compatibility rules. No I/O: bytes in, facts out, so every rule is
//! unit-testable without a process. `crate::io::inject` does the reading and writing.
