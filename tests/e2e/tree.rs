//! The supervised tree from the client's side (issue 11): `ps`, `stack`, `tasks`,
//! `terminate` and scripted `attach -c` one-shots, the protocol's `PS`/`STACK`/`TASKS`
//! lines on the FIFOs and the socket, and several named controllers side by side.
use crate::support::*;
use crate::tree_stop::{Tree, TREE_GONE_WITHIN};
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::supervisor::ControllerExit;
use helicopter_parent::core::tree::{Interpreter, PsReport};
use helicopter_parent::io::socket_exchange::exchange_socket_raw;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `heli-client --pipe-dir DIR ARGS...`, bounded.
fn client(dir: &std::path::Path, args: &[&str]) -> Output {
    output_within(
        Command::new(bin("heli-client"))
            .arg("--pipe-dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null()),
        TIMEOUT,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn pool_controller() -> Controller {
    let mut controller = Controller::start("pool_workers.py");
    controller.stdout.wait_for("pool ready: 3 workers answered");
    controller
}

/// The forkserver (the target's child running multiprocessing.forkserver) and the 3
/// workers it forked, as /proc shows them.
fn forkserver_and_workers(target: u32) -> (u32, Vec<u32>) {
    let forkserver = children_of(target)
        .into_iter()
        .find(|&pid| cmdline(pid).contains("multiprocessing.forkserver"))
        .unwrap_or_else(|| panic!("no forkserver among the children of {target}"));
    let mut workers = children_of(forkserver);
    workers.sort_unstable();
    assert_eq!(
        workers.len(),
        3,
        "workers of forkserver {forkserver}: {workers:?}"
    );
    (forkserver, workers)
}

#[test]
fn ps_lists_the_pool_then_terminate_leaves_no_process_of_the_tree() {
    let mut controller = pool_controller();
    let target = controller.target_pid;
    let (forkserver, workers) = forkserver_and_workers(target);
    let tree = Tree::of(controller.child.id());

    let out = client(&controller.dir, &["ps"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(ClientExit::Ok.code()),
        "{stdout}{}",
        text(&out.stderr)
    );
    let row = |pid: u32| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("no line for pid {pid} in:\n{stdout}"))
            .to_string()
    };
    let (major, minor) = python_minor();
    let version = format!("{major}.{minor}.");
    for (pid, parent) in [(target, None), (forkserver, Some(target))]
        .into_iter()
        .chain(workers.iter().map(|&w| (w, Some(forkserver))))
    {
        let line = row(pid);
        let words: Vec<&str> = line.split_whitespace().collect();
        let ppid = parent.map_or_else(|| ppid(pid), |p| p.to_string());
        assert_eq!(words[1], ppid, "{line}");
        assert!(words[2].starts_with(&version), "{line}");
        // The command line as /proc has it.
        assert!(line.contains(&cmdline(pid)), "{line}\nvs {}", cmdline(pid));
    }
    assert!(row(target).ends_with("[target]"), "{}", row(target));
    assert!(row(forkserver).contains("multiprocessing.forkserver"));

    terminate_leaves_no_process_of(&mut controller, &tree);
}

/// `heli-client terminate`, then the controller exits as terminated and no process of
/// `tree` is left.
fn terminate_leaves_no_process_of(controller: &mut Controller, tree: &Tree) {
    let out = client(&controller.dir, &["terminate"]);
    assert_eq!(
        out.status.code(),
        Some(ClientExit::Ok.code()),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(controller.wait(), ControllerExit::Terminated.code());
    tree.wait_gone(TREE_GONE_WITHIN);
    for pid in tree.pids() {
        assert!(!is_alive(pid), "pid {pid} of the tree is still running");
    }
}

#[test]
fn a_scripted_attach_feeds_a_shell_pipeline() {
    let controller = Controller::start("pool_workers.py");
    let mut controller = controller;
    controller.stdout.wait_for("pool ready");
    let script = format!(
        "set -o pipefail; '{}' --pipe-dir '{}' attach -c 'p some_global' -c 'p len(some_global)' | grep value-4242",
        bin("heli-client").display(),
        controller.dir.display()
    );
    let out = output_within(Command::new("bash").args(["-c", &script]), TIMEOUT);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("'value-4242'"), "{stdout}");
    // pdb ran both commands, in order, and the client detached.
    let all = client(
        &controller.dir,
        &["attach", "-c", "p some_global", "-c", "p 6*7"],
    );
    let printed = text(&all.stdout);
    assert_eq!(all.status.code(), Some(0), "{printed}{}", text(&all.stderr));
    let first = printed.find("'value-4242'").expect(&printed);
    let second = printed.find("(Pdb) 42").expect(&printed);
    assert!(first < second, "{printed}");
    assert!(printed.contains("Debugger detached"), "{printed}");
    // The target keeps running: the controller still answers for it.
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn a_scripted_attach_from_a_commands_file() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let commands = controller.dir.parent().unwrap().join("commands.pdb");
    std::fs::write(&commands, "p 'from-the-file'\n\np 2**10\n").unwrap();
    let out = client(
        &controller.dir,
        &["attach", "--commands", commands.to_str().unwrap()],
    );
    let printed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}{}", text(&out.stderr));
    assert!(
        printed.contains("'from-the-file'") && printed.contains("1024"),
        "{printed}"
    );
}

#[test]
fn a_failing_scripted_attach_exits_non_zero_with_its_reason_on_stderr() {
    let nowhere = tempfile::tempdir().unwrap();
    let out = client(&nowhere.path().join("none"), &["attach", "-c", "p 1"]);
    assert_eq!(out.status.code(), Some(ClientExit::NoController.code()));
    assert!(
        text(&out.stderr).contains("Controller not running"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("Controller not running"));

    // A pid outside the tree (init) is refused, naming it.
    let controller = Controller::start("counter.py");
    let out = client(&controller.dir, &["attach", "1", "-c", "p 1"]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pid 1"), "{stderr}");
    assert!(
        stderr.contains(&controller.target_pid.to_string()),
        "{stderr}"
    );
}

#[test]
fn stack_and_tasks_of_a_pid_outside_the_tree_are_refused() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let target = controller.target_pid;
    let me = std::process::id().to_string();
    for args in [vec!["stack", "1"], vec!["stack", &me], vec!["tasks", "1"]] {
        let out = client(&controller.dir, &args);
        let stderr = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(ClientExit::CommandFailed.code()),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("is not in the supervised tree (target {target})")),
            "{args:?}: {stderr}"
        );
    }
    let out = client(&controller.dir, &["stack", "0"]);
    assert_eq!(out.status.code(), Some(ClientExit::Usage.code()));
}

#[test]
fn tree_questions_on_the_fifos_are_answered_in_order() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let target = controller.target_pid;
    let replies = raw(
        &controller,
        b"PS\nGET_TARGET_PID\nSTACK 1\nTASKS\nGET_TARGET_PID\n",
        5,
    );
    let json = replies[0].strip_prefix("PROCESSES ").expect(&replies[0]);
    let report: PsReport = serde_json::from_str(json).unwrap();
    assert_eq!(report.target, target);
    assert_eq!(report.processes[0].facts.pid, target);
    assert_eq!(report.processes[0].facts.cmdline.join(" "), cmdline(target));
    let (major, minor) = python_minor();
    assert!(
        matches!(&report.processes[0].facts.interpreter, Interpreter::Python { version } if version.starts_with(&format!("{major}.{minor}."))),
        "{:?}",
        report.processes[0].facts.interpreter
    );
    assert_eq!(replies[1], format!("TARGET_PID {target}"));
    assert!(
        replies[2].starts_with("ERROR: pid 1 is not in the supervised tree"),
        "{}",
        replies[2]
    );
    assert_eq!(
        replies[3],
        "ERROR: TASKS needs a pid of the supervised tree"
    );
    assert_eq!(replies[4], format!("TARGET_PID {target}"));
}

#[test]
fn tree_questions_in_the_legacy_dialect() {
    let mut controller = Controller::start_with("counter.py", &["--dialect", "legacy"]);
    controller.stdout.wait_for("counter ready");
    let reply = controller.send("ps");
    assert!(reply.starts_with("processes {"), "{reply}");
    let reply = controller.send("stack 1");
    assert!(
        reply.starts_with("error : pid 1 is not in the supervised tree"),
        "{reply}"
    );
}

#[test]
fn tree_questions_on_the_socket() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let timeout = Duration::from_secs(10);
    let reply = exchange_socket_raw(&controller.dir, "PS", timeout).unwrap();
    let report: PsReport =
        serde_json::from_str(reply.strip_prefix("PROCESSES ").expect(&reply)).unwrap();
    assert_eq!(report.processes[0].facts.pid, controller.target_pid);
    let reply = exchange_socket_raw(&controller.dir, "STACK 1", timeout).unwrap();
    assert!(
        reply.starts_with("ERROR: pid 1 is not in the supervised tree"),
        "{reply}"
    );
    // One reply per request whatever it says: STACKS, or the reader's ERROR.
    let reply = exchange_socket_raw(
        &controller.dir,
        &format!("STACK {}", controller.target_pid),
        timeout,
    )
    .unwrap();
    assert!(
        reply.starts_with("STACKS {") || reply.starts_with("ERROR: "),
        "{reply}"
    );
}

/// A controller started with `--name NAME` (in the per-user named root), killed on drop.
struct Named {
    child: KillOnDrop,
    stderr: Lines,
    name: String,
}

impl Named {
    fn start(name: &str) -> Named {
        let mut child = Command::new(bin("heli-controller"))
            .args(["--name", name, "--python"])
            .arg(python())
            .arg(fixture("counter.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = Lines::spawn(child.stderr.take().unwrap());
        stderr.wait_for("listening on");
        Named {
            child: KillOnDrop(Some(child)),
            stderr,
            name: name.into(),
        }
    }

    fn target_pid(&self) -> String {
        let line = self
            .stderr
            .seen
            .iter()
            .find(|l| l.contains(" started: "))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().to_string()
    }
}

#[test]
fn named_controllers_side_by_side_are_listed_and_reached_by_name() {
    let tag = std::process::id();
    let (a, b) = (format!("e2e-{tag}-a"), format!("e2e-{tag}-b"));
    let mut first = Named::start(&a);
    let mut second = Named::start(&b);
    let ls = output_within(Command::new(bin("heli-client")).arg("ls"), TIMEOUT);
    let listing = text(&ls.stdout);
    assert_eq!(ls.status.code(), Some(0), "{listing}");
    for named in [&first, &second] {
        let line = listing
            .lines()
            .find(|l| l.starts_with(&named.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{listing}", named.name));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(named.target_pid().as_str()),
            "{line}"
        );
        assert!(line.contains("counter.py"), "{line}");
    }
    // By flag, and by the environment.
    let by_flag = output_within(
        Command::new(bin("heli-client")).args(["--name", &a, "ps"]),
        TIMEOUT,
    );
    assert!(
        text(&by_flag.stdout).contains(&first.target_pid()),
        "{}",
        text(&by_flag.stderr)
    );
    let by_env = output_within(
        Command::new(bin("heli-client"))
            .arg("ps")
            .env("HELI_NAME", &b),
        TIMEOUT,
    );
    assert!(
        text(&by_env.stdout).contains(&second.target_pid()),
        "{}",
        text(&by_env.stderr)
    );
    // The flag beats the environment.
    let both = output_within(
        Command::new(bin("heli-client"))
            .args(["--name", &a, "ps"])
            .env("HELI_NAME", &b),
        TIMEOUT,
    );
    assert!(text(&both.stdout).contains(&first.target_pid()));
    assert!(!text(&both.stdout).contains(&second.target_pid()));

    for named in [&mut first, &mut second] {
        let out = output_within(
            Command::new(bin("heli-client")).args(["--name", &named.name, "terminate"]),
            TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let status = wait_with_deadline(named.child.0.as_mut().unwrap(), TIMEOUT);
        assert_eq!(status.code(), Some(ControllerExit::Terminated.code()));
    }
    let ls = output_within(Command::new(bin("heli-client")).arg("ls"), TIMEOUT);
    assert!(!text(&ls.stdout).contains(&a), "{}", text(&ls.stdout));
}

#[test]
fn a_bad_name_is_a_usage_error_on_both_binaries() {
    let out = output_within(
        Command::new(bin("heli-client")).args(["--name", "../x", "ps"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(ClientExit::Usage.code()));
    assert!(
        text(&out.stderr).contains("--name"),
        "{}",
        text(&out.stderr)
    );
    let out = output_within(
        Command::new(bin("heli-controller"))
            .args(["--name", "a/b"])
            .arg(fixture("counter.py")),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(ControllerExit::USAGE_CODE));
}

/// The last `progress N` the worker thread printed so far.
fn last_progress(stdout: &mut Lines) -> u64 {
    stdout
        .received()
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("progress ")?.trim().parse().ok())
        .unwrap_or(0)
}

// Issue 11: `stack` through the controller shows the main thread blocked in its sleep
// and the worker computing, printed like a traceback, and the target is never paused:
// its worker's progress goes on across the readings.
/// A target that opted out of remote debugging (`PYTHON_DISABLE_REMOTE_DEBUG`) refuses
/// attaching, not reading: `ps` names its Python and `stack` prints where it is.
#[test]
fn ps_and_stack_read_a_target_that_opted_out_of_remote_debugging() {
    let target =
        TargetSpec::new(python(), "no_remote_debug.py").env("PYTHON_DISABLE_REMOTE_DEBUG", "1");
    let mut controller = Controller::start_target(&target, &[]);
    controller.stdout.wait_for("opted out, looping");
    let ps = client(&controller.dir, &["ps"]);
    let listing = text(&ps.stdout);
    assert_eq!(ps.status.code(), Some(ClientExit::Ok.code()), "{listing}");
    let line = listing
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with(&controller.target_pid.to_string())
        })
        .unwrap_or_else(|| panic!("target not listed:\n{listing}"));
    assert!(line.contains(" 3.1"), "no Python version: {line}");
    assert!(
        !listing.contains("remote debugging is disabled"),
        "{listing}"
    );
    let stack = client(&controller.dir, &["stack"]);
    let stacks = text(&stack.stdout);
    assert_eq!(
        stack.status.code(),
        Some(ClientExit::Ok.code()),
        "{stacks}{}",
        text(&stack.stderr)
    );
    assert!(
        stacks.contains("no_remote_debug.py") && stacks.contains("<module>"),
        "{stacks}"
    );
}

#[test]
fn stack_shows_a_sleeping_main_thread_and_a_computing_worker_while_the_target_runs() {
    let script = "stacks/threads.py";
    let mut controller = Controller::start(script);
    let ready = controller.stdout.wait_for("ready ");
    let worker_tid: u32 = ready.split_whitespace().nth(2).unwrap().parse().unwrap();
    controller.stdout.wait_for("progress ");
    // `ready` comes before the main thread reaches its sleep.
    wait_until_asleep(controller.target_pid as i32, controller.target_pid as i32);
    let path = fixture(script).display().to_string();
    let before = last_progress(&mut controller.stdout);
    for _ in 0..5 {
        let out = client(&controller.dir, &["stack"]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(ClientExit::Ok.code()),
            "{stdout}{}",
            text(&out.stderr)
        );
        // The main thread, outermost first, down to the sleep.
        let main_heading = format!("Thread {} (main thread)", controller.target_pid);
        let main_block: Vec<&str> = stdout
            .split("Thread ")
            .find(|block| format!("Thread {block}").starts_with(&main_heading))
            .unwrap_or_else(|| panic!("no main thread in:\n{stdout}"))
            .lines()
            .skip(1)
            .collect();
        let expected: Vec<String> = [
            ("main-module", "<module>"),
            ("main-outer", "outer"),
            ("main-middle", "middle"),
            ("main-sleep", "inner_sleep"),
        ]
        .iter()
        .map(|(marker, function)| {
            format!(
                "  File \"{path}\", line {}, in {function}",
                crate::stack_reader::marker_line(&fixture(script), marker)
            )
        })
        .collect();
        assert_eq!(main_block, expected, "{stdout}");
        // The worker, somewhere in its loop.
        let worker_block = stdout
            .split("Thread ")
            .find(|block| block.starts_with(&format!("{worker_tid},")))
            .unwrap_or_else(|| panic!("no worker thread {worker_tid} in:\n{stdout}"));
        assert!(
            worker_block.contains(&format!("File \"{path}\"")) && worker_block.contains("in work"),
            "{worker_block}"
        );
    }
    // The target ran on: its worker printed more progress after the readings.
    controller
        .stdout
        .wait_for(&format!("progress {}", before + 3));
}

/// `heli-client attach PID -c CMD...`, bounded, its output as text.
fn scripted_attach(dir: &std::path::Path, pid: u32, commands: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["attach".to_string(), pid.to_string()];
    for command in commands {
        args.push("-c".into());
        args.push((*command).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client(dir, &args);
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

// Issue 11: a worker of a multiprocessing pool (a forkserver child, a fresh interpreter
// that the controller gave the waker while it started), idle in a long sleep, is attached
// by pid and a local of its task printed; then `terminate` leaves no process of the tree.
#[test]
fn a_pool_worker_waiting_in_its_task_is_attached_by_pid_and_a_local_printed() {
    let mut controller = Controller::start("pool_parked.py");
    let mut parked: Vec<(u32, String)> = (0..3)
        .map(|_| {
            let line = controller
                .stdout
                .next_starting_with("parked worker-", TIMEOUT)
                .expect("three workers parked");
            let words: Vec<&str> = line.split_whitespace().collect();
            (words[4].parse().unwrap(), words[1].to_string())
        })
        .collect();
    parked.sort();
    let tree = Tree::of(controller.child.id());
    let (_, workers) = forkserver_and_workers(controller.target_pid);
    assert_eq!(
        workers,
        parked.iter().map(|(pid, _)| *pid).collect::<Vec<_>>()
    );
    let (worker, name) = &parked[1];
    wait_until_asleep(*worker as i32, *worker as i32);
    let (code, out) = scripted_attach(&controller.dir, *worker, &["up", "p parked_as"]);
    assert_eq!(code, Some(ClientExit::Ok.code()), "{out}");
    assert!(out.contains(&format!("(Pdb) '{name}'")), "{out}");
    assert!(out.contains("Debugger detached"), "{out}");
    terminate_leaves_no_process_of(&mut controller, &tree);
}

// Issue 11: a pre-fork HTTP server's worker (forked by the master): attached by pid, a
// breakpoint in the request handler is hit by a real HTTP request, a local printed, the
// client detaches and the server goes on serving.
#[test]
fn a_prefork_http_worker_stops_at_a_breakpoint_hit_by_a_real_request_and_keeps_serving() {
    use std::io::{Read, Write};
    let script = "prefork_http.py";
    let mut controller = Controller::start(script);
    let line = controller.stdout.wait_for("serving on ");
    let words: Vec<&str> = line.split_whitespace().collect();
    let (worker, port): (u32, u16) = (words[1].parse().unwrap(), words[4].parse().unwrap());
    let get = move || -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let line = crate::stack_reader::marker_line(&fixture(script), "handler-body");
    let client = Command::new(bin("heli-client"))
        .arg("--pipe-dir")
        .arg(&controller.dir)
        .args(["attach", &worker.to_string()])
        .args(["-c", &format!("break {}:{line}", fixture(script).display())])
        .args(["-c", "continue", "-c", "p greeting"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = KillOnDrop(Some(client));
    let child = client.0.as_mut().unwrap();
    let mut out = Lines::spawn(child.stdout.take().unwrap());
    let _err = Lines::spawn(child.stderr.take().unwrap());
    // The breakpoint is set: a request now hits it.
    out.wait_for("Breakpoint 1 at");
    let request = std::thread::spawn(get);
    out.wait_for("Debugger detached");
    let status = wait_with_deadline(child, TIMEOUT);
    client.0 = None;
    let seen = out.received().to_vec();
    assert_eq!(status.code(), Some(ClientExit::Ok.code()), "{seen:#?}");
    let all = seen.join("\n");
    assert!(
        all.contains(&format!("(Pdb) 'hello number 1 from {worker}'")),
        "{all}"
    );
    let first = request.join().unwrap();
    assert!(
        first.ends_with(&format!("hello number 1 from {worker}")),
        "{first}"
    );
    // Detached: the worker serves the next request by itself.
    assert!(get().ends_with(&format!("hello number 2 from {worker}")));
}
