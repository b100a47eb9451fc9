//! The supervised tree: the target and every process below the keeper, as the edge found
//! them in `/proc`, and the decisions made from those facts: whether a pid belongs to the
//! tree, and what the replies of `PS`, `STACK` and `TASKS` say (bounded in size).
//!
//! The facts arrive as plain (pid, parent pid) links: the tree is "every process whose
//! parent chain reaches the root" (the keeper, a child subreaper, so orphans stay in it).
use super::stacks::{AsyncTask, Frame, ProcessStacks, ThreadStack};
use super::wire::truncate;
use serde::{Deserialize, Serialize};

/// Longest JSON payload of a `PROCESSES`, `STACKS` or `TASKS` reply. A socket client reads
/// replies of at most 64 KiB; the rest of the line (its word, the newline) fits beside it.
pub const MAX_REPLY_JSON: usize = 60 * 1024;

/// How much longer than its usual `--timeout` a client waits for the answer to `PS`,
/// `STACK` or `TASKS`: the controller's readings may take up to about 3 s (1 s finding
/// interpreters, 2 s reading stacks, see `io::tree`).
pub const READING_ALLOWANCE_MS: u64 = 4000;

/// Most processes one listing reports: the walk stops there (and says so).
pub const MAX_TREE_PROCESSES: usize = 256;

/// Whether `pid` is `root`'s descendant according to `links` (pid, parent pid). Bounded
/// by the number of links, so a cycle in inconsistent facts (pids reused mid-reading)
/// cannot loop. `root` itself is not in its tree.
pub fn in_tree(links: &[(u32, u32)], root: u32, pid: u32) -> bool {
    let parent_of = |child: u32| {
        links
            .iter()
            .find(|(p, _)| *p == child)
            .map(|(_, parent)| *parent)
    };
    let mut at = pid;
    for _ in 0..=links.len() {
        match parent_of(at) {
            Some(parent) if parent == root => return true,
            Some(parent) if parent > 1 && parent != at => at = parent,
            Some(_) | None => return false,
        }
    }
    false
}

/// What the edge found out about a process's interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interpreter {
    /// A CPython runtime was found and read: its version ("3.14.2").
    Python { version: String },
    /// No CPython runtime in its memory (a shell, `sleep`, a C program).
    NotPython,
    /// It could not be told (or the runtime cannot be read: remote debugging disabled, an
    /// unsupported version); the text says why.
    Unknown { why: String },
}

impl Interpreter {
    pub fn is_python(&self) -> bool {
        matches!(self, Interpreter::Python { .. })
    }
}

/// One process of the tree, as found in `/proc` (and its runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessFacts {
    pub pid: u32,
    pub ppid: u32,
    pub interpreter: Interpreter,
    pub threads: u32,
    /// `/proc/PID/status`'s `State:`, e.g. "S (sleeping)".
    pub state: String,
    /// `/proc/PID/cmdline`'s arguments (lossy UTF-8, bounded).
    pub cmdline: Vec<String>,
}

/// The whole tree as the edge listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeListing {
    /// The process the tree hangs from (the keeper; the controller once the keeper is gone).
    pub root: u32,
    /// Target first, then parents before their children.
    pub processes: Vec<ProcessFacts>,
    /// More than [`MAX_TREE_PROCESSES`] were there; the rest are not listed.
    #[serde(default)]
    pub truncated: bool,
}

impl TreeListing {
    pub fn links(&self) -> Vec<(u32, u32)> {
        self.processes.iter().map(|p| (p.pid, p.ppid)).collect()
    }

    pub fn contains(&self, pid: u32) -> bool {
        in_tree(&self.links(), self.root, pid)
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessFacts> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// The Python processes, in listing order.
    pub fn python_pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|p| p.interpreter.is_python())
            .map(|p| p.pid)
            .collect()
    }
}

/// One process's stacks, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StacksOutcome {
    pub pid: u32,
    pub outcome: Result<ProcessStacks, String>,
}

/// One thread's innermost Python frame, for `PS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadTop {
    pub tid: i32,
    pub is_main: bool,
    /// `None` when the thread runs no Python code right now.
    pub frame: Option<Frame>,
}

/// One line of `PS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsEntry {
    #[serde(flatten)]
    pub facts: ProcessFacts,
    /// Each thread's innermost frame (Python processes whose stacks could be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<Vec<ThreadTop>>,
    /// Why the frames are missing, for a Python process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_error: Option<String>,
}

/// The payload of `PROCESSES <json>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsReport {
    pub target: u32,
    pub processes: Vec<PsEntry>,
    #[serde(default)]
    pub truncated: bool,
}

/// One process in `STACKS <json>`: its threads, or why they are missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackEntry {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<ProcessStacks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The payload of `STACKS <json>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StacksReport {
    pub target: u32,
    pub processes: Vec<StackEntry>,
    #[serde(default)]
    pub truncated: bool,
}

/// The payload of `TASKS <json>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasksReport {
    pub pid: u32,
    pub tasks: Vec<AsyncTask>,
    #[serde(default)]
    pub truncated: bool,
}

/// `PS`'s payload from the listing and the stacks read for its Python processes.
pub fn ps_report(target: u32, listing: &TreeListing, stacks: &[StacksOutcome]) -> PsReport {
    let processes = listing
        .processes
        .iter()
        .map(|facts| {
            let read = stacks.iter().find(|s| s.pid == facts.pid);
            let (frames, frames_error) = match read.map(|s| &s.outcome) {
                Some(Ok(stacks)) => (Some(stacks.threads.iter().map(top_of).collect()), None),
                Some(Err(why)) => (None, Some(why.clone())),
                None => (None, None),
            };
            PsEntry {
                facts: facts.clone(),
                frames,
                frames_error,
            }
        })
        .collect();
    PsReport {
        target,
        processes,
        truncated: listing.truncated,
    }
}

fn top_of(thread: &ThreadStack) -> ThreadTop {
    ThreadTop {
        tid: thread.tid,
        is_main: thread.is_main,
        frame: thread.frames.first().cloned(),
    }
}

/// `STACKS`'s payload: every process asked for, in listing order.
pub fn stacks_report(target: u32, listing: &TreeListing, stacks: &[StacksOutcome]) -> StacksReport {
    let processes = stacks
        .iter()
        .map(|read| {
            let cmdline = listing
                .get(read.pid)
                .map(|p| p.cmdline.clone())
                .unwrap_or_default();
            match &read.outcome {
                Ok(stacks) => StackEntry {
                    pid: read.pid,
                    cmdline,
                    stacks: Some(stacks.clone()),
                    error: None,
                },
                Err(why) => StackEntry {
                    pid: read.pid,
                    cmdline,
                    stacks: None,
                    error: Some(why.clone()),
                },
            }
        })
        .collect();
    StacksReport {
        target,
        processes,
        truncated: listing.truncated,
    }
}

/// Serialises `report`, shrinking it with `shrink` (which marks it truncated and returns
/// false once nothing is left to drop) until the JSON fits [`MAX_REPLY_JSON`].
fn bounded_json<T: Serialize>(mut report: T, mut shrink: impl FnMut(&mut T) -> bool) -> String {
    loop {
        let json = serde_json::to_string(&report).unwrap_or_else(|e| {
            format!("{{\"error\":\"the report could not be serialised: {e}\"}}")
        });
        if json.len() <= MAX_REPLY_JSON || !shrink(&mut report) {
            return json;
        }
    }
}

/// Halves the longest list of frames (outermost frames go first: the innermost say where
/// the thread is); false when every thread is down to one frame.
fn shrink_frames<'a>(threads: impl Iterator<Item = &'a mut ThreadStack>) -> bool {
    let Some(longest) = threads.max_by_key(|t| t.frames.len()) else {
        return false;
    };
    if longest.frames.len() <= 1 {
        return false;
    }
    let keep = longest.frames.len() / 2;
    longest.frames.truncate(keep);
    true
}

/// The longest argument a cut-down `PS` reply keeps whole, in characters.
const MAX_ARG_CHARS: usize = 64;

pub fn ps_json(report: PsReport) -> String {
    bounded_json(report, |r| {
        r.truncated = true;
        // Frames first, then whole processes from the end (the target is listed first).
        let with_frames = r.processes.iter_mut().rev().find(|p| p.frames.is_some());
        if let Some(entry) = with_frames {
            entry.frames = None;
            entry.frames_error = Some("left out: the reply was too long".into());
            return true;
        }
        for entry in r.processes.iter_mut() {
            // Counted in characters, and cut so that the result (ellipsis included) is
            // within the bound: a cut argument must not qualify again, or this would
            // "shrink" it forever without the reply getting shorter.
            let cmdline = &mut entry.facts.cmdline;
            if cmdline.len() > 1 || cmdline.iter().any(|a| a.chars().count() > MAX_ARG_CHARS) {
                cmdline.truncate(1);
                if let Some(first) = cmdline.first_mut() {
                    if first.chars().count() > MAX_ARG_CHARS {
                        *first = truncate(first, MAX_ARG_CHARS - 1);
                    }
                }
                return true;
            }
        }
        r.processes.len() > 1 && r.processes.pop().is_some()
    })
}

pub fn stacks_json(report: StacksReport) -> String {
    bounded_json(report, |r| {
        r.truncated = true;
        let threads = r
            .processes
            .iter_mut()
            .filter_map(|p| p.stacks.as_mut())
            .flat_map(|s| s.threads.iter_mut());
        if shrink_frames(threads) {
            return true;
        }
        r.processes.len() > 1 && r.processes.pop().is_some()
    })
}

pub fn tasks_json(report: TasksReport) -> String {
    bounded_json(report, |r| {
        r.truncated = true;
        let longest = r.tasks.iter_mut().max_by_key(|t| t.coroutine_stack.len());
        if let Some(task) = longest.filter(|t| t.coroutine_stack.len() > 1) {
            let keep = task.coroutine_stack.len() / 2;
            task.coroutine_stack.truncate(keep);
            return true;
        }
        r.tasks.pop().is_some()
    })
}

/// What a reply to `PS`, `STACK` or `TASKS` says, printed for a person: the lines, or
/// why there are none (an `ERROR:` reply, another reply, unreadable JSON).
pub fn render_answer(reply: &super::wire::Reply) -> Result<Vec<String>, String> {
    use super::wire::Reply;
    let bad_json = |what: &str, e: serde_json::Error| {
        format!("the controller's {what} reply is not readable: {e}")
    };
    match reply {
        Reply::Processes(json) => serde_json::from_str::<PsReport>(json)
            .map(|r| render_ps(&r))
            .map_err(|e| bad_json("PROCESSES", e)),
        Reply::Stacks(json) => serde_json::from_str::<StacksReport>(json)
            .map(|r| render_stacks(&r))
            .map_err(|e| bad_json("STACKS", e)),
        Reply::Tasks(json) => serde_json::from_str::<TasksReport>(json)
            .map(|r| render_tasks(&r))
            .map_err(|e| bad_json("TASKS", e)),
        Reply::Error(message) => Err(format!("Controller error: {message}")),
        other @ (Reply::TargetPid(_) | Reply::Ready | Reply::Waiting(_)) => {
            Err(format!("unexpected reply from the controller: {other}"))
        }
    }
}

fn command_of(cmdline: &[String]) -> String {
    if cmdline.is_empty() {
        "(no command line)".into()
    } else {
        cmdline.join(" ")
    }
}

/// `heli-client ps`: a header, one line per process, and under a Python process one line
/// per thread with its innermost frame (`file:line function`).
pub fn render_ps(report: &PsReport) -> Vec<String> {
    let mut lines = vec![format!(
        "{:>7} {:>7}  {:<12} {:>7}  {:<15} COMMAND",
        "PID", "PPID", "PYTHON", "THREADS", "STATE"
    )];
    for entry in &report.processes {
        let p = &entry.facts;
        let python = match &p.interpreter {
            Interpreter::Python { version } => version.clone(),
            Interpreter::NotPython => "not Python".into(),
            Interpreter::Unknown { .. } => "unknown".into(),
        };
        let target = if p.pid == report.target {
            " [target]"
        } else {
            ""
        };
        lines.push(format!(
            "{:>7} {:>7}  {:<12} {:>7}  {:<15} {}{target}",
            p.pid,
            p.ppid,
            python,
            p.threads,
            p.state,
            command_of(&p.cmdline)
        ));
        if let Interpreter::Unknown { why } = &p.interpreter {
            lines.push(format!("{:17}(runtime not readable: {why})", ""));
        }
        if let Some(why) = &entry.frames_error {
            lines.push(format!("{:17}(frames not read: {why})", ""));
        }
        for top in entry.frames.iter().flatten() {
            let main = if top.is_main { " (main)" } else { "" };
            let frame = match &top.frame {
                Some(f) => format!(
                    "{}:{} {}",
                    f.filename,
                    f.line.map_or("?".into(), |n| n.to_string()),
                    f.function
                ),
                None => "(no Python frame)".into(),
            };
            lines.push(format!("{:17}thread {}{main}: {frame}", "", top.tid));
        }
    }
    if report.truncated {
        lines.push("(truncated: the tree has more than the reply could carry)".into());
    }
    lines
}

/// `heli-client stack`: each process's threads as tracebacks, a blank line between.
pub fn render_stacks(report: &StacksReport) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, entry) in report.processes.iter().enumerate() {
        if i > 0 {
            lines.push(String::new());
        }
        match (&entry.stacks, &entry.error) {
            (Some(stacks), _) => lines.extend(super::stacks::format_process(
                stacks,
                &command_of(&entry.cmdline),
            )),
            (None, why) => lines.push(format!(
                "Process {} ({}): stacks not read: {}",
                entry.pid,
                command_of(&entry.cmdline),
                why.as_deref().unwrap_or("no reason given")
            )),
        }
    }
    if report.truncated {
        lines.push("(truncated: outer frames or processes were left out of the reply)".into());
    }
    lines
}

/// `heli-client tasks`: one line per task, as `python -m asyncio ps` lists them.
pub fn render_tasks(report: &TasksReport) -> Vec<String> {
    if report.tasks.is_empty() {
        return vec![format!("pid {}: no asyncio tasks", report.pid)];
    }
    let mut lines = vec![format!(
        "{:>7}  {:<18} {:<20} {:<40} AWAITED BY",
        "TID", "TASK ID", "NAME", "COROUTINE STACK"
    )];
    for task in &report.tasks {
        let stack: Vec<&str> = task
            .coroutine_stack
            .iter()
            .rev()
            .map(|f| f.function.as_str())
            .collect();
        let awaited_by: Vec<String> = task
            .awaited_by
            .iter()
            .map(|id| {
                // An awaiter is named when it is among the tasks read (it may have
                // finished, or live in a loop of a thread that exited).
                match report.tasks.iter().find(|t| t.id == *id) {
                    Some(awaiter) => format!("{} ({id:#x})", awaiter.name),
                    None => format!("{id:#x}"),
                }
            })
            .collect();
        lines.push(format!(
            "{:>7}  {:<18} {:<20} {:<40} {}",
            task.thread,
            format!("{:#x}", task.id),
            task.name,
            stack.join(" -> "),
            awaited_by.join(", ")
        ));
    }
    if report.truncated {
        lines.push("(truncated)".into());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    //  1 ── 50 (root, the keeper) ── 100 (target) ── 101 ── 102
    //                               └── 200 (an orphan reparented to the keeper)
    //  1 ── 300 (elsewhere)
    const LINKS: [(u32, u32); 6] = [
        (50, 1),
        (100, 50),
        (101, 100),
        (102, 101),
        (200, 50),
        (300, 1),
    ];

    #[test]
    fn descendants_of_the_root_are_in_its_tree() {
        for pid in [100, 101, 102, 200] {
            assert!(in_tree(&LINKS, 50, pid), "{pid}");
        }
    }

    #[test]
    fn the_root_strangers_and_unknown_pids_are_not() {
        for pid in [50, 300, 1, 999] {
            assert!(!in_tree(&LINKS, 50, pid), "{pid}");
        }
    }

    #[test]
    fn a_cycle_in_inconsistent_facts_ends() {
        assert!(!in_tree(&[(7, 8), (8, 7)], 50, 7));
        assert!(!in_tree(&[(7, 7)], 50, 7));
    }

    fn facts(pid: u32, ppid: u32, python: bool) -> ProcessFacts {
        ProcessFacts {
            pid,
            ppid,
            interpreter: if python {
                Interpreter::Python {
                    version: "3.14.0".into(),
                }
            } else {
                Interpreter::NotPython
            },
            threads: 1,
            state: "S (sleeping)".into(),
            cmdline: vec!["python3.14".into(), "x".repeat(300)],
        }
    }

    fn deep_stack(pid: u32, depth: usize) -> ProcessStacks {
        ProcessStacks {
            pid: pid as i32,
            python_version: "3.14.0".into(),
            threads: vec![ThreadStack {
                tid: pid as i32,
                is_main: true,
                frames: (0..depth)
                    .map(|i| Frame {
                        filename: format!("/srv/app/module_{i}.py"),
                        line: Some(i as u32),
                        function: format!("function_{i}"),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn ps_takes_each_threads_innermost_frame_and_the_reading_errors() {
        let listing = TreeListing {
            root: 50,
            processes: vec![
                facts(100, 50, true),
                facts(101, 100, true),
                facts(102, 101, false),
            ],
            truncated: false,
        };
        assert_eq!(listing.python_pids(), vec![100, 101]);
        let stacks = [
            StacksOutcome {
                pid: 100,
                outcome: Ok(deep_stack(100, 3)),
            },
            StacksOutcome {
                pid: 101,
                outcome: Err("gone".into()),
            },
        ];
        let report = ps_report(100, &listing, &stacks);
        let tops = report.processes[0].frames.as_ref().unwrap();
        assert_eq!(tops[0].frame.as_ref().unwrap().function, "function_0");
        assert_eq!(report.processes[1].frames_error.as_deref(), Some("gone"));
        assert_eq!(report.processes[2].frames, None);
        let json = ps_json(report.clone());
        let back: PsReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn oversized_reports_are_cut_to_the_bound_and_say_so() {
        let listing = TreeListing {
            root: 50,
            processes: (0..200).map(|i| facts(1000 + i, 50, true)).collect(),
            truncated: false,
        };
        let stacks: Vec<StacksOutcome> = (0..200)
            .map(|i| StacksOutcome {
                pid: 1000 + i,
                outcome: Ok(deep_stack(1000 + i, 400)),
            })
            .collect();
        let json = stacks_json(stacks_report(100, &listing, &stacks));
        assert!(json.len() <= MAX_REPLY_JSON, "{}", json.len());
        let back: StacksReport = serde_json::from_str(&json).unwrap();
        assert!(back.truncated);
        // Innermost frames are kept.
        let first = &back.processes[0].stacks.as_ref().unwrap().threads[0].frames;
        assert_eq!(first[0].function, "function_0");

        let json = ps_json(ps_report(100, &listing, &stacks));
        assert!(json.len() <= MAX_REPLY_JSON, "{}", json.len());
        assert!(serde_json::from_str::<PsReport>(&json).unwrap().truncated);
    }

    /// A full tree (as many processes as a listing holds) whose commands start with long
    /// arguments (a virtualenv's interpreter, non-ASCII paths): the reply takes many cuts.
    /// A cut that left its argument "too long" made every later step cut it again, and
    /// the reply never shrank: `PS` hung the controller. Run on a thread with a deadline,
    /// so that a regression fails instead of hanging.
    #[test]
    fn long_first_arguments_are_cut_once_and_the_reply_still_ends() {
        let long_ascii = format!("/srv/app/.venv/bin/{}", "p".repeat(1000));
        let non_ascii = "é".repeat(40); // 40 characters, 80 bytes: within the bound
        let listing = TreeListing {
            root: 50,
            processes: (0..MAX_TREE_PROCESSES as u32)
                .map(|i| {
                    let mut f = facts(1000 + i, 50, false);
                    f.cmdline = if i % 2 == 0 {
                        vec![long_ascii.clone()]
                    } else {
                        vec![non_ascii.clone(), "x".repeat(1000)]
                    };
                    f
                })
                .collect(),
            truncated: false,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ps_json(ps_report(100, &listing, &[])));
        });
        let json = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("ps_json did not finish");
        assert!(json.len() <= MAX_REPLY_JSON, "{}", json.len());
        let back: PsReport = serde_json::from_str(&json).unwrap();
        assert!(back.truncated);
        let first = &back.processes[0].facts.cmdline;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].chars().count(), MAX_ARG_CHARS, "{}", first[0]);
        assert!(first[0].starts_with("/srv/app/.venv/bin/pp") && first[0].ends_with('…'));
        let second = &back.processes[1].facts.cmdline;
        assert_eq!(second, &vec![non_ascii.clone()]);
    }
}

#[cfg(test)]
mod render_tasks_tests {
    use super::*;
    use crate::core::stacks::Frame;

    fn task(id: u64, name: &str, functions: &[&str], awaited_by: &[u64]) -> AsyncTask {
        AsyncTask {
            id,
            name: name.into(),
            // Read innermost first.
            coroutine_stack: functions
                .iter()
                .rev()
                .map(|f| Frame {
                    filename: "/app/a.py".into(),
                    line: Some(1),
                    function: (*f).into(),
                })
                .collect(),
            awaited_by: awaited_by.to_vec(),
            thread: 7,
        }
    }

    #[test]
    fn tasks_show_their_stack_outermost_first_and_name_their_awaiters() {
        let lines = render_tasks(&TasksReport {
            pid: 7,
            tasks: vec![
                task(0x10, "main-task", &["main"], &[]),
                task(0x20, "child", &["child", "leaf"], &[0x10, 0x99]),
            ],
            truncated: false,
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[2].contains("child -> leaf"), "{}", lines[2]);
        assert!(lines[2].ends_with("main-task (0x10), 0x99"), "{}", lines[2]);
        assert_eq!(
            render_tasks(&TasksReport {
                pid: 7,
                tasks: vec![],
                truncated: false
            }),
            ["pid 7: no asyncio tasks"]
        );
    }
}
