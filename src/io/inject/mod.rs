//! Native PEP 768 remote execution: make a CPython 3.14 process run a script file, done by
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
use std::fmt;
use std::path::Path;

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

/// An attached-to (not stopped) CPython process whose runtime was located and validated.
#[derive(Debug)]
pub struct PythonProcess {
    _private: (),
}

impl PythonProcess {
    pub fn open(_pid: i32) -> Result<PythonProcess, InjectError> {
        todo!("issue 3")
    }
    pub fn pid(&self) -> i32 {
        todo!("issue 3")
    }
    /// `PY_VERSION_HEX` read from the target.
    pub fn version_hex(&self) -> u64 {
        todo!("issue 3")
    }
    pub fn threads(&self) -> Result<Vec<PyThread>, InjectError> {
        todo!("issue 3")
    }
    /// Schedules `script` (absolute path) to run in the chosen thread; returns its tid.
    pub fn schedule(&self, _thread: ThreadChoice, _script: &Path) -> Result<i32, InjectError> {
        todo!("issue 3")
    }
    /// True while the request written into thread `tid` has not been picked up.
    pub fn is_pending(&self, _tid: i32) -> Result<bool, InjectError> {
        todo!("issue 3")
    }
    /// Clears a request not yet picked up; returns true if it was still pending (and so
    /// will now never run), false if the target had already taken it.
    pub fn withdraw(&self, _tid: i32) -> Result<bool, InjectError> {
        todo!("issue 3")
    }
}

/// Native thread ids of `pid`'s threads that are running or runnable right now (`R` in
/// `/proc/PID/task/TID/stat`): candidates that will reach an eval-breaker check soon.
pub fn running_threads(_pid: i32) -> Vec<i32> {
    todo!("issue 3")
}

/// Why an injection could not be done; every message says what the user can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectError {
    NoSuchProcess {
        pid: i32,
    },
    NotPython {
        pid: i32,
        detail: String,
    },
    UnsupportedVersion {
        pid: i32,
        found: String,
        supported: String,
    },
    RemoteDebugDisabled {
        pid: i32,
    },
    PermissionDenied {
        pid: i32,
        detail: String,
    },
    FreeThreaded {
        pid: i32,
    },
    PathTooLong {
        len: usize,
        max: usize,
    },
    NoSuchThread {
        pid: i32,
        tid: i32,
    },
    Memory {
        pid: i32,
        detail: String,
    },
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for InjectError {}
