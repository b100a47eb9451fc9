//! Native PEP 768 remote execution: make a CPython 3.14+ process run a script file, done by
//! *this* process (at `ptrace_scope=1` only an ancestor or a declared tracer may write into
//! the target, so a helper interpreter would be refused).
//!
//! Contract (implemented in this module; callers rely on exactly this):
//! - [`PythonProcess::open`] locates `_PyRuntime`, reads and validates `_Py_DebugOffsets`,
//!   and finds the main interpreter (id 0).
//! - [`PythonProcess::schedule`] writes the script path, the pending flag and the
//!   eval-breaker bit, in CPython's order, into one thread state; returns the chosen tid.
//! - [`PythonProcess::is_pending`] / [`PythonProcess::withdraw`] observe pickup and take
//!   back a request that was not picked up.
//!
//! The target is never stopped. Its data structures change under our feet, so every
//! pointer read from it is checked before use and every walk is bounded; a thread that
//! exits between two reads shows up as [`InjectError::NoSuchThread`], not as a crash.
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::pyruntime::{
    is_plausible_pointer, layout_for, supported_versions, DebugOffsets, Layout, OffsetsError,
    PathProblem, VersionProblem,
};

mod deliver;
mod error;
pub(crate) mod locate;
pub(crate) mod memory;

pub use deliver::{carry_out, deliver, failure_of, survey_threads, DeliverOptions, Delivery};
pub use error::InjectError;
pub use locate::{RuntimeFoundBy, RuntimeSearch};

pub(crate) use locate::memory_error;
use locate::{locate_runtime, FoundRuntime};
use memory::{MemoryError, RemoteMemory};

/// Which thread state receives the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadChoice {
    /// The main interpreter's main thread (what `sys.remote_exec` does).
    Main,
    /// The thread state whose native thread id is this.
    Tid(i32),
}

/// One Python thread state of the main interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyThread {
    pub native_tid: i32,
    pub is_main: bool,
}

/// More interpreters or threads than this means the list is corrupt or cyclic.
const MAX_WALK: usize = 100_000;

/// Upper bound for the span read per thread (`next` .. `native_thread_id`: 160 bytes in
/// 3.14, 184 in 3.15): a stack buffer, and a guard against a corrupt layout asking for gigabytes.
const MAX_THREAD_PROBE: usize = 4096;

/// An attached-to (not stopped) CPython process whose runtime was located and validated.
#[derive(Debug)]
pub struct PythonProcess {
    pid: i32,
    memory: RemoteMemory,
    offsets: DebugOffsets,
    /// `PyInterpreterState*` of the main interpreter (id 0). It lives as long as the
    /// process (it is embedded in `_PyRuntime`), so it is safe to keep.
    main_interp: u64,
    found_by: RuntimeFoundBy,
    /// Where `_PyRuntime` (and `_Py_DebugOffsets`, its first member) is.
    runtime: u64,
    layout: &'static Layout,
}

impl PythonProcess {
    pub fn open(pid: i32) -> Result<PythonProcess, InjectError> {
        PythonProcess::open_with(pid, RuntimeSearch::Auto)
    }

    /// [`PythonProcess::open`] with a chosen way of finding `_PyRuntime`.
    pub fn open_with(pid: i32, search: RuntimeSearch) -> Result<PythonProcess, InjectError> {
        let process = PythonProcess::open_for_reading(pid, search)?;
        let enabled_addr = process.addr(
            process
                .offsets
                .remote_debugging_enabled_addr(process.main_interp),
        )?;
        let enabled = process.read_i32(enabled_addr, "reading config.remote_debug")?;
        // The target runs scripts only when this is exactly 1.
        if enabled != 1 {
            return Err(InjectError::RemoteDebugDisabled { pid });
        }
        Ok(process)
    }

    /// Locates and validates the runtime without requiring remote execution to be
    /// enabled: reading memory (stacks, tasks) needs only `_Py_DebugOffsets`, which
    /// `-X disable-remote-debug` leaves in place.
    pub(crate) fn open_for_reading(
        pid: i32,
        search: RuntimeSearch,
    ) -> Result<PythonProcess, InjectError> {
        let memory = RemoteMemory::new(pid);
        let runtime = locate_runtime(pid, &memory, search, |found| {
            has_interpreter(pid, &memory, found)
        })?;
        // The one place the version is decided: everything below reads through `offsets`.
        let layout = layout_for(&runtime.header).map_err(|e| offsets_error(pid, e))?;
        let offsets = read_offsets(pid, &memory, runtime.address, layout)?;

        let mut process = PythonProcess {
            pid,
            memory,
            offsets,
            main_interp: 0,
            found_by: runtime.found_by,
            runtime: runtime.address,
            layout,
        };
        process.main_interp = process.find_main_interpreter(runtime.address)?;
        Ok(process)
    }

    /// The memory of the process, for readers in `crate::io`.
    pub(crate) fn memory(&self) -> &RemoteMemory {
        &self.memory
    }

    /// The validated offsets the injector uses.
    pub(crate) fn offsets(&self) -> &DebugOffsets {
        &self.offsets
    }

    /// The slot positions of the target's version.
    pub(crate) fn layout(&self) -> &'static Layout {
        self.layout
    }

    /// The address of `_PyRuntime`, where `_Py_DebugOffsets` starts.
    pub(crate) fn runtime_address(&self) -> u64 {
        self.runtime
    }

    /// `PyInterpreterState*` of the main interpreter.
    pub(crate) fn main_interpreter(&self) -> u64 {
        self.main_interp
    }

    /// `(PyThreadState*, native tid, is main)` of every thread state of the main
    /// interpreter, newest first.
    pub(crate) fn thread_states(&self) -> Result<Vec<(u64, i32, bool)>, InjectError> {
        let main = self.main_tstate()?;
        let mut states = Vec::new();
        self.walk_threads(|tstate, tid| {
            states.push((tstate, tid, Some(tstate) == main));
            false
        })?;
        Ok(states)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How `_PyRuntime` was found (for diagnostics).
    pub fn runtime_found_by(&self) -> &RuntimeFoundBy {
        &self.found_by
    }

    /// `PY_VERSION_HEX` read from the target.
    pub fn version_hex(&self) -> u64 {
        self.offsets.version.hex
    }

    /// The thread states of the main interpreter, newest first (CPython's list order).
    pub fn threads(&self) -> Result<Vec<PyThread>, InjectError> {
        Ok(self
            .thread_states()?
            .into_iter()
            .map(|(_, native_tid, is_main)| PyThread {
                native_tid,
                is_main,
            })
            .collect())
    }

    /// Schedules `script` (absolute path) to run in the chosen thread; returns its tid.
    pub fn schedule(&self, thread: ThreadChoice, script: &Path) -> Result<i32, InjectError> {
        let payload = self
            .offsets
            .script_path_payload(script.as_os_str().as_bytes())
            .map_err(|problem| path_error(script, problem))?;
        let (tstate, tid) = match thread {
            ThreadChoice::Main => {
                let tstate = self
                    .main_tstate()?
                    .ok_or(InjectError::NoMainThread { pid: self.pid })?;
                (tstate, self.thread_tid(tstate)?)
            }
            ThreadChoice::Tid(tid) => (self.find_tstate(tid)?, tid),
        };
        // CPython's order: the path first, then the flag that makes the target read it,
        // then the eval-breaker bit that makes it look at the flag.
        let path_addr = self.addr(self.offsets.script_path_addr(tstate))?;
        self.write(path_addr, &payload, "writing the script path")?;
        let pending_addr = self.addr(self.offsets.pending_call_addr(tstate))?;
        self.write(
            pending_addr,
            &1i32.to_ne_bytes(),
            "setting the pending flag",
        )?;
        // Read-modify-write from outside is not atomic with the target's own updates of
        // the breaker; CPython accepts the same window (a lost bit delays pickup until the
        // next breaker event, and the flag stays set).
        let breaker_addr = self.addr(self.offsets.eval_breaker_addr(tstate))?;
        let breaker = self.read_u64(breaker_addr, "reading the eval breaker")?;
        let raised = breaker | self.offsets.eval_please_stop_bit;
        self.write(
            breaker_addr,
            &raised.to_ne_bytes(),
            "setting the eval breaker",
        )?;
        Ok(tid)
    }

    /// True while the request written into thread `tid` has not been picked up.
    pub fn is_pending(&self, tid: i32) -> Result<bool, InjectError> {
        let tstate = self.find_tstate(tid)?;
        Ok(self.pending_flag(tstate)? != 0)
    }

    /// Clears a request not yet picked up; returns true if it was still pending (and so
    /// will now never run), false if the target had already taken it. A pickup that races
    /// with the withdrawal is reported as false ("may have run"): the target then ran
    /// either the script or, once the path was blanked, nothing.
    pub fn withdraw(&self, tid: i32) -> Result<bool, InjectError> {
        let tstate = self.find_tstate(tid)?;
        if self.pending_flag(tstate)? == 0 {
            return Ok(false);
        }
        // Blank the path before clearing the flag: the target skips an empty path, so a
        // pickup that races with us from here on runs nothing.
        let path_addr = self.addr(self.offsets.script_path_addr(tstate))?;
        self.write(path_addr, &[0], "clearing the script path")?;
        if self.pending_flag(tstate)? == 0 {
            // Taken between our first look and the blanking: it may have run.
            return Ok(false);
        }
        let pending_addr = self.addr(self.offsets.pending_call_addr(tstate))?;
        self.write(
            pending_addr,
            &0i32.to_ne_bytes(),
            "clearing the pending flag",
        )?;
        Ok(true)
    }

    /// The script path of the request pending in thread `tid` (read before a
    /// withdrawal: the client removes the file pdb left behind for a request that will
    /// now never run). `None` when nothing is pending.
    pub fn pending_script(&self, tid: i32) -> Result<Option<std::path::PathBuf>, InjectError> {
        use std::os::unix::ffi::OsStrExt;
        let tstate = self.find_tstate(tid)?;
        if self.pending_flag(tstate)? == 0 {
            return Ok(None);
        }
        let addr = self.addr(self.offsets.script_path_addr(tstate))?;
        let mut buf = vec![0u8; self.offsets.max_script_path_len() + 1];
        self.memory
            .read(addr, &mut buf)
            .map_err(|e| memory_error(self.pid, e, "reading the script path"))?;
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok((len > 0).then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..len]))))
    }

    /// The native tid of the main interpreter's main thread, if it has one.
    pub fn main_thread_tid(&self) -> Result<Option<i32>, InjectError> {
        match self.main_tstate()? {
            Some(tstate) => Ok(Some(self.thread_tid(tstate)?)),
            None => Ok(None),
        }
    }

    /// Walks `interpreters_head -> next` to the interpreter with id 0. The head is the
    /// newest interpreter, so with a live subinterpreter the main one is further down.
    fn find_main_interpreter(&self, runtime: u64) -> Result<u64, InjectError> {
        let head_addr = self.addr(self.offsets.interpreters_head_addr(runtime))?;
        let mut interp = self.read_u64(head_addr, "reading interpreters.head")?;
        for _ in 0..MAX_WALK {
            if interp == 0 {
                break;
            }
            self.check_pointer(interp, "PyInterpreterState")?;
            let id_addr = self.addr(self.offsets.interp_id_addr(interp))?;
            if self.read_u64(id_addr, "reading an interpreter id")? == 0 {
                return Ok(interp);
            }
            let next_addr = self.addr(self.offsets.interp_next_addr(interp))?;
            interp = self.read_u64(next_addr, "reading interpreter.next")?;
        }
        Err(InjectError::NoMainInterpreter { pid: self.pid })
    }

    fn main_tstate(&self) -> Result<Option<u64>, InjectError> {
        let addr = self.addr(self.offsets.interp_threads_main_addr(self.main_interp))?;
        let tstate = self.read_u64(addr, "reading threads.main")?;
        if tstate == 0 {
            return Ok(None);
        }
        self.check_pointer(tstate, "PyThreadState")?;
        Ok(Some(tstate))
    }

    fn thread_tid(&self, tstate: u64) -> Result<i32, InjectError> {
        let (first, len) = self.offsets.thread_probe();
        let (_, tid) = self.probe_thread(tstate, first, len)?;
        tid_from_raw(self.pid, tid)
    }

    /// Calls `visit(tstate, tid)` for each thread state of the main interpreter until it
    /// returns true.
    fn walk_threads(&self, mut visit: impl FnMut(u64, i32) -> bool) -> Result<(), InjectError> {
        let head_addr = self.addr(self.offsets.interp_threads_head_addr(self.main_interp))?;
        let mut tstate = self.read_u64(head_addr, "reading threads.head")?;
        let (first, len) = self.offsets.thread_probe();
        for _ in 0..MAX_WALK {
            if tstate == 0 {
                return Ok(());
            }
            self.check_pointer(tstate, "PyThreadState")?;
            let (next, raw_tid) = self.probe_thread(tstate, first, len)?;
            if visit(tstate, tid_from_raw(self.pid, raw_tid)?) {
                return Ok(());
            }
            tstate = next;
        }
        Err(InjectError::Memory {
            pid: self.pid,
            detail: format!("the thread list is longer than {MAX_WALK} (corrupt or cyclic)"),
        })
    }

    fn find_tstate(&self, tid: i32) -> Result<u64, InjectError> {
        let mut found = None;
        self.walk_threads(|tstate, thread_tid| {
            if thread_tid == tid {
                found = Some(tstate);
            }
            found.is_some()
        })?;
        found.ok_or(InjectError::NoSuchThread { pid: self.pid, tid })
    }

    fn probe_thread(&self, tstate: u64, first: u64, len: usize) -> Result<(u64, u64), InjectError> {
        let start = self.addr(tstate.checked_add(first))?;
        let mut raw = [0u8; MAX_THREAD_PROBE];
        let buf = raw.get_mut(..len).ok_or_else(|| InjectError::Memory {
            pid: self.pid,
            detail: format!("thread-state probe of {len} bytes is implausibly large"),
        })?;
        self.memory
            .read(start, buf)
            .map_err(|e| memory_error(self.pid, e, "reading a thread state"))?;
        self.offsets
            .parse_thread_probe(buf)
            .ok_or_else(|| InjectError::Memory {
                pid: self.pid,
                detail: "thread-state probe too short".into(),
            })
    }

    fn pending_flag(&self, tstate: u64) -> Result<i32, InjectError> {
        let addr = self.addr(self.offsets.pending_call_addr(tstate))?;
        self.read_i32(addr, "reading the pending flag")
    }

    fn addr(&self, addr: Option<u64>) -> Result<u64, InjectError> {
        addr.ok_or_else(|| InjectError::Memory {
            pid: self.pid,
            detail: "an address computed from the target's data overflows".into(),
        })
    }

    fn check_pointer(&self, value: u64, what: &str) -> Result<(), InjectError> {
        if is_plausible_pointer(value) {
            Ok(())
        } else {
            Err(InjectError::Memory {
                pid: self.pid,
                detail: format!("implausible {what} pointer {value:#x}"),
            })
        }
    }

    fn read_u64(&self, addr: u64, action: &str) -> Result<u64, InjectError> {
        self.memory
            .read_u64(addr)
            .map_err(|e| memory_error(self.pid, e, action))
    }

    fn read_i32(&self, addr: u64, action: &str) -> Result<i32, InjectError> {
        self.memory
            .read_i32(addr)
            .map_err(|e| memory_error(self.pid, e, action))
    }

    fn write(&self, addr: u64, data: &[u8], action: &str) -> Result<(), InjectError> {
        self.memory
            .write(addr, data)
            .map_err(|e: MemoryError| memory_error(self.pid, e, action))
    }
}

/// Reads and validates the `_Py_DebugOffsets` at `runtime`.
fn read_offsets(
    pid: i32,
    memory: &RemoteMemory,
    runtime: u64,
    layout: &Layout,
) -> Result<DebugOffsets, InjectError> {
    let mut raw = vec![0u8; layout.struct_len];
    memory
        .read(runtime, &mut raw)
        .map_err(|e| memory_error(pid, e, "reading _Py_DebugOffsets"))?;
    DebugOffsets::parse(layout, &raw).map_err(|e| offsets_error(pid, e))
}

/// Whether a runtime candidate has an interpreter: false for a second, never-initialised
/// libpython mapping (gh-144563), and for anything this build cannot read. A process that
/// vanished or denies access is an error either way.
fn has_interpreter(
    pid: i32,
    memory: &RemoteMemory,
    found: &FoundRuntime,
) -> Result<bool, InjectError> {
    let Ok(layout) = layout_for(&found.header) else {
        return Ok(false);
    };
    let offsets = match read_offsets(pid, memory, found.address, layout) {
        Ok(offsets) => offsets,
        Err(e @ (InjectError::NoSuchProcess { .. } | InjectError::PermissionDenied { .. })) => {
            return Err(e)
        }
        Err(_) => return Ok(false),
    };
    let Some(head_addr) = offsets.interpreters_head_addr(found.address) else {
        return Ok(false);
    };
    match memory.read_u64(head_addr) {
        Ok(head) => Ok(head != 0),
        Err(MemoryError::Fault { .. }) => Ok(false),
        Err(e) => Err(memory_error(pid, e, "reading interpreters.head")),
    }
}

/// Native thread ids of `pid`'s threads that are running or runnable right now (`R` in
/// `/proc/PID/task/TID/stat`): candidates that will reach an eval-breaker check soon.
pub fn running_threads(pid: i32) -> Vec<i32> {
    crate::io::procfs::running_threads(pid)
}

/// "1234 (main) S in do_sys_poll, 1235 R": what each thread of `pid` is doing.
pub fn describe_threads(pid: i32) -> String {
    let main = PythonProcess::open(pid)
        .ok()
        .and_then(|p| p.main_thread_tid().ok().flatten());
    crate::io::procfs::describe_threads(pid, main)
}

fn tid_from_raw(pid: i32, raw: u64) -> Result<i32, InjectError> {
    i32::try_from(raw).map_err(|_| InjectError::Memory {
        pid,
        detail: format!("implausible native thread id {raw}"),
    })
}

fn offsets_error(pid: i32, error: OffsetsError) -> InjectError {
    match error {
        OffsetsError::Version(VersionProblem::UnknownMinor { found }) => {
            InjectError::UnsupportedVersion {
                pid,
                found: found.to_string(),
                supported: supported_versions(),
            }
        }
        OffsetsError::Version(VersionProblem::UnverifiedPrerelease { found }) => {
            InjectError::UnsupportedVersion {
                pid,
                found: format!("{found} (a pre-release)"),
                supported: supported_versions(),
            }
        }
        OffsetsError::FreeThreaded { .. } => InjectError::FreeThreaded { pid },
        OffsetsError::BadCookie => InjectError::NotPython {
            pid,
            detail: "the runtime lost its xdebugpy cookie".into(),
        },
        OffsetsError::TooShort { need, got } => InjectError::Memory {
            pid,
            detail: format!("_Py_DebugOffsets: read {got} of {need} bytes"),
        },
        OffsetsError::Invalid { field, reason } => InjectError::Memory {
            pid,
            detail: format!("_Py_DebugOffsets.{field} {reason}"),
        },
    }
}

fn path_error(script: &Path, problem: PathProblem) -> InjectError {
    match problem {
        PathProblem::TooLong { len, max } => InjectError::PathTooLong { len, max },
        PathProblem::NotAbsolute => InjectError::InvalidPath {
            path: script.display().to_string(),
            reason: "it must be absolute (the target resolves paths in its own working directory)"
                .into(),
        },
        PathProblem::ContainsNul => InjectError::InvalidPath {
            path: script.display().to_string(),
            reason: "it contains a NUL byte".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_handle_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PythonProcess>();
        assert_send_sync::<InjectError>();
    }

    #[test]
    fn open_refuses_impossible_pids_without_touching_proc() {
        for pid in [0, -1, i32::MIN] {
            assert_eq!(
                PythonProcess::open(pid).unwrap_err(),
                InjectError::NoSuchProcess { pid }
            );
        }
    }

    #[test]
    fn this_test_binary_is_not_python() {
        let error = PythonProcess::open(std::process::id() as i32).unwrap_err();
        assert!(matches!(error, InjectError::NotPython { .. }), "{error:?}");
    }
}
