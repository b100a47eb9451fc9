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
    /// The native thread id whose event loop runs it; 0 when that thread has exited
    /// (CPython keeps such tasks in the interpreter's own list).
    pub thread: i32,
}

/// A reader stops after this many frames per thread (a deep or runaway recursion, or a
/// frame chain that loops): the innermost ones are kept.
pub const MAX_FRAMES: usize = 2048;

/// Whether a thread's stack was cut at [`MAX_FRAMES`] (its outermost frames are missing).
pub fn is_truncated(thread: &ThreadStack) -> bool {
    thread.frames.len() >= MAX_FRAMES
}

/// Every thread as Python prints a traceback: outermost frame first, each as
/// `  File "x.py", line 12, in func`, under a `Thread 1234 (main):` heading.
pub fn format_traceback(stacks: &ProcessStacks) -> String {
    let mut out = String::new();
    for thread in &stacks.threads {
        let main = if thread.is_main { " (main)" } else { "" };
        out.push_str(&format!("Thread {}{main}:\n", thread.tid));
        if thread.frames.is_empty() {
            out.push_str("  (no Python frames)\n");
        }
        if is_truncated(thread) {
            out.push_str(&format!(
                "  ... outer frames not read (deeper than {MAX_FRAMES})\n"
            ));
        }
        for frame in thread.frames.iter().rev() {
            let line = match frame.line {
                Some(line) => line.to_string(),
                None => "?".to_owned(),
            };
            out.push_str(&format!(
                "  File \"{}\", line {line}, in {}\n",
                frame.filename, frame.function
            ));
        }
    }
    out
}

/// The modules a local pdb session runs in while it waits for a command.
const DEBUGGER_FILES: [&str; 3] = ["pdb.py", "bdb.py", "cmd.py"];

fn is_debugger_frame(frame: &Frame) -> bool {
    let basename = frame.filename.rsplit('/').next().unwrap_or(&frame.filename);
    DEBUGGER_FILES.contains(&basename)
}

/// The user frame where a thread sits stopped in a *local* pdb (`breakpoint()`,
/// `pdb.set_trace()`), waiting for a command on its own terminal; `None` otherwise.
///
/// Recognised from the frames alone: the innermost frames are pdb's command loop
/// (`Cmd.cmdloop` in `cmd.py`, called from `Pdb.interaction` in `pdb.py`, via `bdb.py`'s
/// dispatch), and the first frame outside those modules is where the program stopped. A
/// remote pdb session (`python -m pdb -p`) runs `_PdbServer`, which waits on its socket,
/// not on a terminal: that is not a local debugger.
pub fn local_debugger(thread: &ThreadStack) -> Option<Frame> {
    let debugger = thread
        .frames
        .iter()
        .take_while(|frame| is_debugger_frame(frame))
        .collect::<Vec<_>>();
    let waits_for_command = debugger
        .iter()
        .any(|f| f.function == "Cmd.cmdloop" && f.filename.ends_with("cmd.py"));
    let interacts = debugger
        .iter()
        .any(|f| f.function == "Pdb.interaction" && f.filename.ends_with("pdb.py"));
    let remote = debugger
        .iter()
        .any(|f| f.function.starts_with("_PdbServer."));
    if !(waits_for_command && interacts) || remote {
        return None;
    }
    thread.frames.get(debugger.len()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(filename: &str, line: u32, function: &str) -> Frame {
        Frame {
            filename: filename.into(),
            line: Some(line),
            function: function.into(),
        }
    }

    fn thread(frames: Vec<Frame>) -> ThreadStack {
        ThreadStack {
            tid: 42,
            is_main: true,
            frames,
        }
    }

    const LIB: &str = "/usr/lib/python3.14";

    fn pdb_waiting(user: Frame) -> Vec<Frame> {
        vec![
            frame(&format!("{LIB}/cmd.py"), 146, "Cmd.cmdloop"),
            frame(&format!("{LIB}/pdb.py"), 615, "Pdb._cmdloop"),
            frame(&format!("{LIB}/pdb.py"), 760, "Pdb.interaction"),
            frame(&format!("{LIB}/pdb.py"), 560, "Pdb.user_line"),
            frame(&format!("{LIB}/bdb.py"), 120, "Bdb.dispatch_line"),
            frame(&format!("{LIB}/bdb.py"), 99, "Bdb.trace_dispatch"),
            user,
            frame("/app/main.py", 30, "<module>"),
        ]
    }

    #[test]
    fn a_thread_in_pdbs_command_loop_is_stopped_at_the_first_user_frame() {
        let user = frame("/app/work.py", 12, "compute");
        assert_eq!(
            local_debugger(&thread(pdb_waiting(user.clone()))),
            Some(user)
        );
    }

    #[test]
    fn other_threads_and_remote_sessions_are_not_local_debuggers() {
        let busy = thread(vec![
            frame("/app/work.py", 12, "compute"),
            frame("/app/main.py", 30, "<module>"),
        ]);
        assert_eq!(local_debugger(&busy), None);
        assert_eq!(local_debugger(&thread(Vec::new())), None);
        // pdb frames further out (a program that *imports* pdb and calls into it) do not
        // count: the command loop must be innermost.
        let mut outer = vec![frame("/app/work.py", 3, "sleepy")];
        outer.extend(pdb_waiting(frame("/app/x.py", 1, "f")));
        assert_eq!(local_debugger(&thread(outer)), None);
        let mut remote = pdb_waiting(frame("/app/x.py", 1, "f"));
        remote.insert(
            1,
            frame(&format!("{LIB}/pdb.py"), 2925, "_PdbServer.cmdloop"),
        );
        assert_eq!(local_debugger(&thread(remote)), None);
    }

    #[test]
    fn traceback_lists_outermost_first_under_a_thread_heading() {
        let stacks = ProcessStacks {
            pid: 7,
            python_version: "3.14.10".into(),
            threads: vec![
                thread(vec![
                    frame("/app/work.py", 12, "compute"),
                    Frame {
                        filename: "/app/main.py".into(),
                        line: None,
                        function: "<module>".into(),
                    },
                ]),
                ThreadStack {
                    tid: 43,
                    is_main: false,
                    frames: Vec::new(),
                },
            ],
        };
        assert_eq!(
            format_traceback(&stacks),
            "Thread 42 (main):\n  File \"/app/main.py\", line ?, in <module>\n  File \
             \"/app/work.py\", line 12, in compute\nThread 43:\n  (no Python frames)\n"
        );
    }

    #[test]
    fn a_cut_stack_says_so() {
        let deep = thread(vec![frame("/r.py", 2, "r"); MAX_FRAMES]);
        assert!(is_truncated(&deep));
        let text = format_traceback(&ProcessStacks {
            pid: 1,
            python_version: "3.15.2".into(),
            threads: vec![deep],
        });
        assert!(text.contains("outer frames not read"), "{text}");
    }
}
