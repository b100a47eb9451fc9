//! Pure knowledge about a CPython process's memory layout: `/proc/PID/maps` lines, the ELF
//! `.PyRuntime` section arithmetic, the `_Py_DebugOffsets` field positions per version and
//! CPython's version-compatibility rules. No I/O: bytes in, facts out, so every rule is
//! unit-testable without a process. `crate::io::inject` does the reading and writing.
pub mod elf_address;
pub mod linetable;
pub mod maps;
pub mod offsets;
pub mod stack_offsets;
pub mod unicode;
pub mod version;

pub use elf_address::{runtime_address, RuntimeSection, SectionAddressError};
pub use maps::{
    is_python_file, parse_maps, parse_maps_line, python_files, MapRegion, MappedFile, Perms,
};
pub use offsets::{
    cookie_hits, is_plausible_pointer, layout_for, parse_header, script_path_payload,
    supported_versions, DebugOffsets, Header, Layout, OffsetsError, PathProblem, COOKIE,
    HEADER_LEN, LAYOUTS,
};
pub use version::{PyVersion, VersionProblem};
