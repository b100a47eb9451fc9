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
    if is_truncated(thread) {
        lines.push(format!(
            "  ... outer frames not read (deeper than {MAX_FRAMES})"
        ));
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

/// Whether a thread is stopped at a *remote* pdb session's prompt (`python -m pdb -p`):
/// pdb's server (`_PdbServer`, in `pdb.py`) runs its command loop on the thread, talking
/// to the client. Not while the server is being set up (`_PdbServer.__init__`, called by
/// the injected script before the debugger has stopped anywhere).
pub fn in_remote_debugger(thread: &ThreadStack) -> bool {
    thread
        .frames
        .iter()
        .any(|f| is_debugger_frame(f) && f.function == "_PdbServer.cmdloop")
}

/// Whether pdb's own code runs on this thread: a frame of pdb's modules anywhere on its
/// stack. While `python -m pdb -p` attaches, its script (compiled from a string, so its
/// own frame is just `<string>`) imports pdb and calls into it until the debugger is
/// armed; a SIGURG then would call the handler from inside that code, and pdb, already
/// tracing, would stop in the handler with its own `bdb.py` as the caller, where `up`
/// shows pdb and not the program (seen on a loaded machine).
pub fn runs_pdb_code(thread: &ThreadStack) -> bool {
    thread.frames.iter().any(is_debugger_frame)
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
    fn a_remote_session_is_recognised_by_pdbs_server_on_the_stack() {
        let mut remote = pdb_waiting(frame("/app/x.py", 1, "f"));
        assert!(!in_remote_debugger(&thread(remote.clone())));
        remote.insert(
            1,
            frame(&format!("{LIB}/pdb.py"), 2925, "_PdbServer.cmdloop"),
        );
        assert!(in_remote_debugger(&thread(remote)));
        // Being set up by pdb's injected script is not being at its prompt.
        assert!(!in_remote_debugger(&thread(vec![
            frame(&format!("{LIB}/pdb.py"), 2740, "_PdbServer.__init__"),
            frame(&format!("{LIB}/pdb.py"), 3100, "_connect"),
        ])));
        // A program's own class of that name elsewhere is not pdb's.
        assert!(!in_remote_debugger(&thread(vec![frame(
            "/app/server.py",
            3,
            "_PdbServer.cmdloop"
        )])));
    }

    #[test]
    fn pdbs_attach_at_work_is_told_by_its_modules_on_the_stack() {
        let waiting = thread(vec![
            frame("/app/queue_worker.py", 13, "consume"),
            frame("/app/queue_worker.py", 20, "<module>"),
        ]);
        assert!(!runs_pdb_code(&waiting));
        // pdb's script connecting back: its own frame is `<string>`, pdb's are above it.
        let connecting = thread(vec![
            frame(&format!("{LIB}/socket.py"), 840, "create_connection"),
            frame(&format!("{LIB}/pdb.py"), 3390, "_connect"),
            frame("<string>", 3, "<module>"),
            frame("<helicopter-parent: SIGURG woke this thread>", 3, "woke"),
            frame("/app/queue_worker.py", 13, "consume"),
        ]);
        assert!(runs_pdb_code(&connecting));
        // A program's own `<string>` code (`python -c`, a spawn child) is not pdb's.
        assert!(!runs_pdb_code(&thread(vec![
            frame(
                &format!("{LIB}/multiprocessing/connection.py"),
                395,
                "_recv"
            ),
            frame("<string>", 1, "<module>"),
        ])));
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

    #[test]
    fn a_cut_stack_says_so() {
        let deep = thread(vec![frame("/r.py", 2, "r"); MAX_FRAMES]);
        assert!(is_truncated(&deep));
        let text = format_thread(&deep).join("\n");
        assert!(text.contains("outer frames not read"), "{text}");
    }
}
