//! Durations on the command line: one style, old spellings kept, ranges checked at parse
//! time (issue 9, defect 10: huge values used to wrap into deadlines in the past).
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::supervisor::ControllerExit;
use std::process::{Command, Stdio};

/// Runs the controller with `args` (it must stop at parsing) and returns its exit code and
/// standard error.
fn controller_refusal(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(bin("heli-controller"))
        .args(args)
        .arg(fixture("counter.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = wait_with_deadline(&mut child, TIMEOUT);
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

#[test]
fn durations_beyond_their_range_are_refused_at_parse_time() {
    for option in ["--grant-timeout", "--stop-grace"] {
        let (code, stderr) = controller_refusal(&[option, "18446744073709551615", "--no-journal"]);
        assert_eq!(code, ControllerExit::USAGE_CODE, "{option}: {stderr}");
        assert!(stderr.contains("out of range"), "{option}: {stderr}");
        assert!(stderr.contains(option), "{option}: {stderr}");
    }
    let (code, stderr) = controller_refusal(&["--grant-timeout", "5 parsecs", "--no-journal"]);
    assert_eq!(code, ControllerExit::USAGE_CODE, "{stderr}");
    assert!(stderr.contains("unknown unit"), "{stderr}");
}

#[test]
fn a_duration_with_a_unit_is_the_same_as_the_old_bare_milliseconds() {
    for timeout in ["300ms", "0.3s", "300"] {
        let mut controller =
            Controller::start_with("stuck_in_c.py", &["--no-wake", "--grant-timeout", timeout]);
        controller.stdout.wait_for("sleeping in C");
        let target = controller.target_pid as i32;
        wait_until_asleep(target, target);
        let reply = controller.send(&format!("GRANT_ACCESS {}", std::process::id()));
        assert!(
            reply.contains("timed out after 300 ms"),
            "{timeout}: {reply}"
        );
        assert_eq!(controller.send("TERMINATE"), "READY");
        controller.wait();
    }
}

#[test]
fn the_clients_timeout_takes_the_same_style_and_refuses_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    // Far out of range: refused at parse time, before any pipe is looked at.
    let (code, out) = run_client(tmp.path(), "", &["--timeout", "18446744073709551615"]);
    assert_eq!(code, ClientExit::Usage.code(), "{out}");
    assert!(out.contains("out of range"), "{out}");
    // In range, with a unit: no controller there, so the client says so (exit 3).
    let (code, out) = run_client(tmp.path(), "", &["--timeout", "300ms"]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
}
