//! How sessions end: by themselves, by crash, by signal; and what is refused at start.
use crate::support::*;
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::supervisor::{ControllerExit, ExitStatus, StopSignal};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn pipes_gone(controller: &Controller) -> bool {
    ["control", "response"]
        .iter()
        .all(|p| !controller.pipe(p).exists())
}

#[test]
fn target_that_exits_by_itself_ends_the_controller_with_its_status() {
    let mut controller = Controller::start("exit_on_request.py");
    std::fs::write(controller.dir.join("../exit-now"), "3").unwrap();
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
    let code = controller.wait();
    assert_eq!(code, ClientExit::NoController.code());
    controller.stderr.wait_for(&format!(
        "target {} exited with status 3",
        controller.target_pid
    ));
    assert!(pipes_gone(&controller));
}

#[test]
fn target_that_crashes_is_reported_with_its_signal() {
    let mut controller = Controller::start("exit_on_request.py");
    std::fs::write(controller.dir.join("../exit-now"), "abort").unwrap();
    assert_eq!(
        controller.wait(),
        ControllerExit::Target {
            status: ExitStatus::Signal(6)
        }
        .code()
    );
    controller
        .stderr
        .wait_for("was killed by signal 6 (SIGABRT)");
    assert!(pipes_gone(&controller));
}

#[rstest::rstest]
#[case::sigterm(libc::SIGTERM, StopSignal::Terminate)]
#[case::sigint(libc::SIGINT, StopSignal::Interrupt)]
#[case::sighup(libc::SIGHUP, StopSignal::Hangup)]
fn controller_signal_stops_the_target_and_cleans_up(#[case] signal: i32, #[case] stop: StopSignal) {
    let mut controller = Controller::start("counter.py");
    controller.signal(signal);
    assert_eq!(
        controller.wait(),
        ControllerExit::Signalled { signal: stop }.code()
    );
    assert!(!is_alive(controller.target_pid), "target orphaned");
    assert!(pipes_gone(&controller));
}

#[test]
fn a_target_ignoring_sigterm_is_killed_after_the_grace_period() {
    // --stop-signal TERM: the default SIGINT would end this target without escalation.
    let mut controller = Controller::start_with(
        "ignore_sigterm.py",
        &["--stop-grace", "300", "--stop-signal", "TERM"],
    );
    controller.stdout.wait_for("ignoring SIGTERM");
    controller.signal(libc::SIGTERM);
    assert_eq!(
        controller.wait(),
        ControllerExit::Signalled {
            signal: StopSignal::Terminate
        }
        .code()
    );
    controller.stderr.wait_for("sending SIGKILL");
    assert!(!is_alive(controller.target_pid));
}

#[test]
fn a_missing_script_is_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pipes");
    let out = output_within(
        Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(&dir)
            .arg("--python")
            .arg(python())
            .arg(tmp.path().join("nope.py")),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(ControllerExit::Failed.code()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.py: No such file or directory"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn a_missing_python_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(tmp.path().join("pipes"))
            .arg(fixture("counter.py"))
            .env("PATH", tmp.path())
            .env_remove("HELI_PYTHON"),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(ControllerExit::Failed.code()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Python 3.14 or 3.15 not found")
            && err.contains("python3.15, python3.14 on PATH"),
        "{err}"
    );
}

#[test]
fn a_symlinked_or_foreign_pipe_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let run = |dir: &std::path::Path| {
        output_within(
            Command::new(bin("heli-controller"))
                .arg("--pipe-dir")
                .arg(dir)
                .arg("--python")
                .arg(python())
                .arg(fixture("counter.py")),
            TIMEOUT,
        )
    };
    let out = run(&link);
    assert_eq!(out.status.code(), Some(ControllerExit::Failed.code()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"));
    // Only root can make a directory that belongs to another uid.
    if root_or_skip(
        "lifecycle::a_symlinked_or_foreign_pipe_dir_is_refused",
        "the other-uid half",
    ) {
        let foreign = tmp.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let out = run(&foreign);
        assert_eq!(out.status.code(), Some(ControllerExit::Failed.code()));
        assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to uid 65534"));
    }
}

#[test]
fn a_second_controller_on_the_same_pipes_is_refused() {
    let controller = Controller::start("counter.py");
    let out = output_within(
        Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(&controller.dir)
            .arg("--python")
            .arg(python())
            .arg(fixture("counter.py")),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(ControllerExit::Failed.code()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another controller is already serving"));
    assert_eq!(
        controller.send("GET_TARGET_PID"),
        format!("TARGET_PID {}", controller.target_pid)
    );
}

#[test]
fn stale_pipes_are_replaced_and_reported_to_clients_meanwhile() {
    // What a controller killed with SIGKILL leaves behind: its 0700 directory and FIFOs.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pipes");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .unwrap();
    let stale = ["control", "response"];
    for name in stale {
        nix::unistd::mkfifo(
            &dir.join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    // A hard link outside the directory keeps each stale FIFO's inode allocated, so that
    // a new FIFO cannot get its number: a different inode then means a replaced FIFO.
    // (Holding the FIFO open instead would count as a reader, which the controller
    // rightly takes for a live controller of an older version.)
    let kept = tmp.path().join("stale");
    std::fs::create_dir(&kept).unwrap();
    for name in stale {
        std::fs::hard_link(dir.join(name), kept.join(name)).unwrap();
    }
    let inode = |path: std::path::PathBuf| std::fs::metadata(path).unwrap().ino();
    // Nobody serves these pipes: the client says so at once instead of hanging.
    let (code, out) = run_client(&dir, "attach\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(out.contains("Controller not responding"), "{out}");

    // A new controller takes the directory over: every FIFO is a new one (a stale FIFO
    // could still be held open by a process of the dead session), and clients get served.
    let controller = Controller::start_in(tmp, dir.clone(), "counter.py", &[]);
    for name in stale {
        assert_ne!(
            inode(dir.join(name)),
            inode(kept.join(name)),
            "{name} is still the stale FIFO"
        );
    }
    let (code, out) = controller.client("attach\np counter\nq\nquit\n");
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    assert_eq!(pdb_numbers(&out).len(), 1, "{out}");
    assert!(is_alive(controller.target_pid));
}

#[test]
fn client_without_controller_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = run_client(tmp.path(), "attach\n", &[]);
    assert_eq!(code, ClientExit::NoController.code(), "{out}");
    assert!(
        out.contains("Controller not running (pipes not found)"),
        "{out}"
    );
}
