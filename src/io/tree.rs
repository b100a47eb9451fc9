//! The supervised tree as `/proc` shows it, and the readings the core asks for about it
//! ([`crate::core::tree`] decides what they mean). Everything here is bounded: the walk
//! stops at [`MAX_TREE_PROCESSES`], command lines are cut, and a reading of many
//! processes stops at a time budget, so a question about the tree never holds the
//! controller's loop for long.
use super::inject::{InjectError, PythonProcess, RuntimeSearch};
use super::stack_reader::{read_stacks, read_tasks};
use crate::core::stacks::AsyncTask;
use crate::core::tree::{
    Interpreter, ProcessFacts, StacksOutcome, TreeListing, MAX_TREE_PROCESSES,
};
use crate::pyruntime::version::PyVersion;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long reading the stacks of every process asked for may take; processes not read
/// by then are reported as such.
pub const READING_BUDGET: Duration = Duration::from_secs(2);

/// How long finding the interpreters of the listed processes may take (reading each
/// one's runtime); processes after that are listed without it.
pub const LISTING_BUDGET: Duration = Duration::from_secs(1);

/// Longest command line kept per process, in bytes, and most arguments.
const MAX_CMDLINE_BYTES: usize = 4096;
const MAX_ARGS: usize = 64;

/// Every process below `root` (breadth first from its children: parents before their
/// children, `root` excluded), read from `/proc/PID/task/*/children`.
pub fn list_tree(root: u32) -> TreeListing {
    let mut processes = Vec::new();
    let mut truncated = false;
    let mut queue: VecDeque<u32> = children(root).into();
    let mut seen = std::collections::HashSet::new();
    let started = Instant::now();
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        if processes.len() >= MAX_TREE_PROCESSES {
            truncated = true;
            break;
        }
        // Gone between the two readings: nothing to report.
        let Some(facts) = process_facts(pid, started.elapsed() < LISTING_BUDGET) else {
            continue;
        };
        processes.push(facts);
        queue.extend(children(pid));
    }
    TreeListing {
        root,
        processes,
        truncated,
    }
}

/// The children of every thread of `pid` (a child belongs to the thread that forked it).
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// `read_runtime`: whether there is time left to find its interpreter.
fn process_facts(pid: u32, read_runtime: bool) -> Option<ProcessFacts> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let state = field("State:").unwrap_or_else(|| "?".into());
    // A zombie has no memory to read and no threads: listed as it is.
    let zombie = state.starts_with('Z');
    let ppid = field("PPid:")?.parse().ok()?;
    let threads = field("Threads:").and_then(|t| t.parse().ok()).unwrap_or(0);
    let cmdline = command_line(pid);
    let interpreter = if zombie {
        Interpreter::Unknown {
            why: "a zombie (exited, not yet reaped)".into(),
        }
    } else if !read_runtime {
        Interpreter::Unknown {
            why: format!(
                "not read: the listing's budget of {} ms was spent on the processes before it",
                LISTING_BUDGET.as_millis()
            ),
        }
    } else {
        interpreter_of(pid)
    };
    Some(ProcessFacts {
        pid,
        ppid,
        interpreter,
        threads,
        state,
        cmdline,
    })
}

fn command_line(pid: u32) -> Vec<String> {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    let bytes = &bytes[..bytes.len().min(MAX_CMDLINE_BYTES)];
    let mut args: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args.truncate(MAX_ARGS);
    if args.is_empty() {
        // A kernel thread or a process that cleared its arguments: its name, bracketed.
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            args.push(format!("[{}]", comm.trim()));
        }
    }
    args
}

/// Which CPython (if any) runs in `pid`, from its `_PyRuntime` and debug offsets. Opened
/// for reading only, like the stack reader: a process that opted out of remote
/// debugging refuses injection, but its version and stacks can still be read.
pub fn interpreter_of(pid: u32) -> Interpreter {
    match PythonProcess::open_for_reading(pid as i32, RuntimeSearch::Auto) {
        Ok(process) => Interpreter::Python {
            version: PyVersion::from_hex(process.version_hex()).to_string(),
        },
        Err(InjectError::NotPython { .. }) => Interpreter::NotPython,
        Err(e) => Interpreter::Unknown { why: e.to_string() },
    }
}

/// Reads each pid's stacks in turn until [`READING_BUDGET`] is spent.
pub fn read_all_stacks(pids: &[u32]) -> Vec<StacksOutcome> {
    let started = Instant::now();
    pids.iter()
        .map(|&pid| {
            let outcome = if started.elapsed() >= READING_BUDGET {
                Err(format!(
                    "not read: the reading's budget of {} ms was spent on the processes before it",
                    READING_BUDGET.as_millis()
                ))
            } else {
                read_stacks(pid as i32).map_err(|e| e.to_string())
            };
            StacksOutcome { pid, outcome }
        })
        .collect()
}

pub fn read_asyncio_tasks(pid: u32) -> Result<Vec<AsyncTask>, String> {
    read_tasks(pid as i32).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_child_and_its_grandchild_are_listed_with_their_command_lines() {
        use std::os::unix::process::CommandExt;
        // The grandchild (the inner sh) says "started" once it runs as itself; all of it
        // in a process group of its own, killed at the end.
        let inner = "echo started; sleep 30";
        let mut child = Command::new("sh")
            .args(["-c", &format!("sh -c '{inner}' & wait")])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let me = std::process::id();
        let listing = list_tree(me);
        // SAFETY: kill takes a process group and a signal.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        let shell = listing
            .processes
            .iter()
            .find(|p| p.pid == child.id())
            .expect("the shell is listed");
        assert_eq!(shell.ppid, me);
        assert_eq!(shell.interpreter, Interpreter::NotPython);
        let grandchild = listing
            .processes
            .iter()
            .find(|p| p.ppid == child.id())
            .expect("its child is listed");
        assert_eq!(grandchild.cmdline, ["sh", "-c", inner]);
        assert!(listing.contains(grandchild.pid));
        assert!(!listing.contains(me));
    }
}
