//! The native stack and task reader against real Python targets (the version under test:
//! `HELI_TEST_PYTHON`), read by this test process, their parent, while they keep running.
//!
//! Expected lines are found in the fixtures' source by their `# marker: NAME` comments,
//! and expected location-table lines are computed by CPython itself (`co_positions`).
//! Synchronisation is by events: each target prints `ready`, and a thread expected in
//! `time.sleep` is awaited in the kernel's wait channel.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use helicopter_parent::core::stacks::{
    is_truncated, local_debugger, AsyncTask, Frame, ThreadStack, MAX_FRAMES,
};
use helicopter_parent::io::stack_reader::{read_stacks, read_tasks};
use helicopter_parent::pyruntime::linetable::line_at;

use crate::support::{
    fixture, output_within, python, reaped_pid, wait_until_asleep, wait_until_waiting_in,
    KillOnDrop, Lines, TIMEOUT,
};

/// Interpreter start-up on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(30);

/// A running target, killed and reaped on drop; its stdin stays open (and silent) as long
/// as the target lives.
struct Target {
    child: Child,
    lines: Lines,
    _stdin: ChildStdin,
}

impl Target {
    fn start(script: &Path) -> Target {
        Target::start_with(&[], script)
    }

    fn start_with(python_args: &[&str], script: &Path) -> Target {
        let mut child = Command::new(python())
            .args(python_args)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn target");
        let lines = Lines::spawn(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        Target {
            child,
            lines,
            _stdin: stdin,
        }
    }

    /// Starts the script and returns the words of its `ready` line after "ready".
    fn ready(script: &Path) -> (Target, Vec<String>) {
        let mut target = Target::start(script);
        let line = target.expect_line("ready", STARTUP);
        let words = line.split_whitespace().skip(1).map(str::to_owned).collect();
        (target, words)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn expect_line(&mut self, prefix: &str, within: Duration) -> String {
        match self.lines.next_starting_with(prefix, within) {
            Some(line) => line,
            None => panic!(
                "target {} printed no line starting with {prefix:?} within {within:?}; seen: {:?}",
                self.pid(),
                self.lines.seen
            ),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stacks_fixture(name: &str) -> PathBuf {
    fixture(&format!("stacks/{name}"))
}

/// The 1-based line of `path` holding `# marker: NAME`.
pub(crate) fn marker_line(path: &Path, name: &str) -> u32 {
    let source = fs::read_to_string(path).unwrap();
    let needle = format!("# marker: {name}");
    let index = source
        .lines()
        .position(|line| line.trim_end().ends_with(&needle))
        .unwrap_or_else(|| panic!("{} has no {needle:?}", path.display()));
    index as u32 + 1
}

/// The lines of `def NAME` in `path`, its `def` line (where a frame that has just
/// started is, on its `RESUME`) to the next top-level statement.
fn function_lines(path: &Path, name: &str) -> Vec<u32> {
    let source = fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("def {name}(")))
        .unwrap();
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.is_empty() && !l.starts_with(' '))
        .map_or(lines.len(), |n| start + 1 + n);
    (start as u32 + 1..=end as u32).collect()
}

fn frame(filename: &Path, line: u32, function: &str) -> Frame {
    Frame {
        filename: filename.display().to_string(),
        line: Some(line),
        function: function.to_owned(),
    }
}

fn thread_by_tid(threads: &[ThreadStack], tid: i32) -> &ThreadStack {
    threads
        .iter()
        .find(|t| t.tid == tid)
        .unwrap_or_else(|| panic!("no thread {tid} in {threads:#?}"))
}

#[test]
fn both_threads_are_read_repeatedly_while_the_worker_keeps_going() {
    let script = stacks_fixture("threads.py");
    let (mut target, words) = Target::ready(&script);
    let pid = target.pid();
    let worker_tid: i32 = words[1].parse().unwrap();
    wait_until_asleep(pid, pid);

    let main_expected = vec![
        frame(&script, marker_line(&script, "main-sleep"), "inner_sleep"),
        frame(&script, marker_line(&script, "main-middle"), "middle"),
        frame(&script, marker_line(&script, "main-outer"), "outer"),
        frame(&script, marker_line(&script, "main-module"), "<module>"),
    ];
    let work_lines = function_lines(&script, "work");
    let step_lines = function_lines(&script, "step");
    let script_name = script.display().to_string();

    let mut last_progress = 0u64;
    for round in 0..5 {
        let stacks = read_stacks(pid).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(stacks.pid, pid);
        assert_eq!(stacks.python_version, words[2], "read from the target");
        assert_eq!(stacks.threads.len(), 2, "{stacks:#?}");
        let main = &stacks.threads[0];
        assert!(main.is_main && main.tid == pid, "{main:#?}");
        assert_eq!(main.frames, main_expected, "round {round}");
        assert_eq!(local_debugger(main), None);

        let worker = thread_by_tid(&stacks.threads, worker_tid);
        assert!(!worker.is_main);
        let ours: Vec<&Frame> = worker
            .frames
            .iter()
            .filter(|f| f.filename == script_name)
            .collect();
        let work = ours
            .iter()
            .find(|f| f.function == "work")
            .unwrap_or_else(|| panic!("no work frame in {worker:#?}"));
        assert!(
            work_lines.contains(&work.line.unwrap()),
            "work at {:?}, its lines are {work_lines:?}",
            work.line
        );
        if ours[0].function == "step" {
            assert!(step_lines.contains(&ours[0].line.unwrap()), "{:?}", ours[0]);
        }
        let outermost = worker.frames.last().unwrap();
        assert!(
            outermost.filename.ends_with("threading.py")
                && outermost.function == "Thread._bootstrap",
            "{outermost:?}"
        );

        // The target was not stopped: its worker reports further progress.
        let line = target.expect_line("progress", TIMEOUT);
        let progress: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(progress > last_progress);
        last_progress = progress;
    }
}

#[test]
fn non_ascii_function_and_file_names_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ünïcødé_名前_𠮷.py");
    fs::copy(stacks_fixture("unicode_names.py"), &script).unwrap();
    let (target, _) = Target::ready(&script);
    wait_until_asleep(target.pid(), target.pid());
    let stacks = read_stacks(target.pid()).unwrap();
    let main = &stacks.threads[0];
    let functions: Vec<&str> = main.frames.iter().map(|f| f.function.as_str()).collect();
    // Latin-1 (1 byte), BMP (2 bytes) and astral (4 bytes) characters.
    assert_eq!(
        functions,
        ["größe_berechnen", "日本語の関数", "𠮷野家", "<module>"]
    );
    assert!(main
        .frames
        .iter()
        .all(|f| f.filename == script.display().to_string()));
    assert_eq!(
        main.frames[0].line,
        Some(marker_line(&script, "latin1-sleep"))
    );
}

#[test]
fn stacks_are_read_with_remote_execution_disabled() {
    // `-X disable-remote-debug` refuses `sys.remote_exec` and our injection; the debug
    // offsets stay, and reading needs nothing else.
    let script = stacks_fixture("deep.py");
    let mut target = Target::start_with(&["-X", "disable-remote-debug"], &script);
    target.expect_line("ready", STARTUP);
    wait_until_asleep(target.pid(), target.pid());
    let stacks = read_stacks(target.pid()).unwrap();
    assert_eq!(
        stacks.threads[0].frames[0],
        frame(&script, marker_line(&script, "deep-sleep"), "recurse")
    );
}

#[test]
fn a_deep_recursion_is_cut_at_the_bound() {
    let script = stacks_fixture("deep.py");
    let (target, _) = Target::ready(&script);
    wait_until_asleep(target.pid(), target.pid());
    let stacks = read_stacks(target.pid()).unwrap();
    let main = &stacks.threads[0];
    assert_eq!(main.frames.len(), MAX_FRAMES);
    assert!(is_truncated(main));
    assert_eq!(
        main.frames[0],
        frame(&script, marker_line(&script, "deep-sleep"), "recurse")
    );
    let call = frame(&script, marker_line(&script, "deep-call"), "recurse");
    assert!(main.frames[1..].iter().all(|f| *f == call));
}

#[test]
fn a_process_that_is_not_python_and_a_dead_pid_are_clear_errors() {
    let sleeper = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(Some(sleeper));
    let pid = guard.0.as_ref().unwrap().id() as i32;
    let error = read_stacks(pid).unwrap_err().to_string();
    assert!(
        error.contains(&format!("process {pid} is not a CPython process")),
        "{error}"
    );
    let dead = reaped_pid() as i32;
    let error = read_stacks(dead).unwrap_err().to_string();
    assert!(
        error.contains(&format!("no such process: {dead}")),
        "{error}"
    );
    let error = read_tasks(dead).unwrap_err().to_string();
    assert!(error.contains("no such process"), "{error}");
}

#[test]
fn an_older_python_is_named_in_the_error() {
    // Any Python before 3.13 has no debug offsets; the machine's own interpreter, if any.
    let Some(old) = ["python3.11", "python3.12", "python3.10"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("-c")
                .arg("")
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "an_older_python_is_named_in_the_error: skipped, no python3.10-3.12 on PATH"
        );
        return;
    };
    let child = Command::new(old)
        .args([
            "-c",
            "import time; print('ready', flush=True); time.sleep(60)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(child));
    let running = guard.0.as_mut().unwrap();
    let mut lines = Lines::spawn(running.stdout.take().unwrap());
    lines.wait_for("ready");
    let pid = running.id() as i32;
    let error = read_stacks(pid).unwrap_err().to_string();
    let version = old.trim_start_matches("python");
    assert!(
        error.contains(&format!("process {pid} runs Python {version}"))
            && error.contains("supported: 3.14, 3.15"),
        "{error}"
    );
}

#[test]
fn a_thread_stopped_in_a_local_breakpoint_is_recognised() {
    let script = stacks_fixture("breakpoint_stdin.py");
    let (mut target, _) = Target::ready(&script);
    // pdb prints where it stopped, then prompts and reads stdin (a silent pipe).
    target.expect_line("->", STARTUP);
    let stopped = frame(&script, marker_line(&script, "breakpoint"), "stopped_here");
    // No event says "pdb is now inside its command loop": read until it is, with a deadline.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stacks = read_stacks(target.pid()).unwrap();
        let main = &stacks.threads[0];
        if let Some(found) = local_debugger(main) {
            assert_eq!(found, stopped, "{main:#?}");
            assert!(main.frames[0].filename.ends_with("cmd.py"));
            break;
        }
        assert!(Instant::now() < deadline, "never in pdb's loop: {main:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn named_asyncio_tasks_and_who_awaits_them_are_read() {
    let script = stacks_fixture("tasks.py");
    let (target, words) = Target::ready(&script);
    let pid = target.pid();
    let side_tid: i32 = words[1].parse().unwrap();
    let side_main = words[2].as_str();
    assert!(side_main.starts_with("Task-"), "{side_main}");
    wait_until_waiting_in(pid, pid, "epoll");
    wait_until_waiting_in(pid, side_tid, "epoll");
    let tasks = read_tasks(pid).unwrap();
    let by_name: HashMap<&str, &AsyncTask> = tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut names: Vec<&str> = by_name.keys().copied().collect();
    names.sort_unstable();
    let mut expected = vec![
        "child",
        "group",
        "leaf-sleeper",
        "lonely",
        "main-task",
        "member-1",
        "member-2",
        "orphan",
        "parent",
        "shared",
        "side-task",
        "waiter-a",
        "waiter-b",
        side_main,
    ];
    expected.sort_unstable();
    assert_eq!(names, expected, "{tasks:#?}");
    assert_eq!(tasks.len(), names.len(), "one entry per task");
    let id = |name: &str| by_name[name].id;
    let awaited_by = |name: &str| {
        let mut ids = by_name[name].awaited_by.clone();
        ids.sort_unstable();
        ids
    };
    let ids = |names: &[&str]| {
        let mut ids: Vec<u64> = names.iter().map(|n| id(n)).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(awaited_by("main-task"), ids(&[]));
    assert_eq!(awaited_by("parent"), ids(&["main-task"]));
    assert_eq!(awaited_by("child"), ids(&["parent"]));
    assert_eq!(awaited_by("leaf-sleeper"), ids(&["child"]));
    assert_eq!(awaited_by("lonely"), ids(&[]));
    // Two waiters: CPython keeps them in a set.
    assert_eq!(awaited_by("shared"), ids(&["waiter-a", "waiter-b"]));
    assert_eq!(awaited_by("member-1"), ids(&["group"]));
    assert_eq!(awaited_by("member-2"), ids(&["group"]));
    assert_eq!(awaited_by("side-task"), ids(&[side_main]));
    for task in &tasks {
        let on_side = task.name == "side-task" || task.name == side_main;
        let expected = match task.name.as_str() {
            // Its thread has exited: no thread.
            "orphan" => 0,
            _ if on_side => side_tid,
            _ => pid,
        };
        assert_eq!(task.thread, expected, "{task:#?}");
    }

    // The leaf's coroutine awaits asyncio.sleep, a coroutine too: innermost first.
    let leaf = &by_name["leaf-sleeper"].coroutine_stack;
    assert_eq!(leaf.len(), 2, "{leaf:#?}");
    assert!(leaf[0].function == "sleep" && leaf[0].filename.ends_with("asyncio/tasks.py"));
    assert_eq!(
        leaf[1],
        frame(&script, marker_line(&script, "leaf-sleep"), "leaf")
    );
    assert_eq!(
        by_name["parent"].coroutine_stack,
        [frame(
            &script,
            marker_line(&script, "parent-await"),
            "parent"
        )]
    );
    assert_eq!(
        by_name["main-task"].coroutine_stack,
        [frame(&script, marker_line(&script, "main-await"), "main")]
    );
}

#[test]
fn a_program_without_asyncio_has_no_tasks_to_read() {
    let script = stacks_fixture("deep.py");
    let (target, _) = Target::ready(&script);
    match read_tasks(target.pid()) {
        // `_asyncio` built into the interpreter (Debian's 3.15): its lists are empty.
        Ok(tasks) => assert_eq!(tasks, []),
        // `_asyncio` a shared module not loaded (Debian's 3.14).
        Err(error) => assert!(
            error.to_string().contains("_asyncio module is not loaded"),
            "{error}"
        ),
    }
}

/// What CPython says each code unit's line is, for every code object compiled from a few
/// real sources (the fixtures and large stdlib modules, with long functions, negative
/// line deltas and lines without location), against this crate's decoder fed the same
/// `co_linetable` bytes.
#[test]
fn linetable_decoding_matches_cpythons_co_positions() {
    const DUMP: &str = r#"
import json, sys, types
def walk(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk(const)
out = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        top = compile(f.read(), path, "exec")
    for code in walk(top):
        out.append({
            "name": code.co_qualname,
            "table": code.co_linetable.hex(),
            "first": code.co_firstlineno,
            "lines": [p[0] for p in code.co_positions()],
        })
json.dump(out, sys.stdout)
"#;
    let stdlib = output_within(
        Command::new(python()).args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ]),
        TIMEOUT,
    );
    let stdlib = PathBuf::from(String::from_utf8(stdlib.stdout).unwrap().trim());
    let sources = [
        stacks_fixture("threads.py"),
        stacks_fixture("unicode_names.py"),
        stdlib.join("pdb.py"),
        stdlib.join("asyncio/tasks.py"),
        stdlib.join("typing.py"),
    ];
    let out = output_within(
        Command::new(python()).arg("-c").arg(DUMP).args(&sources),
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(codes.len() > 500, "only {} code objects", codes.len());
    let mut units = 0;
    let mut without_line = 0;
    for code in &codes {
        let table = hex(code["table"].as_str().unwrap());
        let first = code["first"].as_i64().unwrap();
        for (unit, expected) in code["lines"].as_array().unwrap().iter().enumerate() {
            let ours = line_at(&table, first, unit as u64);
            assert_eq!(ours, expected.as_i64(), "{} unit {unit}", code["name"]);
            units += 1;
            without_line += usize::from(ours.is_none());
        }
    }
    // The comparison covered both kinds of answer.
    assert!(
        units > 50_000 && without_line > 0,
        "{units} units, {without_line} without"
    );
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Threads that start and exit, and stacks that grow and shrink, all the time: every
/// reading succeeds (torn reads are retried) and holds only frames of the target's code.
#[test]
fn stacks_that_never_hold_still_are_read_without_errors() {
    let script = stacks_fixture("churn.py");
    let (target, _) = Target::ready(&script);
    let known = ["down", "gen", "short_lived", "spawner", "<module>"];
    let mut most_threads = 0;
    for round in 0..200 {
        let stacks = read_stacks(target.pid()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(stacks.threads[0].is_main);
        most_threads = most_threads.max(stacks.threads.len());
        for thread in &stacks.threads {
            for frame in &thread.frames {
                let ours = frame.filename == script.display().to_string();
                assert!(
                    (ours && known.contains(&frame.function.as_str()))
                        || frame.filename.ends_with("/threading.py")
                        || frame.filename.ends_with("/random.py"),
                    "round {round}: {frame:?}"
                );
            }
        }
    }
    // The spawner's threads were seen, so the list did change under the reader.
    assert!(most_threads > 2, "at most {most_threads} threads seen");
}
