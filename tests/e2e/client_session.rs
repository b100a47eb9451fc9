//! Piped client sessions: the exit status rule, and what the client says when its
//! controller is gone.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use std::io::Write;
use std::process::{Command, Stdio};

/// Issue 13: the exit status reflects attaches and terminate, not typos (README table).
#[rstest::rstest]
#[case::a_typo_then_a_good_attach("atach\nhelp\nattach\np 1\nq\nquit\n", 0)]
#[case::q_quits_at_the_prompt("q\n", 0)]
#[case::failed_attaches("attach\nq\nattach\nq\nquit\n", 1)]
fn issue13_exit_status_follows_attaches_not_typos(#[case] input: &str, #[case] code: i32) {
    let controller = Controller::start("counter.py");
    // The failing case's attaches fail for want of an interpreter: simple to arrange.
    let extra: &[&str] = if code == 1 {
        &["--python", "/nonexistent/python3.14"]
    } else {
        &[]
    };
    let (status, out) = run_client(&controller.dir, input, extra);
    assert_eq!(status, code, "{out}");
    if code == 1 {
        assert!(
            out.contains("❌ cannot run /nonexistent/python3.14 -m pdb"),
            "{out}"
        );
    }
}

/// Issue 13: when the controller went away because its target exited, the client says so
/// (and names the directory it looked in).
#[test]
fn issue13_a_controller_gone_with_its_target_is_explained() {
    let mut controller = Controller::start("counter.py");
    let mut child = Command::new(bin("heli-client"))
        .arg("--pipe-dir")
        .arg(&controller.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = Lines::spawn(child.stdout.take().unwrap());
    let mut guard = KillOnDrop(Some(child));
    out.wait_for("Type 'help' for available commands");
    // The target exits; the controller ends with it and removes its pipes.
    // SAFETY: kill of the controller's target by the pid it reported.
    unsafe { libc::kill(controller.target_pid as i32, libc::SIGKILL) };
    controller.wait();
    stdin.write_all(b"attach\nq\nquit\n").unwrap();
    drop(stdin);
    let line = out.wait_for("Controller not running any more");
    assert!(
        line.contains(&format!(
            "its pipes in {} are gone, and its target (PID {}) has exited",
            controller.dir.display(),
            controller.target_pid
        )),
        "{line}"
    );
    let status = wait_with_deadline(guard.0.as_mut().unwrap(), TIMEOUT);
    guard.0 = None;
    assert_eq!(status.code(), Some(ClientExit::CommandFailed.code()));
}

#[test]
fn issue13_no_controller_names_the_directory_and_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    let (code, out) = run_client(&dir, "attach\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains(&format!(
            "Controller not running (pipes not found) in {}. Start heli-controller first, or point to its pipes with --pipe-dir DIR",
            dir.display()
        )),
        "{out}"
    );
}
