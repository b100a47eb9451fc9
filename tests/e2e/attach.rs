//! The user journey: grant, real `pdb -p`, detach, attach again, on pipes and on a pty.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

#[test]
fn seed_session_through_pipes_attaches_twice_and_terminates() {
    let mut controller = Controller::start("counter.py");
    assert_seed_session(&mut controller);
    // Only the journal stays (README, "What the pipe directory holds").
    assert_eq!(
        dir_entries(&controller.dir),
        [format!("journal-{}.jsonl", controller.child.id())]
    );
}

#[test]
fn twenty_attach_cycles_in_one_client_session() {
    let controller = Controller::start("counter.py");
    let input = "attach\np counter\nq\n".repeat(20) + "quit\n";
    let (code, out) = controller.client(&input);
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    let counters = pdb_numbers(&out);
    assert_eq!(counters.len(), 20, "{out}");
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
    assert_eq!(out.matches("Debugger detached").count(), 20);
    assert!(
        is_alive(controller.target_pid),
        "quit must leave the target running"
    );
    // Twenty grants later the directory holds what README documents, nothing else.
    assert_eq!(
        dir_entries(&controller.dir),
        [
            "control".to_string(),
            "control.sock".to_string(),
            format!("journal-{}.jsonl", controller.child.id()),
            "response".to_string(),
        ]
    );
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn lines_after_a_failed_attach_are_not_run_as_client_commands() {
    // The grant fails while the controller keeps serving: the target runs no Python code,
    // so the grant times out. The lines meant for pdb, up to its `q`, must be dropped,
    // even `terminate`, which would stop everything if the client ran it as a command.
    let mut controller =
        Controller::start_with("stuck_in_c.py", &["--no-wake", "--grant-timeout", "300"]);
    controller.stdout.wait_for("sleeping in C");
    let target = controller.target_pid as i32;
    wait_until_asleep(target, target);
    let (code, out) = run_client(
        &controller.dir,
        "attach\np counter\nterminate\nq\nhelp\nquit\n",
        &["--attach-timeout", "300ms"],
    );
    assert!(
        out.contains(&format!(
            "❌ Not attached: pid {target} did not run the grant within 0.3 s (--attach-timeout)"
        )),
        "{out}"
    );
    for line in ["p counter", "terminate", "q"] {
        let dropped =
            format!("heli-client: not run (meant for pdb, which is not attached): {line}");
        assert!(
            out.lines().any(|l| l == dropped),
            "{line:?} not dropped:\n{out}"
        );
    }
    assert!(!out.contains("Unknown command"), "{out}");
    assert!(!out.contains("Terminating"), "{out}");
    // After pdb's `q` the lines are client commands again.
    assert!(
        out.contains("Available commands:"),
        "help did not run:\n{out}"
    );
    assert!(out.contains("Goodbye!"), "{out}");
    assert_eq!(
        code,
        ClientExit::CommandFailed.code(),
        "the failed attach is the one failure:\n{out}"
    );
    // `terminate` was not run: the target and its controller still serve.
    assert!(is_alive(controller.target_pid));
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn grant_for_a_sleeping_target_still_arrives() {
    // The main thread sleeps 0.1 s at a time: pickup happens when a sleep ends.
    let controller = Controller::start("sleepy.py");
    let me = std::process::id();
    assert_eq!(controller.send(&format!("GRANT_ACCESS {me}")), "READY");
}

#[test]
fn grant_reaches_a_target_whose_main_thread_is_blocked() {
    // Main blocks in join() forever; a worker runs Python code: the grant moves to it.
    let mut controller = Controller::start("blocked_main.py");
    controller.stdout.wait_for("main thread blocking in join");
    let me = std::process::id();
    assert_eq!(controller.send(&format!("GRANT_ACCESS {me}")), "READY");
}

#[test]
fn grant_times_out_with_an_explanation_when_no_python_code_runs() {
    let mut controller =
        Controller::start_with("stuck_in_c.py", &["--no-wake", "--grant-timeout", "300"]);
    controller.stdout.wait_for("sleeping in C");
    let target = controller.target_pid as i32;
    wait_until_asleep(target, target);
    let me = std::process::id();
    let reply = controller.send(&format!("GRANT_ACCESS {me}"));
    assert!(
        reply.starts_with("ERROR: timed out after 300 ms: the target ran no Python code"),
        "{reply}"
    );
    // The withdrawn request must not fire later: it is no longer pending in the thread
    // (and the target, asleep in C all along, never took it).
    let process = helicopter_parent::io::inject::PythonProcess::open(target).unwrap();
    assert_eq!(
        process.is_pending(target),
        Ok(false),
        "the request was left in the target"
    );
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

/// Reads a pty master in a thread; text awaited with deadlines.
struct Terminal {
    master: std::fs::File,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    text: String,
}

impl Terminal {
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.text.contains(needle) {
            match self.rx.recv_deadline(deadline) {
                Ok(bytes) => self.text.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "terminal never showed {needle:?}; screen so far:\n{}",
                    self.text
                ),
            }
        }
    }
    /// Forgets what was seen so far, so the next wait looks only at new output.
    fn mark(&mut self) {
        self.text.clear();
    }
    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }
}

#[test]
fn on_a_terminal_ctrl_c_interrupts_the_target_not_the_client() {
    let mut controller = Controller::start("ticking.py");
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut command = Command::new(bin("heli-client"));
    command
        .arg("--pipe-dir")
        .arg(&controller.dir)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .env("TERM", "dumb");
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(slave);
    let mut guard = KillOnDrop(Some(child));
    let master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut term = Terminal {
        master,
        rx,
        text: String::new(),
    };
    term.wait_for(">>> ");
    term.type_text("attach\n");
    term.wait_for("(Pdb) ");
    term.mark();
    // The target is stopped in pdb now; once `c` is processed it prints ticks again, and
    // only then is Ctrl-C an interrupt of a running target.
    controller.stdout.forget();
    term.type_text("c\n");
    controller.stdout.wait_for("tick");
    term.type_text("\x03");
    term.wait_for("Program interrupted");
    term.wait_for("(Pdb) ");
    term.mark();
    term.type_text("q\n");
    term.wait_for("Debugger detached");
    term.wait_for(">>> ");
    assert!(
        is_alive(controller.target_pid),
        "target must keep running after detach"
    );
    let client_pid = guard.0.as_ref().unwrap().id();
    assert!(is_alive(client_pid), "the client must survive Ctrl-C");
    term.type_text("quit\n");
    let status = wait_with_deadline(guard.0.as_mut().unwrap(), TIMEOUT);
    guard.0 = None;
    assert_eq!(status.code(), Some(ClientExit::Ok.code()));
}

#[test]
fn a_target_that_opted_out_of_remote_debugging_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pipes");
    let child = Command::new(bin("heli-controller"))
        .arg("--pipe-dir")
        .arg(&dir)
        .arg("--python")
        .arg(python())
        // A retried opt-out would only end at this timeout, far past the 5 s exchange below.
        .args(["--grant-timeout", "60000"])
        .arg(fixture("no_remote_debug.py"))
        .env("PYTHON_DISABLE_REMOTE_DEBUG", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(child));
    let mut stderr = Lines::spawn(guard.0.as_mut().unwrap().stderr.take().unwrap());
    stderr.wait_for("listening on");
    let reply = helicopter_parent::io::exchange::exchange_raw(
        &dir,
        &format!("GRANT_ACCESS {}", std::process::id()),
        std::time::Duration::from_secs(5),
        true,
    )
    .unwrap()
    .unwrap();
    assert!(
        reply.contains("remote debugging is disabled")
            && reply.contains("PYTHON_DISABLE_REMOTE_DEBUG"),
        "{reply}"
    );
    let _ = helicopter_parent::io::exchange::exchange_raw(
        &dir,
        "TERMINATE",
        std::time::Duration::from_secs(5),
        true,
    );
    wait_with_deadline(guard.0.as_mut().unwrap(), TIMEOUT);
    guard.0 = None;
}
