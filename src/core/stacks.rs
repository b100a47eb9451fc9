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

/// One thread's stack as Python prints a traceback: a heading, then outermost first,
/// `  File "...", line N, in func` per frame.
pub fn format_thread(thread: &ThreadStack) -> Vec<String> {
    let main = if thread.is_main { " (main thread)" } else { "" };
    let mut lines = vec![format!(
        "Thread {}{main}, most recent call last:",
        thread.tid
    )];
    if thread.frames.is_empty() {
        lines.push("  (no Python frame: the thread runs no Python code now)".into());
    }
    for frame in thread.frames.iter().rev() {
        let line = frame.line.map_or("?".to_string(), |n| n.to_string());
        lines.push(format!(
            "  File \"{}\", line {line}, in {}",
            frame.filename, frame.function
        ));
    }
    lines
}

/// Every thread of a process, main thread first, as [`format_thread`] prints each.
pub fn format_process(stacks: &ProcessStacks, command: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "Process {} ({command}), Python {}",
        stacks.pid, stacks.python_version
    )];
    let mut threads: Vec<&ThreadStack> = stacks.threads.iter().collect();
    threads.sort_by_key(|t| (!t.is_main, t.tid));
    for thread in threads {
        lines.extend(format_thread(thread));
    }
    lines
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn threads_print_like_a_traceback_outermost_first_main_first() {
        let frame = |file: &str, line, function: &str| Frame {
            filename: file.into(),
            line,
            function: function.into(),
        };
        let stacks = ProcessStacks {
            pid: 40,
            python_version: "3.14.0".into(),
            threads: vec![
                ThreadStack {
                    tid: 42,
                    is_main: false,
                    frames: vec![],
                },
                ThreadStack {
                    tid: 40,
                    is_main: true,
                    frames: vec![
                        frame("/usr/lib/python3.14/time.py", None, "sleep"),
                        frame("/srv/app.py", Some(7), "main"),
                        frame("/srv/app.py", Some(12), "<module>"),
                    ],
                },
            ],
        };
        assert_eq!(
            format_process(&stacks, "python3.14 /srv/app.py"),
            [
                "Process 40 (python3.14 /srv/app.py), Python 3.14.0",
                "Thread 40 (main thread), most recent call last:",
                "  File \"/srv/app.py\", line 12, in <module>",
                "  File \"/srv/app.py\", line 7, in main",
                "  File \"/usr/lib/python3.14/time.py\", line ?, in sleep",
                "Thread 42, most recent call last:",
                "  (no Python frame: the thread runs no Python code now)",
            ]
        );
    }
}
