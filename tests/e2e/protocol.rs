//! The pipe protocol at the FIFO level, against the real controller.
use crate::support::*;
use helicopter_parent::core::supervisor::ControllerExit;
use helicopter_parent::io::pipes;
use rstest::rstest;
use std::time::Instant;

#[test]
fn get_target_pid_names_the_running_target() {
    let controller = Controller::start("counter.py");
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
    assert_eq!(
        controller.send("get_target_pid"),
        format!("TARGET_PID {}", controller.target_pid)
    );
    assert!(is_alive(controller.target_pid));
}

#[rstest]
#[case::unknown("FLY_AWAY", "ERROR: unknown command 'FLY_AWAY'")]
#[case::missing_pid("GRANT_ACCESS", "ERROR: GRANT_ACCESS needs the client's pid")]
#[case::extra_pid(
    "GRANT_ACCESS 12 13 14",
    "ERROR: unexpected argument after GRANT_ACCESS <pid> [<process pid>] [WAIT]: '14'"
)]
#[case::extra_on_get(
    "GET_TARGET_PID x",
    "ERROR: unexpected argument after GET_TARGET_PID: 'x'"
)]
#[case::extra_on_terminate("TERMINATE now", "ERROR: unexpected argument after TERMINATE: 'now'")]
#[case::not_numeric("GRANT_ACCESS abc", "ERROR: invalid pid 'abc': not a decimal number")]
#[case::zero("GRANT_ACCESS 0", "ERROR: invalid pid '0': pid 0 is no process")]
#[case::negative(
    "GRANT_ACCESS -5",
    "ERROR: invalid pid '-5': a pid is plain digits, without a sign"
)]
#[case::minus_one(
    "GRANT_ACCESS -1",
    "ERROR: invalid pid '-1': a pid is plain digits, without a sign"
)]
#[case::plus(
    "GRANT_ACCESS +7",
    "ERROR: invalid pid '+7': a pid is plain digits, without a sign"
)]
#[case::underscore(
    "GRANT_ACCESS 1_000",
    "ERROR: invalid pid '1_000': not a decimal number"
)]
#[case::out_of_range(
    "GRANT_ACCESS 99999999",
    "ERROR: invalid pid '99999999': larger than the largest Linux pid"
)]
#[case::blank("   ", "ERROR: blank command line")]
fn bad_lines_get_one_error_each(#[case] line: &str, #[case] expected_prefix: &str) {
    let controller = Controller::start("counter.py");
    let reply = controller.send(line);
    assert!(reply.starts_with(expected_prefix), "{line:?} -> {reply:?}");
    // The controller still serves normally afterwards.
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn a_pid_that_is_not_a_live_process_is_refused() {
    let controller = Controller::start("counter.py");
    // A pid that just exited (and was reaped) is free: not a live process.
    let pid = reaped_pid();
    let reply = controller.send(&format!("GRANT_ACCESS {pid}"));
    assert_eq!(reply, format!("ERROR: pid {pid} is not a running process"));
}

#[test]
fn a_pid_of_another_user_is_refused() {
    let controller = Controller::start("counter.py");
    // pid 1 runs as root; the test runs as root here, so use a process of another uid if
    // we can make one, else skip the uid half and check the target-itself rule.
    let reply = controller.send(&format!("GRANT_ACCESS {}", controller.target_pid));
    assert_eq!(
        reply,
        format!("ERROR: pid {} is the target itself", controller.target_pid)
    );
    if root_or_skip(
        "protocol::a_pid_of_another_user_is_refused",
        "the other-uid half",
    ) {
        let mut other = KillOnDrop(Some(
            std::process::Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sleep",
                    "60",
                ])
                .spawn()
                .unwrap(),
        ));
        let pid = other.0.as_ref().unwrap().id();
        // setpriv execs sleep in place: same pid, new uid once the exec happened.
        let deadline = Instant::now() + TIMEOUT;
        while std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_or(true, |s| !s.contains("\nUid:\t65534"))
        {
            assert!(Instant::now() < deadline, "setpriv did not change uid");
            std::thread::yield_now();
        }
        let reply = controller.send(&format!("GRANT_ACCESS {pid}"));
        assert!(
            reply.starts_with(&format!("ERROR: pid {pid} belongs to uid 65534")),
            "{reply}"
        );
        other.0.as_mut().unwrap().kill().unwrap();
    }
}

#[test]
fn several_lines_in_one_write_get_replies_in_order() {
    let controller = Controller::start("counter.py");
    let replies = raw(&controller, b"GET_TARGET_PID\nbogus\nget_target_pid\n", 3);
    let pid = format!("TARGET_PID {}", controller.target_pid);
    assert_eq!(replies[0], pid);
    assert!(replies[1].starts_with("ERROR: unknown command 'bogus'"));
    assert_eq!(replies[2], pid);
}

#[test]
fn a_last_line_without_newline_is_answered_when_the_writer_closes() {
    let controller = Controller::start("counter.py");
    assert_eq!(
        raw(&controller, b"GET_TARGET_PID", 1),
        vec![format!("TARGET_PID {}", controller.target_pid)]
    );
}

#[test]
fn oversized_and_invalid_utf8_lines_are_answered_and_do_not_stick() {
    let controller = Controller::start("counter.py");
    let mut big = vec![b'A'; 100_000];
    big.push(b'\n');
    let replies = raw(&controller, &big, 1);
    assert!(
        replies[0].starts_with("ERROR: line of 100000 bytes is too long"),
        "{replies:?}"
    );
    let replies = raw(&controller, b"GRANT_ACCESS \xff\xfe\n", 1);
    assert!(
        replies[0].starts_with("ERROR: line of 15 bytes is not valid UTF-8"),
        "{replies:?}"
    );
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn the_control_pipe_always_has_a_reader() {
    let controller = Controller::start("counter.py");
    // Many writers opening and closing back to back: none may ever see ENXIO, which a
    // controller that reopens `control` between clients would produce.
    for _ in 0..300 {
        let writer = pipes::open_writer(&controller.pipe("control"));
        assert!(writer.is_ok(), "control had no reader: {:?}", writer.err());
    }
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn terminate_is_answered_then_the_target_stops_and_pipes_go() {
    let mut controller = Controller::start("counter.py");
    assert_eq!(controller.send("TERMINATE"), "READY");
    assert_eq!(controller.wait(), ControllerExit::Terminated.code());
    assert!(!is_alive(controller.target_pid));
    assert!(!controller.pipe("control").exists() && !controller.pipe("response").exists());
}

#[test]
fn legacy_dialect_answers_in_lower_case() {
    let controller = Controller::start_with("counter.py", &["--dialect", "legacy"]);
    assert_eq!(
        controller.send("get_target_pid"),
        format!("target_pid {}", controller.target_pid)
    );
    assert_eq!(
        controller.send("GRANT_ACCESS abc"),
        "error : invalid pid 'abc': not a decimal number"
    );
}
