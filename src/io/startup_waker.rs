//! The SIGURG waker installed by the interpreter itself, before the program's first line.
//!
//! Written into a target from outside ([`super::wake::install_at_start`]), the waker runs
//! only when the target next runs Python code. A program that blocks right away (a worker
//! whose first act is to wait on a queue) may block before the controller has written it,
//! and then nothing can wake it for a debugger: measured on a busy 2-core machine, about
//! one start in 25 of `tests/fixtures/wait_queue.py` ended so, and every attach waited out
//! its whole timeout. So the target is started with a `sitecustomize` module that installs
//! the waker while `site` runs, before `__main__` exists as code. The module is a zip
//! archive in a sealed memfd of the controller, named on `PYTHONPATH` as
//! `/proc/<controller>/fd/<n>`: nothing is written to disk, nothing is left behind, nobody
//! can change it, and every Python process of the tree that keeps the environment (pool
//! workers, `subprocess` children) gets the waker the same way.
//!
//! What the program sees: its own `sitecustomize`, if any, still runs (this one finds and
//! runs it, and leaves it in `sys.modules`); the archive's entry is taken out of
//! `sys.path` again; only `os.environ["PYTHONPATH"]` shows it, so that children inherit it.
//! An interpreter run with `-I`, `-E` or `-S` skips it, and the remote installer remains.
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The module's name inside the archive: the one `site` imports.
const MODULE_FILE: &str = "sitecustomize.py";

/// The `sitecustomize` source: the waker, then the program's own `sitecustomize`.
pub fn sitecustomize_source() -> String {
    format!(
        "# Helicopter Parent: installs the SIGURG waker before the program's own code runs,\n\
         # so that a program that blocks at once can still be woken for a debugger; then\n\
         # runs the sitecustomize this one hides, if there is one.\n\
         {waker}\
         def _helicopter_parent_startup():\n\
         \x20   import sys\n\
         \x20   archive = __file__.rpartition('/')[0]\n\
         \x20   # The program's sys.path is what it would be without this archive.\n\
         \x20   while archive in sys.path:\n\
         \x20       sys.path.remove(archive)\n\
         \x20   finder = None\n\
         \x20   for candidate in sys.meta_path:\n\
         \x20       if getattr(candidate, '__name__', '') == 'PathFinder':\n\
         \x20           finder = candidate\n\
         \x20   if finder is None:\n\
         \x20       return\n\
         \x20   spec = finder.find_spec('sitecustomize', sys.path)\n\
         \x20   if spec is None or spec.loader is None:\n\
         \x20       return\n\
         \x20   import importlib.util\n\
         \x20   module = importlib.util.module_from_spec(spec)\n\
         \x20   # The import of 'sitecustomize' under way ends with whatever sys.modules\n\
         \x20   # holds under that name: the program's own module.\n\
         \x20   sys.modules['sitecustomize'] = module\n\
         \x20   # Its errors are reported by site as they would be without this module.\n\
         \x20   spec.loader.exec_module(module)\n\
         _helicopter_parent_startup()\n\
         del _helicopter_parent_startup\n",
        waker = super::wake::waker_snippet()
    )
}

/// A zip archive (stored, not compressed) holding `sitecustomize.py`: the form in which
/// one `PYTHONPATH` entry can be a single file.
pub fn archive(source: &str) -> Vec<u8> {
    let name = MODULE_FILE.as_bytes();
    let data = source.as_bytes();
    let crc = crc32(data);
    let size = u32::try_from(data.len()).expect("the module is small");
    // 1980-01-01 00:00, the zip epoch: a fixed date keeps the archive reproducible.
    let (time, date): (u16, u16) = (0, (1 << 5) | 1);
    let mut zip = Vec::with_capacity(data.len() + 128);
    // Local file header.
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    zip.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0
    zip.extend_from_slice(&0u16.to_le_bytes()); // flags
    zip.extend_from_slice(&0u16.to_le_bytes()); // method: stored
    zip.extend_from_slice(&time.to_le_bytes());
    zip.extend_from_slice(&date.to_le_bytes());
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&size.to_le_bytes()); // compressed size
    zip.extend_from_slice(&size.to_le_bytes()); // uncompressed size
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // extra field length
    zip.extend_from_slice(name);
    zip.extend_from_slice(data);
    // Central directory: one entry.
    let directory_at = zip.len() as u32;
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    zip.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: Unix, 2.0
    zip.extend_from_slice(&20u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(&time.to_le_bytes());
    zip.extend_from_slice(&date.to_le_bytes());
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&size.to_le_bytes());
    zip.extend_from_slice(&size.to_le_bytes());
    zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // extra field length
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment length
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk number
    zip.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    zip.extend_from_slice(&(0o100_444u32 << 16).to_le_bytes()); // a read-only file
    zip.extend_from_slice(&0u32.to_le_bytes()); // its local header's offset
    zip.extend_from_slice(name);
    let directory_size = zip.len() as u32 - directory_at;
    // End of central directory.
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // this disk
    zip.extend_from_slice(&0u16.to_le_bytes()); // the directory's disk
    zip.extend_from_slice(&1u16.to_le_bytes()); // entries on this disk
    zip.extend_from_slice(&1u16.to_le_bytes()); // entries in all
    zip.extend_from_slice(&directory_size.to_le_bytes());
    zip.extend_from_slice(&directory_at.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment length
    zip
}

/// CRC-32 (IEEE 802.3, reflected, as zip uses it), bit by bit: the archive is built once
/// per controller and is a few kilobytes.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The archive, held open for the controller's life: its path is valid only as long as
/// this lives.
pub struct StartupWaker {
    _file: File,
    path: PathBuf,
}

impl StartupWaker {
    /// Writes the archive into a sealed memfd of this process.
    pub fn create() -> std::io::Result<StartupWaker> {
        let file = super::grant::sealed_memfd(
            "heli-sitecustomize.zip",
            &archive(&sitecustomize_source()),
        )?;
        let path = super::grant::path_for_others(&file);
        Ok(StartupWaker { _file: file, path })
    }

    /// The `PYTHONPATH` the target gets: the archive first, then what the controller's
    /// environment had (`existing`).
    pub fn python_path(&self, existing: Option<&OsStr>) -> OsString {
        python_path_with(&self.path, existing)
    }
}

/// `ours` ahead of `existing`. An empty `existing` adds nothing: an empty entry would put
/// the current directory on the program's `sys.path`.
fn python_path_with(ours: &std::path::Path, existing: Option<&OsStr>) -> OsString {
    let mut joined = OsString::from(ours);
    if let Some(existing) = existing.filter(|e| !e.as_bytes().is_empty()) {
        joined.push(":");
        joined.push(existing);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_standard_check_string() {
        // The check value every CRC-32/ISO-HDLC implementation documents.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_archive_ends_with_a_directory_that_points_back_at_its_one_entry() {
        let zip = archive("x = 1\n");
        let end = &zip[zip.len() - 22..];
        assert_eq!(&end[..4], &[0x50, 0x4b, 0x05, 0x06]);
        let directory_size = u32::from_le_bytes(end[12..16].try_into().unwrap()) as usize;
        let directory_at = u32::from_le_bytes(end[16..20].try_into().unwrap()) as usize;
        assert_eq!(directory_at + directory_size, zip.len() - 22);
        assert_eq!(
            &zip[directory_at..directory_at + 4],
            &[0x50, 0x4b, 0x01, 0x02]
        );
        assert_eq!(
            &zip[directory_at + 46..directory_at + 46 + 16],
            b"sitecustomize.py"
        );
        assert_eq!(&zip[30..46], b"sitecustomize.py");
        assert_eq!(&zip[46..52], b"x = 1\n");
    }

    #[test]
    fn the_program_s_python_path_follows_the_archive() {
        let ours = std::path::Path::new("/proc/1/fd/3");
        assert_eq!(python_path_with(ours, None), "/proc/1/fd/3");
        assert_eq!(python_path_with(ours, Some(OsStr::new(""))), "/proc/1/fd/3");
        assert_eq!(
            python_path_with(ours, Some(OsStr::new("/src:/lib"))),
            "/proc/1/fd/3:/src:/lib"
        );
    }
}
