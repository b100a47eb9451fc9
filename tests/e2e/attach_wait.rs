//! Attaching to any process of the supervised tree (issue 11), the client's own choice of
//! how long to wait, with progress, and Ctrl-C at each stage of an attach (issue 10).
//! After a cancelled attach each test looks at the target itself: it still runs, its
//! pending-call flag is clear (read from its memory), it printed nothing, and the next
//! attach works.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::io::inject::PythonProcess;
use helicopter_parent::io::socket_exchange::exchange_socket_raw;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// `child PID ready` from the spawned-child fixture.
fn child_pid(controller: &mut Controller) -> u32 {
    let line = controller.stdout.wait_for(" ready");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether a remote-exec request waits in the main thread of `pid`.
fn request_pending(pid: u32) -> bool {
    let process = PythonProcess::open(pid as i32).expect("open the process");
    let main = process
        .main_thread_tid()
        .expect("read the main thread")
        .expect("a main thread");
    process.is_pending(main).expect("read the pending flag")
}

/// One request over the control socket, as the test process (the asker).
fn over_socket(controller: &Controller, line: &str) -> String {
    exchange_socket_raw(&controller.dir, line, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Stops the controller, then looks at everything the target wrote: nothing may show a
/// request running later or failing there. Returns the controller's log.
fn assert_target_printed_nothing_of_ours(controller: &mut Controller) -> String {
    assert_eq!(controller.send("TERMINATE"), "READY");
    assert_eq!(controller.wait(), 0);
    let log = controller.stderr.drain().join("\n");
    let seen = log.clone() + &controller.stdout.drain().join("\n");
    for bad in [
        "Can't open debugger script",
        "Error executing debugger script",
        "Traceback",
    ] {
        assert!(!seen.contains(bad), "the target printed {bad:?}:\n{seen}");
    }
    log
}

#[test]
fn a_child_of_the_target_is_attached_with_attach_pid_and_its_grant_taken_back() {
    let mut controller = Controller::start("spawned_child.py");
    let child = child_pid(&mut controller);
    let (code, out) = controller.client(&format!("attach {child}\np secret\nq\nquit\n"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✅ Permission granted"), "{out}");
    assert!(
        out.contains(&format!("Attaching pdb to target PID {child}")),
        "{out}"
    );
    assert!(out.contains("'child-ticks'"), "{out}");
    controller.stderr.wait_for("took back the grant of pid");
    assert!(is_alive(child) && is_alive(controller.target_pid));
}

#[test]
fn a_pid_outside_the_tree_is_refused_with_where_to_look() {
    let controller = Controller::start("counter.py");
    let mut outsider = KillOnDrop(Some(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap(),
    ));
    let stranger = outsider.0.as_ref().unwrap().id();
    let me = std::process::id();
    assert_eq!(
        over_socket(&controller, &format!("GRANT_ACCESS {me} {stranger}")),
        format!(
            "ERROR: pid {stranger} is not in the supervised tree (target {}; heli-client ps lists it)",
            controller.target_pid
        )
    );
    // The keeper is the tree's root, not a process of it.
    let keeper = ppid(controller.target_pid);
    assert!(
        over_socket(&controller, &format!("GRANT_ACCESS {me} {keeper}")).starts_with(&format!(
            "ERROR: pid {keeper} is not in the supervised tree"
        ))
    );
    let (code, out) = controller.client(&format!("attach {stranger}\nquit\n"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "❌ Not attached: pid {stranger} is not in the supervised tree"
        )),
        "{out}"
    );
    let _ = outsider.0.as_mut().unwrap().kill();
}

/// A child that cannot be woken (here: `--no-wake`, so the fresh "spawn" interpreter
/// has no SIGURG handler) and is blocked in a sleep: the client says so within a second,
/// shows progress, and gives up at `--attach-timeout`; the request is taken back from
/// the child.
#[test]
fn a_child_that_cannot_be_woken_is_waited_for_with_progress_then_given_up_cleanly() {
    let mut controller = Controller::start_args(&["--no-wake"], "spawned_child.py", &["sleeps"]);
    let child = child_pid(&mut controller);
    wait_until_asleep(child as i32, child as i32);
    let (code, out) = run_client(
        &controller.dir,
        &format!("attach {child}\nquit\n"),
        &["--attach-timeout", "2s"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "⏳ pid {child} has not run the grant yet: waiting for it (Ctrl-C cancels, gives up after 2.0 s)"
        )),
        "{out}"
    );
    assert!(out.contains("ran no Python code yet"), "{out}");
    assert!(
        out.contains(&format!(
            "❌ Not attached: pid {child} did not run the grant within 2.0 s (--attach-timeout)"
        )),
        "{out}"
    );
    assert!(!out.contains("Permission denied"), "{out}");
    controller.stderr.wait_for("cancelled after");
    assert!(
        !request_pending(child),
        "the grant still waits in the child"
    );
    assert!(is_alive(child));
}

#[test]
fn a_second_client_is_told_who_holds_the_session_and_since_when() {
    let mut controller = Controller::start("counter.py");
    let me = std::process::id();
    assert_eq!(
        over_socket(&controller, &format!("GRANT_ACCESS {me}")),
        "READY"
    );
    let (code, out) = controller.client("attach\nquit\n");
    assert_eq!(code, 1, "{out}");
    let refusal = out
        .lines()
        .find(|l| l.contains("a debugger session is already attached"))
        .unwrap_or_else(|| panic!("no refusal:\n{out}"));
    // "since HH:MM:SS (Ns ago)": local time, then the age.
    let since = refusal
        .split_once(&format!("(client pid {me}, since "))
        .unwrap_or_else(|| panic!("{refusal}"))
        .1;
    let clock = &since[..8];
    assert!(
        clock.len() == 8
            && clock.bytes().enumerate().all(|(i, b)| match i {
                2 | 5 => b == b':',
                _ => b.is_ascii_digit(),
            }),
        "{refusal}"
    );
    assert!(
        since[8..].starts_with(" (") && since.contains("s ago))"),
        "{refusal}"
    );
    assert!(refusal.starts_with("❌ Not attached: "), "{refusal}");
    // Given back, the next client attaches.
    assert_eq!(
        over_socket(&controller, &format!("REVOKE_ACCESS {me}")),
        "READY"
    );
    controller.stderr.wait_for("took back the grant");
    let (code, out) = controller.client("attach\np counter > 0\nq\nquit\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("True"), "{out}");
}

#[test]
fn a_waiting_grant_sends_progress_and_a_hang_up_withdraws_it() {
    let mut controller = Controller::start_with("sleep_until_usr1.py", &["--no-wake"]);
    controller.stdout.wait_for("sleeping 300 s");
    let target = controller.target_pid;
    wait_until_asleep(target as i32, target as i32);
    let me = std::process::id();
    // WAIT needs the socket: progress lines on the shared FIFO would reach others.
    assert!(controller
        .send(&format!("GRANT_ACCESS {me} WAIT"))
        .starts_with("ERROR: WAIT needs the control socket"));
    let mut stream = UnixStream::connect(controller.dir.join("control.sock")).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("GRANT_ACCESS {me} WAIT\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("WAITING "), "{first}");
    assert!(
        first.contains(&format!(
            "pid {target} ran no Python code yet (threads: {target} (main) S"
        )),
        "{first}"
    );
    let mut second = String::new();
    reader.read_line(&mut second).unwrap();
    let ms = |line: &str| -> u64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
    assert!(ms(&second) > ms(&first), "{first}{second}");
    // The client hangs up: the controller takes the request back at once.
    drop(reader);
    drop(stream);
    controller.stderr.wait_for("cancelled after");
    assert!(!request_pending(target));
    // The target runs Python code again: nothing of the grant runs there later.
    unsafe { libc::kill(target as i32, libc::SIGUSR1) };
    controller.stdout.wait_for("ticking now");
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {target}")
    );
    let log = assert_target_printed_nothing_of_ours(&mut controller);
    assert!(!log.contains("ran after its request"), "{log}");
}

/// What the line editor writes as it enters raw mode (bracketed paste on): keys typed
/// before it would be taken by the cooked terminal.
const EDITOR_READY: &str = "\x1b[?2004h";

/// Ctrl-C while the target cannot run the grant (`--no-wake`, main thread in a 300 s
/// sleep): back at the prompt at once, the request withdrawn, the target untouched.
/// With the line editor (`xterm`) and without it (`dumb`).
#[rstest::rstest]
#[case::plain_prompt("dumb")]
#[case::line_editor("xterm")]
fn ctrl_c_during_the_grant_cancels_and_leaves_the_target_as_it_was(#[case] term_type: &str) {
    let mut controller = Controller::start_with("sleep_until_usr1.py", &["--no-wake"]);
    controller.stdout.wait_for("sleeping 300 s");
    let target = controller.target_pid;
    wait_until_asleep(target as i32, target as i32);
    let state = tempfile::tempdir().unwrap();
    let envs = [
        ("TERM", term_type),
        ("XDG_STATE_HOME", state.path().to_str().unwrap()),
    ];
    let editor = term_type != "dumb";
    let mut term = PtyClient::start(&controller.dir, &envs);
    let prompt = |term: &mut PtyClient| {
        if editor {
            term.mark_after(EDITOR_READY);
        } else {
            term.wait_for(">>> ");
        }
    };
    prompt(&mut term);
    term.type_text("attach\r");
    term.wait_for("has not run the grant yet: waiting for it (Ctrl-C cancels)");
    term.wait_for("ran no Python code yet");
    term.mark();
    term.type_text("\x03");
    term.wait_for("attach cancelled");
    assert!(!term.screen.contains("Traceback"), "{}", term.screen);
    prompt(&mut term);
    controller.stderr.wait_for("cancelled after");
    assert!(!request_pending(target));
    assert!(is_alive(target));
    // The next attach works once the target runs Python code.
    unsafe { libc::kill(target as i32, libc::SIGUSR1) };
    controller.stdout.wait_for("ticking now");
    term.mark();
    term.type_text("attach\r");
    term.wait_for("(Pdb) ");
    term.type_text("p counter > 0\n");
    term.wait_for("True");
    term.type_text("q\n");
    term.wait_for("Debugger detached");
    prompt(&mut term);
    term.type_text("quit\r");
    assert_eq!(term.wait(), Some(1), "a cancelled attach counts as failed");
    assert_target_printed_nothing_of_ours(&mut controller);
}

/// Ctrl-C while pdb waits for the target to run its request (the grant was woken by the
/// controller; the client does not wake pdb's request: `HELI_NO_WAKE=1`): no traceback,
/// pdb stopped, its request taken back, the grant given back, the prompt again.
#[test]
fn ctrl_c_during_pdbs_wait_cancels_without_a_traceback_and_withdraws_its_request() {
    let mut controller = Controller::start("sleep_until_usr1.py");
    controller.stdout.wait_for("sleeping 300 s");
    // The grant is woken through the handler the interpreter installed at start-up; the
    // controller's line says how that went.
    controller.stderr.wait_for("SIGURG waker");
    let target = controller.target_pid;
    assert_eq!(
        helicopter_parent::io::wake::catches(target as i32, libc::SIGURG),
        Some(true)
    );
    wait_until_asleep(target as i32, target as i32);
    let mut term = PtyClient::start(&controller.dir, &[("HELI_NO_WAKE", "1")]);
    term.wait_for(">>> ");
    term.type_text("attach\n");
    term.wait_for("Permission granted");
    term.wait_for(&format!("pdb waits for pid {target} to run its request"));
    assert!(
        request_pending(target),
        "pdb's request should wait in the target"
    );
    // The connect script pdb wrote for the target, named in the request.
    let script = {
        let process = PythonProcess::open(target as i32).unwrap();
        let main = process.main_thread_tid().unwrap().unwrap();
        process
            .pending_script(main)
            .unwrap()
            .expect("a script path")
    };
    assert!(script.exists(), "{}", script.display());
    term.mark();
    term.type_text("\x03");
    term.wait_for("attach cancelled");
    term.wait_for(">>> ");
    for bad in ["Traceback", "KeyboardInterrupt"] {
        assert!(!term.screen.contains(bad), "{}", term.screen);
    }
    // The grant's revocation is a request of its own in the same thread: looked at
    // once the controller says it ran.
    controller.stderr.wait_for("took back the grant");
    assert!(
        !request_pending(target),
        "pdb's request still waits:\n{}",
        term.screen
    );
    assert!(
        !script.exists(),
        "pdb's script was left: {}",
        script.display()
    );
    assert!(is_alive(target));
    // The revocation's script has reported, and may still be finishing: the fixture's
    // SIGUSR1 handler must run in the target's own sleep, not inside that script (where
    // CPython would report its exception and drop it).
    wait_until_asleep(target as i32, target as i32);
    unsafe { libc::kill(target as i32, libc::SIGUSR1) };
    controller.stdout.wait_for("ticking now");
    term.mark();
    term.type_text("attach\n");
    term.wait_for("(Pdb) ");
    term.type_text("p counter > 0\n");
    term.wait_for("True");
    term.type_text("q\n");
    term.wait_for("Debugger detached");
    term.wait_for(">>> ");
    term.type_text("quit\n");
    assert_eq!(term.wait(), Some(1));
    assert_target_printed_nothing_of_ours(&mut controller);
}

/// Issue 10: a target held by its own `breakpoint()` (pdb at its prompt on the target's
/// stdin) is not a target that "ran no Python code": the controller reads where it
/// stopped and refuses at once, saying so; nothing is written into the target.
#[test]
fn a_target_held_by_its_own_breakpoint_is_named_not_timed_out() {
    let script = "held_by_breakpoint.py";
    let mut controller = Controller::start(script);
    controller.stdout.wait_for("ready ");
    let target = controller.target_pid as i32;
    // pdb's prompt is up once the main thread sits in pdb's command loop.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !helicopter_parent::io::stack_reader::read_stacks(target).is_ok_and(|s| {
        s.threads
            .iter()
            .any(|t| t.is_main && helicopter_parent::core::stacks::local_debugger(t).is_some())
    }) {
        assert!(std::time::Instant::now() < deadline, "pdb never stopped");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let started = std::time::Instant::now();
    let (code, out) = run_client(
        &controller.dir,
        "attach\nquit\n",
        &["--attach-timeout", "20s"],
    );
    assert_eq!(code, ClientExit::CommandFailed.code(), "{out}");
    let line = crate::stack_reader::marker_line(&fixture(script), "held-here");
    assert!(
        out.contains(&format!(
            "a debugger session is already attached to pid {target}: its own (breakpoint() at {}:{line} in handle",
            fixture(script).display()
        )),
        "{out}"
    );
    assert!(!out.contains("Permission denied"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the refusal waited for the attach timeout: {out}"
    );
    assert!(
        !request_pending(target as u32),
        "a request was left in the target"
    );
    assert_target_printed_nothing_of_ours(&mut controller);
}

/// A "spawn" child is a fresh interpreter without the target's SIGURG handler; the
/// controller gives it the waker while it starts (here: while it loads for 0.5 s, as
/// real workers do), so once asleep it is attached at once.
#[test]
fn a_spawned_child_asleep_is_woken_and_attached() {
    let mut controller = Controller::start_args(&[], "spawned_child.py", &["loads-then-sleeps"]);
    let child = child_pid(&mut controller);
    wait_until_asleep(child as i32, child as i32);
    let (code, out) = run_client(
        &controller.dir,
        &format!("attach {child}\np __import__('os').getpid()\nq\nquit\n"),
        &["--attach-timeout", "20s"],
    );
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    assert!(out.contains(&format!("(Pdb) {child}")), "{out}");
    assert!(!out.contains("has not run the grant yet"), "{out}");
    assert_target_printed_nothing_of_ours(&mut controller);
}
