//! Reading and writing another process's memory without stopping it.
//!
//! `process_vm_readv`/`writev` are one syscall per access and need no file descriptor;
//! kernels built without them answer `ENOSYS`, and then `/proc/PID/mem` does the same job
//! (both are gated by the same `PTRACE_MODE_ATTACH` check, so neither gets around Yama).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

/// Why an access failed, in the terms the injector's errors need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemoryError {
    /// The process is gone (`ESRCH`, or `/proc/PID` vanished).
    Gone,
    /// The kernel refused access (`EPERM`/`EACCES`).
    Denied,
    /// The range is not mapped, or only part of it was transferred.
    Fault {
        addr: u64,
        len: usize,
        detail: String,
    },
}

/// Access to one process's address space.
#[derive(Debug)]
pub(crate) struct RemoteMemory {
    pid: i32,
    /// Set once `process_vm_*v` answered `ENOSYS`; from then on use `/proc/PID/mem`.
    use_proc_mem: AtomicBool,
}

impl RemoteMemory {
    pub(crate) fn new(pid: i32) -> RemoteMemory {
        RemoteMemory {
            pid,
            use_proc_mem: AtomicBool::new(false),
        }
    }

    /// Fills `buf` from `addr`; a partial read is an error.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if buf.is_empty() {
            return Ok(());
        }
        if !self.use_proc_mem.load(Ordering::Relaxed) {
            let remote = [RemoteIoVec {
                base: addr as usize,
                len: buf.len(),
            }];
            let len = buf.len();
            match process_vm_readv(
                Pid::from_raw(self.pid),
                &mut [IoSliceMut::new(buf)],
                &remote,
            ) {
                Ok(n) if n == len => return Ok(()),
                Ok(n) => return Err(short(addr, len, n)),
                Err(Errno::ENOSYS) => self.use_proc_mem.store(true, Ordering::Relaxed),
                Err(errno) => return Err(from_errno(errno, addr, len)),
            }
        }
        let file = self.open_mem(false)?;
        file.read_exact_at(buf, addr)
            .map_err(|e| from_io(&e, addr, buf.len()))
    }

    /// Writes all of `data` at `addr`; a partial write is an error.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.use_proc_mem.load(Ordering::Relaxed) {
            let remote = [RemoteIoVec {
                base: addr as usize,
                len: data.len(),
            }];
            match process_vm_writev(Pid::from_raw(self.pid), &[IoSlice::new(data)], &remote) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(n) => return Err(short(addr, data.len(), n)),
                Err(Errno::ENOSYS) => self.use_proc_mem.store(true, Ordering::Relaxed),
                Err(errno) => return Err(from_errno(errno, addr, data.len())),
            }
        }
        let file = self.open_mem(true)?;
        file.write_all_at(data, addr)
            .map_err(|e| from_io(&e, addr, data.len()))
    }

    pub(crate) fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut raw = [0u8; 8];
        self.read(addr, &mut raw)?;
        Ok(u64::from_ne_bytes(raw))
    }

    pub(crate) fn read_i32(&self, addr: u64) -> Result<i32, MemoryError> {
        let mut raw = [0u8; 4];
        self.read(addr, &mut raw)?;
        Ok(i32::from_ne_bytes(raw))
    }

    fn open_mem(&self, write: bool) -> Result<File, MemoryError> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(format!("/proc/{}/mem", self.pid))
            .map_err(|e| from_io(&e, 0, 0))
    }
}

fn short(addr: u64, len: usize, done: usize) -> MemoryError {
    MemoryError::Fault {
        addr,
        len,
        detail: format!("only {done} of {len} bytes transferred"),
    }
}

fn from_errno(errno: Errno, addr: u64, len: usize) -> MemoryError {
    match errno {
        Errno::ESRCH => MemoryError::Gone,
        Errno::EPERM | Errno::EACCES => MemoryError::Denied,
        other => MemoryError::Fault {
            addr,
            len,
            detail: other.desc().to_owned(),
        },
    }
}

fn from_io(error: &io::Error, addr: u64, len: usize) -> MemoryError {
    match error.raw_os_error() {
        Some(code) => from_errno(Errno::from_raw(code), addr, len),
        None if error.kind() == io::ErrorKind::UnexpectedEof => MemoryError::Fault {
            addr,
            len,
            detail: "end of address space".into(),
        },
        None => MemoryError::Fault {
            addr,
            len,
            detail: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_this_process() {
        let memory = RemoteMemory::new(std::process::id() as i32);
        let source = 0x1122_3344_5566_7788u64;
        let addr = &source as *const u64 as u64;
        assert_eq!(memory.read_u64(addr), Ok(source));

        let mut target = [0u8; 4];
        memory
            .write(target.as_mut_ptr() as u64, &7i32.to_ne_bytes())
            .unwrap();
        assert_eq!(i32::from_ne_bytes(std::hint::black_box(target)), 7);
    }

    #[test]
    fn proc_mem_fallback_gives_the_same_bytes() {
        let memory = RemoteMemory::new(std::process::id() as i32);
        memory.use_proc_mem.store(true, Ordering::Relaxed);
        let source = [1u8, 2, 3, 4, 5];
        let mut out = [0u8; 5];
        memory.read(source.as_ptr() as u64, &mut out).unwrap();
        assert_eq!(out, source);
    }

    #[test]
    fn unmapped_address_is_a_fault_not_a_panic() {
        let memory = RemoteMemory::new(std::process::id() as i32);
        assert!(matches!(memory.read_u64(8), Err(MemoryError::Fault { .. })));
        memory.use_proc_mem.store(true, Ordering::Relaxed);
        assert!(matches!(memory.read_u64(8), Err(MemoryError::Fault { .. })));
    }
}
