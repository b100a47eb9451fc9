//! Reading another CPython process's stacks and asyncio tasks from its memory, without
//! stopping it or running any code in it (at `ptrace_scope=1` only an ancestor, such as the
//! controller, may). Placeholder API: the reader is being written.
use crate::core::stacks::{AsyncTask, ProcessStacks};

/// Why a reading failed, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackError(pub String);

impl std::fmt::Display for StackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StackError {}

/// Every thread's Python stack of `pid`.
pub fn read_stacks(pid: i32) -> Result<ProcessStacks, StackError> {
    Err(StackError(format!(
        "reading the stacks of pid {pid} is not implemented yet"
    )))
}

/// The asyncio tasks of `pid`.
pub fn read_tasks(pid: i32) -> Result<Vec<AsyncTask>, StackError> {
    Err(StackError(format!(
        "reading the asyncio tasks of pid {pid} is not implemented yet"
    )))
}
