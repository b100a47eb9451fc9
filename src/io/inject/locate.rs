//! Finding `_PyRuntime` in a live process.
//!
//! For each mapped file whose name contains `python` (map order: the executable, then
//! `libpython*.so`), the `.PyRuntime` section address is computed from the ELF headers
//! and confirmed by the `xdebugpy` cookie. The ELF is opened through `/proc/PID/root/PATH`
//! (the target's view of the filesystem), then through `/proc/PID/map_files/RANGE` (the
//! mapped file itself, even when deleted or replaced; needs CAP_SYS_ADMIN or
//! CAP_CHECKPOINT_RESTORE). When neither gives a confirmed address, the file's private
//! writable mappings are scanned for the cookie at 32-byte boundaries: the initialised
//! runtime lives in `.data`, while the cookie's other copies are in read-only text.
//!
//! A confirmed cookie is not yet *the* runtime: a process can map libpython a second time
//! (gh-144563: a library loaded after `_ctypes` dlopens it under another name), and that
//! copy's `.PyRuntime` holds the cookie from the file's initial data but never gets an
//! interpreter. Such a copy is mapped later, at a lower address, so maps order lists it
//! first. The caller therefore judges each candidate, and the search goes on past the
//! ones it rejects.

use std::fs::File;
use std::io;

use object::elf::{FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, ReadCache};

use crate::pyruntime::{
    cookie_hits, parse_header, parse_maps, python_files, runtime_address, Header, MapRegion,
    MappedFile, RuntimeSection, HEADER_LEN,
};

use super::error::{permission_denied, InjectError};
use super::memory::{MemoryError, RemoteMemory};

/// How `_PyRuntime` is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeSearch {
    /// Section address first, cookie scan as the fallback (what `open` does).
    #[default]
    Auto,
    /// Only the cookie scan of writable mappings: the path taken for a replaced binary;
    /// selectable so that it can be tested on any target.
    CookieScanOnly,
}

/// How `_PyRuntime` was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeFoundBy {
    /// The `.PyRuntime` section of the ELF opened at this path.
    Section { elf: String },
    /// The cookie scan of this file's writable mappings.
    CookieScan { file: String },
}

/// A confirmed `_PyRuntime`: its address and the header found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundRuntime {
    pub address: u64,
    pub header: Header,
    pub found_by: RuntimeFoundBy,
}

/// Reads `/proc/PID/maps` and locates the runtime: the first candidate, in maps order,
/// that `is_live` accepts; when it accepts none, the first one found, so that the caller
/// reports what is wrong with it (typically: no interpreter yet, during start-up).
pub(crate) fn locate_runtime(
    pid: i32,
    memory: &RemoteMemory,
    search: RuntimeSearch,
    mut is_live: impl FnMut(&FoundRuntime) -> Result<bool, InjectError>,
) -> Result<FoundRuntime, InjectError> {
    let maps = read_maps(pid)?;
    let regions = parse_maps(&maps);
    if regions.is_empty() {
        let zombie = crate::io::procfs::process_stat(pid).is_some_and(|s| s.state == 'Z');
        return Err(InjectError::NotPython {
            pid,
            detail: if zombie {
                "it is a zombie (exited, not yet reaped)".into()
            } else {
                "it has no memory mappings (a kernel thread?)".into()
            },
        });
    }
    let files = python_files(&regions);
    if files.is_empty() {
        return Err(InjectError::NotPython {
            pid,
            detail: "no mapped file has \"python\" in its name".into(),
        });
    }
    let mut notes = Notes::default();
    let mut first = None;
    for file in &files {
        let mut judge = |found: FoundRuntime| -> Result<Option<FoundRuntime>, InjectError> {
            if is_live(&found)? {
                return Ok(Some(found));
            }
            first.get_or_insert(found);
            Ok(None)
        };
        if let Some(found) = locate_in_file(pid, memory, file, search, &mut notes, &mut judge)? {
            return Ok(found);
        }
    }
    if let Some(found) = first {
        return Ok(found);
    }
    Err(InjectError::NotPython {
        pid,
        detail: format!(
            "no _PyRuntime with the xdebugpy cookie found ({})",
            notes.summary()
        ),
    })
}

/// Why each candidate file was rejected, kept short enough for an error message.
#[derive(Default)]
struct Notes {
    details: Vec<String>,
    /// Files without a `.PyRuntime` section (extension modules match "python" too).
    without_section: usize,
}

impl Notes {
    const MAX_DETAILS: usize = 4;

    fn push(&mut self, note: String) {
        self.details.push(note);
    }

    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .details
            .iter()
            .take(Self::MAX_DETAILS)
            .cloned()
            .collect();
        if self.details.len() > Self::MAX_DETAILS {
            parts.push(format!("{} more", self.details.len() - Self::MAX_DETAILS));
        }
        if self.without_section > 0 {
            parts.push(format!(
                "{} python-named file(s) without a .PyRuntime section",
                self.without_section
            ));
        }
        parts.join("; ")
    }
}

pub(crate) fn read_maps(pid: i32) -> Result<String, InjectError> {
    if pid <= 0 {
        return Err(InjectError::NoSuchProcess { pid });
    }
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => InjectError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => {
            permission_denied(pid, &format!("reading /proc/{pid}/maps"))
        }
        // ESRCH when the process exits during the read.
        _ if e.raw_os_error() == Some(libc::ESRCH) => InjectError::NoSuchProcess { pid },
        _ => InjectError::Memory {
            pid,
            detail: format!("reading /proc/{pid}/maps: {e}"),
        },
    })
}

/// Where a file's ELF headers can be read from, best first.
pub(crate) fn elf_sources(pid: i32, file: &MappedFile<'_>) -> Vec<String> {
    let mut sources = Vec::new();
    if !file.deleted {
        sources.push(format!("/proc/{pid}/root{}", file.path));
    }
    if let Some(region) = file.offset_zero_region() {
        sources.push(format!("/proc/{pid}/map_files/{}", region.map_files_name()));
    }
    sources
}

/// What the caller thinks of a confirmed candidate: `Some` to take it, `None` to go on.
type Judge<'a> = dyn FnMut(FoundRuntime) -> Result<Option<FoundRuntime>, InjectError> + 'a;

fn locate_in_file(
    pid: i32,
    memory: &RemoteMemory,
    file: &MappedFile<'_>,
    search: RuntimeSearch,
    notes: &mut Notes,
    judge: &mut Judge<'_>,
) -> Result<Option<FoundRuntime>, InjectError> {
    let Some(base) = file.offset_zero_region().map(|r| r.start) else {
        notes.push(format!("{}: no mapping at file offset 0", file.path));
        return Ok(None);
    };
    let mut has_section = false;
    let mut opened_any = false;
    let sources = match search {
        RuntimeSearch::Auto => elf_sources(pid, file),
        RuntimeSearch::CookieScanOnly => Vec::new(),
    };
    for source in sources {
        let section = match read_runtime_section(&source) {
            Ok(Some(section)) => section,
            Ok(None) => {
                opened_any = true;
                continue;
            }
            Err(why) => {
                notes.push(format!("{source}: {why}"));
                continue;
            }
        };
        opened_any = true;
        has_section = true;
        let Ok(address) = runtime_address(base, &section) else {
            notes.push(format!("{source}: .PyRuntime address does not compute"));
            continue;
        };
        if let Some(header) = header_at(pid, memory, address)? {
            let found = FoundRuntime {
                address,
                header,
                found_by: RuntimeFoundBy::Section { elf: source },
            };
            // The section is where this file's runtime is: a rejected one is not
            // somewhere else in the file, so no scan.
            return judge(found);
        }
        notes.push(format!(
            "{source}: no cookie at the .PyRuntime address {address:#x}"
        ));
    }
    // A file that opened and plainly has no `.PyRuntime` (an executable linked against
    // libpython) holds no runtime; anything else may be a deleted or replaced binary.
    if opened_any && !has_section {
        notes.without_section += 1;
        return Ok(None);
    }
    let mut any_hit = false;
    for region in file.writable_private_regions() {
        if let Some(found) = scan_region(pid, memory, region, file.path, &mut any_hit, judge)? {
            return Ok(Some(found));
        }
    }
    if !any_hit {
        notes.push(format!("{}: no cookie in its writable mappings", file.path));
    }
    Ok(None)
}

/// The header at `address` if it carries the cookie; memory that cannot be read there is
/// "not here", but a denied or vanished process is an error.
fn header_at(pid: i32, memory: &RemoteMemory, address: u64) -> Result<Option<Header>, InjectError> {
    let mut raw = [0u8; HEADER_LEN];
    match memory.read(address, &mut raw) {
        Ok(()) => Ok(parse_header(&raw).ok()),
        Err(MemoryError::Fault { .. }) => Ok(None),
        Err(other) => Err(memory_error(pid, other, "reading _PyRuntime")),
    }
}

/// Reads a writable mapping in chunks and hands each aligned cookie hit to `judge`;
/// `any_hit` records that there was at least one.
fn scan_region(
    pid: i32,
    memory: &RemoteMemory,
    region: &MapRegion,
    path: &str,
    any_hit: &mut bool,
    judge: &mut Judge<'_>,
) -> Result<Option<FoundRuntime>, InjectError> {
    // Chunks start at page-aligned offsets of the region, so an aligned 8-byte cookie never
    // straddles two chunks.
    const CHUNK: u64 = 64 * 1024;
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut addr = region.start;
    while addr < region.end {
        let len = CHUNK.min(region.end - addr) as usize;
        let buf = &mut chunk[..len];
        match memory.read(addr, buf) {
            Ok(()) => {}
            Err(MemoryError::Fault { .. }) => {
                addr += len as u64;
                continue;
            }
            Err(other) => return Err(memory_error(pid, other, "scanning for _PyRuntime")),
        }
        for hit in cookie_hits(buf, addr) {
            let offset = (hit - addr) as usize;
            let header_bytes = buf.get(offset..offset + HEADER_LEN);
            let header = match header_bytes {
                Some(bytes) => parse_header(bytes).ok(),
                None => header_at(pid, memory, hit)?,
            };
            // A plausible runtime starts with a Python 3 version; any other hit is data
            // that happens to hold the cookie.
            if let Some(header) = header.filter(|h| h.version.major == 3) {
                *any_hit = true;
                let found = FoundRuntime {
                    address: hit,
                    header,
                    found_by: RuntimeFoundBy::CookieScan {
                        file: path.to_owned(),
                    },
                };
                if let Some(found) = judge(found)? {
                    return Ok(Some(found));
                }
            }
        }
        addr += len as u64;
    }
    Ok(None)
}

/// `.PyRuntime` and the first `PT_LOAD` of a 64-bit ELF file; `Ok(None)` when the file
/// parses but has no such section.
fn read_runtime_section(path: &str) -> Result<Option<RuntimeSection>, String> {
    read_section(path, b".PyRuntime")
}

/// The section `name` and the first `PT_LOAD` of a 64-bit ELF file, for
/// [`crate::pyruntime::runtime_address`]; `Ok(None)` when the file has no such section.
pub(crate) fn read_section(path: &str, name: &[u8]) -> Result<Option<RuntimeSection>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    // Reads only the headers and tables it is asked for, not the whole (large) binary.
    let cache = ReadCache::new(file);
    let header = FileHeader64::<Endianness>::parse(&cache).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let program_headers = header
        .program_headers(endian, &cache)
        .map_err(|e| e.to_string())?;
    let Some(first_load) = program_headers.iter().find(|p| p.p_type(endian) == PT_LOAD) else {
        return Err("no PT_LOAD segment".into());
    };
    let sections = header.sections(endian, &cache).map_err(|e| e.to_string())?;
    let Some((_, section)) = sections.section_by_name(endian, name) else {
        return Ok(None);
    };
    Ok(Some(RuntimeSection {
        section_addr: section.sh_addr(endian),
        section_size: section.sh_size(endian),
        first_load_vaddr: first_load.p_vaddr(endian),
        first_load_align: first_load.p_align(endian),
    }))
}

/// Maps a memory failure to the injector's error for `pid`.
pub(crate) fn memory_error(pid: i32, error: MemoryError, action: &str) -> InjectError {
    match error {
        MemoryError::Gone => InjectError::NoSuchProcess { pid },
        MemoryError::Denied => permission_denied(pid, action),
        MemoryError::Fault { addr, len, detail } => InjectError::Memory {
            pid,
            detail: format!("{action}: {len} bytes at {addr:#x}: {detail}"),
        },
    }
}
