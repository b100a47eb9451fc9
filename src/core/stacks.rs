//! What the controller reports about the processes of its tree without running any code in
//! them: their Python stacks (read from outside, see `io::stack_reader`), their asyncio
//! tasks, and the process list of `heli-client ps`. Pure data and formatting; the reading
//! lives in `src/io`.
//!
//! These values travel as one JSON line in the replies of the protocol's extensions
//! (`STACK`, `TASKS`, `PS`), so a client prints them without reading any memory itself.
use serde::{Deserialize, Serialize};

/// One Python frame: where a thread is in one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// `co_filename`, as Python prints it in a traceback.
    pub filename: String,
    /// The line being executed; `None` when the location table has no line for it.
    pub line: Option<u32>,
    /// `co_qualname` (or `co_name` where no qualname is available).
    pub function: String,
}

/// Every Python frame of one thread, **innermost first** (the order they are read in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStack {
    /// The native thread id (`threading.get_native_id()`, `/proc/PID/task/TID`).
    pub tid: i32,
    /// The interpreter's main thread.
    pub is_main: bool,
    /// Innermost first; empty for a thread state that runs no Python code right now.
    pub frames: Vec<Frame>,
}

/// Every thread of one Python process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStacks {
    pub pid: i32,
    /// "3.14.2", read from the target.
    pub python_version: String,
    pub threads: Vec<ThreadStack>,
}

/// One asyncio task of a process, as `python -m asyncio ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncTask {
    /// The task object's address, as a stable id within one reading.
    pub id: u64,
    /// `Task.get_name()`.
    pub name: String,
    /// The task's coroutine stack, innermost first.
    pub coroutine_stack: Vec<Frame>,
    /// Ids of the tasks that await this one.
    pub awaited_by: Vec<u64>,
    /// The native thread id whose event loop runs it.
    pub thread: i32,
}
