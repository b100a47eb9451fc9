//! `_Py_DebugOffsets`: the self-description CPython places at the start of `_PyRuntime`.
//!
//! The struct is an 8-byte cookie followed by `uint64_t` slots. *Which slot* holds which
//! offset is fixed per major.minor and hard-coded here, one [`Layout`] per version; the
//! *values* in the slots are always read from the target, never assumed: patch releases
//! move the structs themselves (3.14.5 moved `PyInterpreterState` fields), and a debug
//! build (`Py_DEBUG`) has other struct sizes, yet the slot positions stay. A new minor
//! version is one more entry in [`LAYOUTS`].
//!
//! Every value is validated before it is used to compute an address, because it comes
//! from another process's memory: sizes must be non-zero, each field must fit inside its
//! struct (`offset + width <= size`), word-sized fields must be aligned, and the script
//! path buffer must have a sane size.

use super::version::{is_served_by, PyVersion, VersionProblem};

/// The 8 bytes `_Py_DebugOffsets` starts with.
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Cookie, `version` and `free_threaded`: the same three slots in every version that has
/// debug offsets, and enough to choose the [`Layout`] for the rest.
pub const HEADER_LEN: usize = 24;

/// `_PyRuntime` is 32-byte aligned, so a scan for the cookie only looks at these offsets.
pub const RUNTIME_ALIGNMENT: u64 = 32;

/// Byte positions, inside `_Py_DebugOffsets`, of the slots this injector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPositions {
    pub runtime_size: usize,
    pub runtime_interpreters_head: usize,
    pub interp_size: usize,
    pub interp_id: usize,
    pub interp_next: usize,
    pub interp_threads_head: usize,
    pub interp_threads_main: usize,
    pub tstate_size: usize,
    pub tstate_next: usize,
    pub tstate_native_thread_id: usize,
    pub eval_breaker: usize,
    pub remote_debugger_support: usize,
    pub remote_debugging_enabled: usize,
    pub debugger_pending_call: usize,
    pub debugger_script_path: usize,
    pub debugger_script_path_size: usize,
}

/// Everything that is fixed for one CPython major.minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub major: u8,
    pub minor: u8,
    /// `PY_VERSION_HEX` of the first pre-release whose `_Py_DebugOffsets` equals the final
    /// one (pre-releases from there on are served); `None` serves final releases only.
    /// Final releases of any patch level are always served.
    pub frozen_since: Option<u64>,
    /// `sizeof(_Py_DebugOffsets)`: how many bytes to read.
    pub struct_len: usize,
    /// `_PY_EVAL_PLEASE_STOP_BIT` in this version's eval breaker.
    pub eval_please_stop_bit: u64,
    pub slots: SlotPositions,
}

/// CPython 3.14 (`Include/internal/pycore_debug_offsets.h`, 3.14 branch). Checked against
/// the section contents of 3.14.10 on x86_64.
pub const LAYOUT_3_14: Layout = Layout {
    major: 3,
    minor: 14,
    frozen_since: None,
    struct_len: 760,
    eval_please_stop_bit: 1 << 5,
    slots: SlotPositions {
        runtime_size: 24,
        runtime_interpreters_head: 40,
        interp_size: 48,
        interp_id: 56,
        interp_next: 64,
        interp_threads_head: 72,
        interp_threads_main: 80,
        tstate_size: 176,
        tstate_next: 192,
        tstate_native_thread_id: 224,
        eval_breaker: 712,
        remote_debugger_support: 720,
        remote_debugging_enabled: 728,
        debugger_pending_call: 736,
        debugger_script_path: 744,
        debugger_script_path_size: 752,
    },
};

/// CPython 3.15. `_Py_DebugOffsets` grew during the betas (`thread_state` gained
/// `base_frame`, `last_profiled_frame` and, in 3.15.0b4, one more field ahead of
/// `thread_id`; more object tables precede `debugger_support`) and is frozen from
/// 3.15.0rc1 on. Positions checked against the `.PyRuntime` section of Debian's 3.15.2 on
/// x86_64 (its release and debug builds, and `libpython3.15.so.1.0`), and against a live
/// 3.15.2 process: the main thread state's `native_thread_id` is the pid, `next` links
/// the thread list, `config.remote_debug` is 1.
pub const LAYOUT_3_15: Layout = Layout {
    major: 3,
    minor: 15,
    frozen_since: Some(0x030F_00C1),
    struct_len: 888,
    eval_please_stop_bit: 1 << 5,
    slots: SlotPositions {
        runtime_size: 24,
        runtime_interpreters_head: 40,
        interp_size: 48,
        interp_id: 56,
        interp_next: 64,
        interp_threads_head: 72,
        interp_threads_main: 80,
        tstate_size: 176,
        tstate_next: 192,
        tstate_native_thread_id: 248,
        eval_breaker: 840,
        remote_debugger_support: 848,
        remote_debugging_enabled: 856,
        debugger_pending_call: 864,
        debugger_script_path: 872,
        debugger_script_path_size: 880,
    },
};

/// Every version this injector can serve, oldest first.
pub static LAYOUTS: &[Layout] = &[LAYOUT_3_14, LAYOUT_3_15];

/// "3.14" (or "3.14, 3.15"): for error messages.
pub fn supported_versions() -> String {
    LAYOUTS
        .iter()
        .map(|l| format!("{}.{}", l.major, l.minor))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the bytes at a candidate `_PyRuntime` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsError {
    /// The first 8 bytes are not `xdebugpy`: not a runtime (or not this address).
    BadCookie,
    /// Fewer bytes than the layout needs.
    TooShort {
        need: usize,
        got: usize,
    },
    Version(VersionProblem),
    /// A free-threaded build: refused, as a GIL build of CPython refuses it.
    FreeThreaded {
        found: PyVersion,
    },
    /// A slot holds a value that would send us outside the struct it describes.
    Invalid {
        field: &'static str,
        reason: String,
    },
}

/// The version facts at the start of `_Py_DebugOffsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: PyVersion,
    pub free_threaded: bool,
}

/// Cookie check and version read; `bytes` must hold at least [`HEADER_LEN`] bytes.
pub fn parse_header(bytes: &[u8]) -> Result<Header, OffsetsError> {
    if bytes.len() < HEADER_LEN {
        return Err(OffsetsError::TooShort {
            need: HEADER_LEN,
            got: bytes.len(),
        });
    }
    if &bytes[..8] != COOKIE {
        return Err(OffsetsError::BadCookie);
    }
    let version = PyVersion::from_hex(slot(bytes, 8).unwrap_or(0));
    let free_threaded = slot(bytes, 16).unwrap_or(0) != 0;
    Ok(Header {
        version,
        free_threaded,
    })
}

/// Picks the layout for a target, applying CPython's compatibility rules. This is the one
/// place the version is decided; everything after works from the returned table.
pub fn layout_for(header: &Header) -> Result<&'static Layout, OffsetsError> {
    let same_minor = LAYOUTS
        .iter()
        .find(|l| l.major == header.version.major && l.minor == header.version.minor);
    let layout = match same_minor {
        Some(layout) => layout,
        None => {
            return Err(OffsetsError::Version(VersionProblem::UnknownMinor {
                found: header.version,
            }))
        }
    };
    is_served_by(
        &header.version,
        layout.major,
        layout.minor,
        layout.frozen_since,
    )
    .map_err(OffsetsError::Version)?;
    if header.free_threaded {
        return Err(OffsetsError::FreeThreaded {
            found: header.version,
        });
    }
    Ok(layout)
}

fn slot(bytes: &[u8], position: usize) -> Option<u64> {
    let raw = bytes.get(position..position.checked_add(8)?)?;
    Some(u64::from_ne_bytes(raw.try_into().ok()?))
}

/// Sane bounds for the script path buffer (`_Py_MAX_SCRIPT_PATH_SIZE`, 512 in 3.14): room
/// for at least "/" + NUL, at most `PATH_MAX`.
const MIN_SCRIPT_PATH_SIZE: u64 = 2;
const MAX_SCRIPT_PATH_SIZE: u64 = 4096;

/// Validated offsets of one target: every address computed from these stays inside the
/// struct it points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugOffsets {
    pub version: PyVersion,
    pub runtime_size: u64,
    pub interpreters_head: u64,
    pub interp_size: u64,
    pub interp_id: u64,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub interp_threads_main: u64,
    /// `int` in `PyInterpreterState` (its `config.remote_debug`).
    pub remote_debugging_enabled: u64,
    pub tstate_size: u64,
    pub tstate_next: u64,
    pub tstate_native_thread_id: u64,
    /// `uintptr_t` in `PyThreadState`.
    pub eval_breaker: u64,
    /// `_PyRemoteDebuggerSupport` inside `PyThreadState`.
    pub remote_debugger_support: u64,
    /// `int32_t`, relative to the support block.
    pub debugger_pending_call: u64,
    /// `char[script_path_size]`, relative to the support block.
    pub debugger_script_path: u64,
    /// A size, not an offset.
    pub debugger_script_path_size: u64,
    pub eval_please_stop_bit: u64,
}

impl DebugOffsets {
    /// Reads the slots of `layout` from the struct's bytes and validates them.
    pub fn parse(layout: &Layout, bytes: &[u8]) -> Result<DebugOffsets, OffsetsError> {
        if bytes.len() < layout.struct_len {
            return Err(OffsetsError::TooShort {
                need: layout.struct_len,
                got: bytes.len(),
            });
        }
        let header = parse_header(bytes)?;
        let s = &layout.slots;
        let read = |position: usize| {
            slot(bytes, position).ok_or(OffsetsError::TooShort {
                need: position + 8,
                got: bytes.len(),
            })
        };
        let offsets = DebugOffsets {
            version: header.version,
            runtime_size: read(s.runtime_size)?,
            interpreters_head: read(s.runtime_interpreters_head)?,
            interp_size: read(s.interp_size)?,
            interp_id: read(s.interp_id)?,
            interp_next: read(s.interp_next)?,
            interp_threads_head: read(s.interp_threads_head)?,
            interp_threads_main: read(s.interp_threads_main)?,
            remote_debugging_enabled: read(s.remote_debugging_enabled)?,
            tstate_size: read(s.tstate_size)?,
            tstate_next: read(s.tstate_next)?,
            tstate_native_thread_id: read(s.tstate_native_thread_id)?,
            eval_breaker: read(s.eval_breaker)?,
            remote_debugger_support: read(s.remote_debugger_support)?,
            debugger_pending_call: read(s.debugger_pending_call)?,
            debugger_script_path: read(s.debugger_script_path)?,
            debugger_script_path_size: read(s.debugger_script_path_size)?,
            eval_please_stop_bit: layout.eval_please_stop_bit,
        };
        offsets.validate()?;
        Ok(offsets)
    }

    fn validate(&self) -> Result<(), OffsetsError> {
        nonzero("runtime_state.size", self.runtime_size)?;
        nonzero("interpreter_state.size", self.interp_size)?;
        nonzero("thread_state.size", self.tstate_size)?;

        let runtime = ("runtime_state.size", self.runtime_size);
        fits(
            "runtime_state.interpreters_head",
            self.interpreters_head,
            8,
            runtime,
        )?;

        let interp = ("interpreter_state.size", self.interp_size);
        fits("interpreter_state.id", self.interp_id, 8, interp)?;
        fits("interpreter_state.next", self.interp_next, 8, interp)?;
        fits(
            "interpreter_state.threads_head",
            self.interp_threads_head,
            8,
            interp,
        )?;
        fits(
            "interpreter_state.threads_main",
            self.interp_threads_main,
            8,
            interp,
        )?;
        fits(
            "debugger_support.remote_debugging_enabled",
            self.remote_debugging_enabled,
            4,
            interp,
        )?;

        let tstate = ("thread_state.size", self.tstate_size);
        fits("thread_state.next", self.tstate_next, 8, tstate)?;
        fits(
            "thread_state.native_thread_id",
            self.tstate_native_thread_id,
            8,
            tstate,
        )?;
        fits(
            "debugger_support.eval_breaker",
            self.eval_breaker,
            8,
            tstate,
        )?;

        let size = self.debugger_script_path_size;
        if !(MIN_SCRIPT_PATH_SIZE..=MAX_SCRIPT_PATH_SIZE).contains(&size) {
            return Err(OffsetsError::Invalid {
                field: "debugger_support.debugger_script_path_size",
                reason: format!(
                    "{size} is outside the sane range {MIN_SCRIPT_PATH_SIZE}..={MAX_SCRIPT_PATH_SIZE}"
                ),
            });
        }
        let pending = self
            .remote_debugger_support
            .checked_add(self.debugger_pending_call)
            .ok_or_else(|| overflow("debugger_support.debugger_pending_call"))?;
        fits("debugger_support.debugger_pending_call", pending, 4, tstate)?;
        let path = self
            .remote_debugger_support
            .checked_add(self.debugger_script_path)
            .ok_or_else(|| overflow("debugger_support.debugger_script_path"))?;
        // A byte buffer: no alignment, but the whole buffer must fit.
        fits_unaligned("debugger_support.debugger_script_path", path, size, tstate)?;
        Ok(())
    }

    /// Address of `_PyRuntime.interpreters.head`.
    pub fn interpreters_head_addr(&self, runtime: u64) -> Option<u64> {
        runtime.checked_add(self.interpreters_head)
    }
    pub fn interp_id_addr(&self, interp: u64) -> Option<u64> {
        interp.checked_add(self.interp_id)
    }
    pub fn interp_next_addr(&self, interp: u64) -> Option<u64> {
        interp.checked_add(self.interp_next)
    }
    pub fn interp_threads_head_addr(&self, interp: u64) -> Option<u64> {
        interp.checked_add(self.interp_threads_head)
    }
    pub fn interp_threads_main_addr(&self, interp: u64) -> Option<u64> {
        interp.checked_add(self.interp_threads_main)
    }
    pub fn remote_debugging_enabled_addr(&self, interp: u64) -> Option<u64> {
        interp.checked_add(self.remote_debugging_enabled)
    }
    pub fn eval_breaker_addr(&self, tstate: u64) -> Option<u64> {
        tstate.checked_add(self.eval_breaker)
    }
    pub fn pending_call_addr(&self, tstate: u64) -> Option<u64> {
        tstate
            .checked_add(self.remote_debugger_support)?
            .checked_add(self.debugger_pending_call)
    }
    pub fn script_path_addr(&self, tstate: u64) -> Option<u64> {
        tstate
            .checked_add(self.remote_debugger_support)?
            .checked_add(self.debugger_script_path)
    }

    /// The part of a `PyThreadState` that holds both `next` and `native_thread_id`, so a
    /// thread walk costs one read per thread: `(offset, len)`.
    pub fn thread_probe(&self) -> (u64, usize) {
        let first = self.tstate_next.min(self.tstate_native_thread_id);
        let last = self.tstate_next.max(self.tstate_native_thread_id);
        // Both fit in `tstate_size` (validated), so this is small.
        (first, (last - first + 8) as usize)
    }

    /// `(next, native_thread_id)` from the bytes read at [`Self::thread_probe`].
    pub fn parse_thread_probe(&self, bytes: &[u8]) -> Option<(u64, u64)> {
        let (first, _) = self.thread_probe();
        let next = slot(bytes, (self.tstate_next - first) as usize)?;
        let tid = slot(bytes, (self.tstate_native_thread_id - first) as usize)?;
        Some((next, tid))
    }

    /// The longest path (in bytes, without the NUL) the target's buffer can hold.
    pub fn max_script_path_len(&self) -> usize {
        (self.debugger_script_path_size - 1) as usize
    }

    /// The bytes to write into the path buffer: the path and its NUL terminator.
    pub fn script_path_payload(&self, path: &[u8]) -> Result<Vec<u8>, PathProblem> {
        script_path_payload(path, self.debugger_script_path_size)
    }
}

/// Why a script path cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// Longer than the target's buffer allows (`max` bytes without the NUL).
    TooLong { len: usize, max: usize },
    /// The target resolves a relative path against *its* working directory.
    NotAbsolute,
    /// C reads the path up to the first NUL: it would run a different file.
    ContainsNul,
}

/// `path` + NUL, refused when it does not fit in a buffer of `buffer_size` bytes.
pub fn script_path_payload(path: &[u8], buffer_size: u64) -> Result<Vec<u8>, PathProblem> {
    let max = buffer_size.saturating_sub(1) as usize;
    if path.len() > max {
        return Err(PathProblem::TooLong {
            len: path.len(),
            max,
        });
    }
    if path.first() != Some(&b'/') {
        return Err(PathProblem::NotAbsolute);
    }
    if path.contains(&0) {
        return Err(PathProblem::ContainsNul);
    }
    let mut payload = Vec::with_capacity(path.len() + 1);
    payload.extend_from_slice(path);
    payload.push(0);
    Ok(payload)
}

/// A pointer read from the target that may be dereferenced: non-null, 8-aligned and in
/// the user half of a 64-bit address space.
pub fn is_plausible_pointer(value: u64) -> bool {
    value != 0 && value % 8 == 0 && value < (1 << 56)
}

/// Addresses, 32-byte aligned and inside `[chunk_addr, chunk_addr + chunk.len())`, where
/// `chunk` holds the cookie: `_PyRuntime` candidates for the fallback scan.
pub fn cookie_hits(chunk: &[u8], chunk_addr: u64) -> Vec<u64> {
    let align = RUNTIME_ALIGNMENT;
    let first = chunk_addr.wrapping_neg() % align; // bytes to skip to the next boundary
    let mut hits = Vec::new();
    let mut index = first as usize;
    while index + COOKIE.len() <= chunk.len() {
        if &chunk[index..index + COOKIE.len()] == COOKIE {
            hits.push(chunk_addr + index as u64);
        }
        index += align as usize;
    }
    hits
}

fn nonzero(field: &'static str, value: u64) -> Result<(), OffsetsError> {
    if value == 0 {
        return Err(OffsetsError::Invalid {
            field,
            reason: "is zero".into(),
        });
    }
    Ok(())
}

fn overflow(field: &'static str) -> OffsetsError {
    OffsetsError::Invalid {
        field,
        reason: "offset overflows".into(),
    }
}

/// `offset` is aligned to `width` and `offset + width <= size`.
fn fits(
    field: &'static str,
    offset: u64,
    width: u64,
    (size_name, size): (&str, u64),
) -> Result<(), OffsetsError> {
    if offset % width != 0 {
        return Err(OffsetsError::Invalid {
            field,
            reason: format!("{offset} is not {width}-byte aligned"),
        });
    }
    fits_unaligned(field, offset, width, (size_name, size))
}

/// `offset + width <= size`, without an alignment requirement.
pub(crate) fn fits_unaligned(
    field: &'static str,
    offset: u64,
    width: u64,
    (size_name, size): (&str, u64),
) -> Result<(), OffsetsError> {
    match offset.checked_add(width) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OffsetsError::Invalid {
            field,
            reason: format!("{offset} + {width} exceeds {size_name} {size}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `_Py_DebugOffsets` of `layout` holding `version` and the values a real build has
    /// in the slots this crate reads (in `SlotPositions` order, after `free_threaded`).
    fn table(layout: &Layout, version: u64, values: [u64; 16]) -> Vec<u8> {
        let mut bytes = vec![0u8; layout.struct_len];
        bytes[..8].copy_from_slice(COOKIE);
        put(&mut bytes, 8, version);
        let s = layout.slots;
        let positions = [
            s.runtime_size,
            s.runtime_interpreters_head,
            s.interp_size,
            s.interp_id,
            s.interp_next,
            s.interp_threads_head,
            s.interp_threads_main,
            s.tstate_size,
            s.tstate_next,
            s.tstate_native_thread_id,
            s.eval_breaker,
            s.remote_debugger_support,
            s.remote_debugging_enabled,
            s.debugger_pending_call,
            s.debugger_script_path,
            s.debugger_script_path_size,
        ];
        for (position, value) in positions.into_iter().zip(values) {
            put(&mut bytes, position, value);
        }
        bytes
    }

    /// The slots of 3.14.10 x86_64, as read from its `.PyRuntime` section.
    fn real_3_14_10() -> Vec<u8> {
        let values = [
            316616, 808, 225864, 7280, 7272, 7344, 7360, 832, 8, 160, 24, 304, 8076, 0, 4, 512,
        ];
        table(&LAYOUT_3_14, 0x030E0AF0, values)
    }

    /// The slots of 3.15.2 x86_64 (Debian's release build), as read from its `.PyRuntime`.
    fn real_3_15_2() -> Vec<u8> {
        let values = [
            346568, 936, 226240, 7272, 7264, 7336, 7352, 888, 8, 184, 24, 344, 8028, 0, 4, 512,
        ];
        table(&LAYOUT_3_15, 0x030F02F0, values)
    }

    fn put(bytes: &mut [u8], position: usize, value: u64) {
        bytes[position..position + 8].copy_from_slice(&value.to_ne_bytes());
    }

    fn parse(bytes: &[u8]) -> Result<DebugOffsets, OffsetsError> {
        let header = parse_header(bytes)?;
        let layout = layout_for(&header)?;
        DebugOffsets::parse(layout, bytes)
    }

    #[test]
    fn real_offsets_parse_and_give_the_documented_addresses() {
        let offsets = parse(&real_3_14_10()).unwrap();
        assert_eq!(offsets.version.to_string(), "3.14.10");
        let runtime = 0xba07c0;
        assert_eq!(offsets.interpreters_head_addr(runtime), Some(runtime + 808));
        let tstate = 0x7f00_0000_1000;
        assert_eq!(offsets.pending_call_addr(tstate), Some(tstate + 304));
        assert_eq!(offsets.script_path_addr(tstate), Some(tstate + 308));
        assert_eq!(offsets.eval_breaker_addr(tstate), Some(tstate + 24));
        assert_eq!(offsets.max_script_path_len(), 511);
        assert_eq!(offsets.eval_please_stop_bit, 32);
        assert_eq!(offsets.thread_probe(), (8, 160));
    }

    #[test]
    fn real_3_15_offsets_use_the_3_15_positions() {
        let bytes = real_3_15_2();
        let header = parse_header(&bytes).unwrap();
        assert_eq!(layout_for(&header).unwrap(), &LAYOUT_3_15);
        let offsets = parse(&bytes).unwrap();
        assert_eq!(offsets.version.to_string(), "3.15.2");
        let runtime = 0xc408a0;
        assert_eq!(offsets.interpreters_head_addr(runtime), Some(runtime + 936));
        let interp = 0x7f00_0000_8000;
        assert_eq!(
            offsets.interp_threads_main_addr(interp),
            Some(interp + 7352)
        );
        assert_eq!(
            offsets.remote_debugging_enabled_addr(interp),
            Some(interp + 8028)
        );
        let tstate = 0x7f00_0000_1000;
        assert_eq!(offsets.pending_call_addr(tstate), Some(tstate + 344));
        assert_eq!(offsets.script_path_addr(tstate), Some(tstate + 348));
        assert_eq!(offsets.eval_breaker_addr(tstate), Some(tstate + 24));
        assert_eq!(offsets.thread_probe(), (8, 184));
        assert_eq!(offsets.max_script_path_len(), 511);
    }

    /// `_Py_DebugOffsets` exactly as Debian's builds carry it in `.PyRuntime` (x86_64),
    /// copied from the binaries by `readelf`-located offset; see tests/fixtures/debug_offsets.
    const RECORDED: [(&str, &[u8]); 4] = [
        (
            "3.14.10",
            include_bytes!("../../tests/fixtures/debug_offsets/3.14.10-x86_64.bin"),
        ),
        (
            "3.14.10",
            include_bytes!("../../tests/fixtures/debug_offsets/3.14.10-dbg-x86_64.bin"),
        ),
        (
            "3.15.2",
            include_bytes!("../../tests/fixtures/debug_offsets/3.15.2-x86_64.bin"),
        ),
        (
            "3.15.2",
            include_bytes!("../../tests/fixtures/debug_offsets/3.15.2-dbg-x86_64.bin"),
        ),
    ];

    #[test]
    fn recorded_tables_of_release_and_debug_builds_parse_with_their_layout() {
        for (version, bytes) in RECORDED {
            let offsets = parse(bytes).unwrap_or_else(|e| panic!("{version}: {e:?}"));
            assert_eq!(offsets.version.to_string(), version);
            // Facts every build shares: `next` right after `prev`, a 512-byte path buffer,
            // the pending flag first in the support block.
            assert_eq!(offsets.tstate_next, 8, "{version}");
            assert_eq!(offsets.debugger_script_path_size, 512, "{version}");
            assert_eq!(offsets.debugger_pending_call, 0, "{version}");
        }
    }

    #[test]
    fn a_recorded_table_with_a_faked_newer_version_is_refused_by_name() {
        // The honest stand-in for a 3.16 target: 3.15.2's real table claiming 3.16.0.
        let mut bytes = RECORDED[2].1.to_vec();
        put(&mut bytes, 8, 0x031000F0);
        match parse(&bytes) {
            Err(OffsetsError::Version(VersionProblem::UnknownMinor { found })) => {
                assert_eq!(found.to_string(), "3.16.0")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_layout_is_consistent() {
        for (i, layout) in LAYOUTS.iter().enumerate() {
            let s = layout.slots;
            let all = [
                s.runtime_size,
                s.runtime_interpreters_head,
                s.interp_size,
                s.interp_id,
                s.interp_next,
                s.interp_threads_head,
                s.interp_threads_main,
                s.tstate_size,
                s.tstate_next,
                s.tstate_native_thread_id,
                s.eval_breaker,
                s.remote_debugger_support,
                s.remote_debugging_enabled,
                s.debugger_pending_call,
                s.debugger_script_path,
                s.debugger_script_path_size,
            ];
            for position in all {
                assert!(position >= HEADER_LEN && position % 8 == 0, "{layout:?}");
                assert!(position + 8 <= layout.struct_len, "{layout:?}");
            }
            // Oldest first, one entry per minor: `layout_for` relies on it.
            if let Some(next) = LAYOUTS.get(i + 1) {
                assert!((layout.major, layout.minor) < (next.major, next.minor));
            }
        }
    }

    #[test]
    fn thread_probe_reads_next_and_tid_from_one_span() {
        let offsets = parse(&real_3_14_10()).unwrap();
        let mut span = vec![0u8; 160];
        span[..8].copy_from_slice(&0x1234u64.to_ne_bytes());
        span[152..160].copy_from_slice(&4321u64.to_ne_bytes());
        assert_eq!(offsets.parse_thread_probe(&span), Some((0x1234, 4321)));
        assert_eq!(offsets.parse_thread_probe(&span[..100]), None);
    }

    #[test]
    fn header_needs_the_cookie() {
        let mut bytes = real_3_14_10();
        bytes[0] = b'y';
        assert_eq!(parse_header(&bytes), Err(OffsetsError::BadCookie));
        assert!(matches!(
            parse_header(&bytes[..10]),
            Err(OffsetsError::TooShort { need: 24, got: 10 })
        ));
    }

    #[test]
    fn other_minor_and_prerelease_and_free_threaded_are_refused() {
        let mut bytes = real_3_14_10();
        put(&mut bytes, 8, 0x030D07F0);
        assert!(matches!(
            parse(&bytes),
            Err(OffsetsError::Version(VersionProblem::UnknownMinor { .. }))
        ));
        put(&mut bytes, 8, 0x030E00C1);
        assert!(matches!(
            parse(&bytes),
            Err(OffsetsError::Version(
                VersionProblem::UnverifiedPrerelease { .. }
            ))
        ));
        put(&mut bytes, 8, 0x030E01F0);
        put(&mut bytes, 16, 1);
        assert!(matches!(
            parse(&bytes),
            Err(OffsetsError::FreeThreaded { .. })
        ));
        // 3.16 is not known to this build.
        put(&mut bytes, 8, 0x031000F0);
        put(&mut bytes, 16, 0);
        assert!(matches!(
            parse(&bytes),
            Err(OffsetsError::Version(VersionProblem::UnknownMinor { found }))
                if found.to_string() == "3.16.0"
        ));
        assert_eq!(supported_versions(), "3.14, 3.15");
    }

    #[test]
    fn a_3_15_prerelease_is_served_only_from_the_frozen_rc1() {
        let mut bytes = real_3_15_2();
        for rc in [0x030F00C1, 0x030F00C3] {
            put(&mut bytes, 8, rc);
            assert!(parse(&bytes).is_ok(), "{rc:#x}");
        }
        // 3.15.0b4 added a thread-state field: a beta's table is not this one.
        for early in [0x030F00B4, 0x030F00B3, 0x030F00A7] {
            put(&mut bytes, 8, early);
            assert!(
                matches!(
                    parse(&bytes),
                    Err(OffsetsError::Version(
                        VersionProblem::UnverifiedPrerelease { .. }
                    ))
                ),
                "{early:#x}"
            );
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        let bytes = real_3_14_10();
        assert_eq!(
            DebugOffsets::parse(&LAYOUT_3_14, &bytes[..700]),
            Err(OffsetsError::TooShort {
                need: 760,
                got: 700
            })
        );
    }

    fn invalid_field(position: usize, value: u64) -> &'static str {
        let mut bytes = real_3_14_10();
        put(&mut bytes, position, value);
        match parse(&bytes) {
            Err(OffsetsError::Invalid { field, .. }) => field,
            other => panic!("slot {position} = {value}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn every_used_slot_is_validated() {
        let s = LAYOUT_3_14.slots;
        assert_eq!(invalid_field(s.runtime_size, 0), "runtime_state.size");
        assert_eq!(invalid_field(s.interp_size, 0), "interpreter_state.size");
        assert_eq!(invalid_field(s.tstate_size, 0), "thread_state.size");
        assert_eq!(
            invalid_field(s.runtime_interpreters_head, 316616),
            "runtime_state.interpreters_head"
        );
        assert_eq!(
            invalid_field(s.runtime_interpreters_head, 809),
            "runtime_state.interpreters_head"
        );
        assert_eq!(invalid_field(s.interp_id, 225860), "interpreter_state.id");
        assert_eq!(
            invalid_field(s.interp_next, u64::MAX),
            "interpreter_state.next"
        );
        assert_eq!(
            invalid_field(s.interp_threads_head, 7345),
            "interpreter_state.threads_head"
        );
        assert_eq!(
            invalid_field(s.interp_threads_main, 225864),
            "interpreter_state.threads_main"
        );
        assert_eq!(
            invalid_field(s.remote_debugging_enabled, 225862),
            "debugger_support.remote_debugging_enabled"
        );
        assert_eq!(invalid_field(s.tstate_next, 830), "thread_state.next");
        assert_eq!(
            invalid_field(s.tstate_native_thread_id, 900),
            "thread_state.native_thread_id"
        );
        assert_eq!(
            invalid_field(s.eval_breaker, 20),
            "debugger_support.eval_breaker"
        );
        assert_eq!(
            invalid_field(s.debugger_script_path_size, 0),
            "debugger_support.debugger_script_path_size"
        );
        assert_eq!(
            invalid_field(s.debugger_script_path_size, 1 << 20),
            "debugger_support.debugger_script_path_size"
        );
        // 304 + 4 + 512 = 820 fits in 832; 600 does not.
        assert_eq!(
            invalid_field(s.debugger_script_path_size, 600),
            "debugger_support.debugger_script_path"
        );
        assert_eq!(
            invalid_field(s.remote_debugger_support, 830),
            "debugger_support.debugger_pending_call"
        );
        assert_eq!(
            invalid_field(s.remote_debugger_support, u64::MAX),
            "debugger_support.debugger_pending_call"
        );
        assert_eq!(
            invalid_field(s.debugger_script_path, u64::MAX - 100),
            "debugger_support.debugger_script_path"
        );
    }

    #[test]
    fn script_path_payload_rules() {
        assert_eq!(script_path_payload(b"/a.py", 512), Ok(b"/a.py\0".to_vec()));
        let longest = [b"/".as_slice(), &[b'x'; 510]].concat();
        assert_eq!(script_path_payload(&longest, 512).unwrap().len(), 512);
        let too_long = [b"/".as_slice(), &[b'x'; 511]].concat();
        assert_eq!(
            script_path_payload(&too_long, 512),
            Err(PathProblem::TooLong { len: 512, max: 511 })
        );
        assert_eq!(
            script_path_payload(b"rel.py", 512),
            Err(PathProblem::NotAbsolute)
        );
        assert_eq!(script_path_payload(b"", 512), Err(PathProblem::NotAbsolute));
        assert_eq!(
            script_path_payload(b"/a\0b", 512),
            Err(PathProblem::ContainsNul)
        );
    }

    #[test]
    fn pointers_must_be_plausible() {
        assert!(is_plausible_pointer(0x7f00_0000_1000));
        assert!(!is_plausible_pointer(0));
        assert!(!is_plausible_pointer(0x7f00_0000_1004));
        assert!(!is_plausible_pointer(u64::MAX - 7));
    }

    #[test]
    fn cookie_scan_only_reports_aligned_hits() {
        let mut chunk = vec![0u8; 256];
        chunk[64..72].copy_from_slice(COOKIE);
        chunk[100..108].copy_from_slice(COOKIE); // not 32-byte aligned: text, not runtime
        chunk[224..232].copy_from_slice(COOKIE);
        assert_eq!(cookie_hits(&chunk, 0x1000), vec![0x1040, 0x10e0]);
        // A chunk that starts off-boundary still reports absolute aligned addresses.
        assert_eq!(cookie_hits(&chunk[8..], 0x1008), vec![0x1040, 0x10e0]);
        assert_eq!(cookie_hits(&chunk[..70], 0x1000), Vec::<u64>::new());
    }
}
