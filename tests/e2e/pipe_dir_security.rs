//! Issue 9 (security) of the pipe directory: a start-up race in a parent another user can
//! write, and a refused start or an exit that destroyed the user's own files.
use crate::support::*;
use helicopter_parent::core::supervisor::ControllerExit;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn controller_in(dir: &Path) -> Command {
    let mut command = Command::new(bin("heli-controller"));
    command
        .arg("--pipe-dir")
        .arg(dir)
        .arg("--python")
        .arg(python())
        .arg(fixture("counter.py"))
        .stdin(Stdio::null());
    command
}

/// Runs a controller that is expected to refuse to start; returns its stderr.
fn refused_start(dir: &Path) -> String {
    let mut child = KillOnDrop(Some(
        controller_in(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heli-controller"),
    ));
    let mut err = Lines::spawn(child.0.as_mut().unwrap().stderr.take().unwrap());
    let status = wait_with_deadline(child.0.as_mut().unwrap(), TIMEOUT);
    child.0 = None;
    let err = err.drain().join("\n");
    assert_eq!(
        status.code(),
        Some(ControllerExit::Failed.code()),
        "expected a refused start: {err}"
    );
    err
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn issue9_a_refused_start_keeps_the_users_files_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("response"), "important\n").unwrap();
    fs::write(dir.join("grant-helper.py"), "x\n").unwrap();

    let err = refused_start(&dir);
    let content = |name: &str| {
        fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("the user's {name} is gone ({e}); controller said: {err}"))
    };
    assert_eq!(content("response"), "important\n");
    assert_eq!(content("grant-helper.py"), "x\n");
    assert_eq!(mode(&dir), 0o755, "the user's directory was chmodded");
    assert!(
        !dir.join("control").exists(),
        "a refused start left a FIFO behind"
    );
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("chmod 700"),
        "the refusal names the directory and the fix: {err}"
    );

    // The same directory made private: now the stray `response` is what is refused,
    // named, and kept.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let err = refused_start(&dir);
    assert!(
        err.contains(&dir.join("response").display().to_string())
            && err.contains("not a named pipe"),
        "the refusal names the file: {err}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("response")).unwrap(),
        "important\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("grant-helper.py")).unwrap(),
        "x\n"
    );
    assert!(
        !dir.join("control").exists(),
        "a refused start left a FIFO behind"
    );
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn issue9_terminate_removes_only_what_the_controller_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(dir.join("grant-utils.py"), "mine\n").unwrap();
    serve_then_terminate(&dir);
    assert!(!dir.join("control").exists() && !dir.join("response").exists());
    assert_eq!(
        fs::read_to_string(dir.join("grant-utils.py")).unwrap(),
        "mine\n"
    );
    assert_eq!(mode(&dir), 0o700, "the user's directory is kept as it was");
}

/// The second user of the race tests; created when missing. `None` (with a SKIP line)
/// when this is not root or a tool is missing.
fn second_user(test: &str) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        skip(
            test,
            "needs root (a second uid, chown, strace); run the tests as root",
        );
        return None;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        skip(test, "strace is not installed (apt-get install strace)");
        return None;
    }
    Some(ensure_user("heliattacker"))
}

/// Where the controller is held while the second user swaps the directory.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Just after the pipe directory was made (before it is opened and verified).
    AfterMkdir,
    /// At the lock, after the directory was opened, verified and tightened.
    AtLock,
}

/// A controller started under `strace`, which stops it with SIGSTOP right at one
/// syscall: the race window of issue 9 held open, so the swap lands in it every time
/// instead of once in many tries.
struct HeldController {
    strace: KillOnDrop,
    pid: i32,
    stderr: Lines,
}

impl HeldController {
    /// Waits for strace, which exits with its tracee's status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let status = wait_with_deadline(self.strace.0.as_mut().unwrap(), TIMEOUT);
        // Reaped: its pid is no longer ours to signal.
        self.strace.0 = None;
        status
    }

    /// The controller's first verdict: `true` once it started the target, `false` when
    /// it reported an error.
    fn started(&mut self) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.next_starting_with("heli-controller: ", left) {
                Some(line) if line.contains(" started: ") => return true,
                Some(line) if line.contains("error") => return false,
                Some(_) => continue,
                None => panic!(
                    "no verdict from the controller; saw {:#?}",
                    self.stderr.seen
                ),
            }
        }
    }

    fn start(parent: &Path, name: &str, hold: Hold) -> HeldController {
        let syscalls = match hold {
            Hold::AfterMkdir => "mkdir,mkdirat",
            Hold::AtLock => "flock",
        };
        // A relative --pipe-dir from inside the parent: the pipe directory's mkdir is
        // then the controller's only one (no mkdir of an existing parent comes first).
        // strace traces only those syscalls, on the stderr it shares with the
        // controller: its "stopped by SIGSTOP" line is the event that the controller is
        // held.
        let mut strace = KillOnDrop(Some(
            Command::new("strace")
                .arg(format!("--trace={syscalls}"))
                .arg(format!("--inject={syscalls}:signal=SIGSTOP"))
                .arg(bin("heli-controller"))
                .args(["--no-journal", "--pipe-dir", name, "--python"])
                .arg(python())
                .arg(fixture("counter.py"))
                .current_dir(parent)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn strace"),
        ));
        let child = strace.0.as_mut().unwrap();
        let mut stderr = Lines::spawn(child.stderr.take().unwrap());
        stderr.wait_for("--- stopped by SIGSTOP ---");
        let strace_pid = child.id();
        let children = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .expect("strace's children");
        let pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("strace has no child: {children:?}"));
        HeldController {
            strace,
            pid,
            stderr,
        }
    }

    fn resume(&self) {
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

impl Drop for HeldController {
    fn drop(&mut self) {
        // The controller first (its target gets SIGTERM through PDEATHSIG), then strace
        // (the KillOnDrop field): strace killed first would leave a held controller
        // stopped for good. Only while strace is unreaped and the pid still shows the
        // controller: strace reaps the controller just before it exits itself.
        let ours = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|stat| stat.contains("(heli-controller)"));
        if self.strace.0.is_some() && ours {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// Runs `script` with `sh -c` as the second user; waits for it with a deadline.
fn as_user(user: (u32, u32), script: &str) {
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={}", user.0))
        .arg(format!("--regid={}", user.1))
        .args(["--clear-groups", "sh", "-ec", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn setpriv");
    let status = wait_with_deadline(&mut child, TIMEOUT);
    assert!(status.success(), "{script}: {status:?}");
}

/// A world-writable sticky directory owned by the second user (a /tmp they own), inside
/// a private temporary directory; and a root 4755 file beside it, outside of it.
fn attacker_parent(user: (u32, u32)) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let parent = tmp.path().join("pub");
    fs::create_dir(&parent).unwrap();
    std::os::unix::fs::chown(&parent, Some(user.0), Some(user.1)).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o4755)).unwrap();
    (tmp, parent, victim)
}

#[test]
fn issue9_a_pipe_dir_swapped_for_a_symlink_right_after_mkdir_changes_nothing_outside() {
    let Some(user) = second_user(
        "issue9_a_pipe_dir_swapped_for_a_symlink_right_after_mkdir_changes_nothing_outside",
    ) else {
        return;
    };
    let (_tmp, parent, victim) = attacker_parent(user);
    let held = HeldController::start(&parent, "pipes", Hold::AfterMkdir);
    assert!(
        parent.join("pipes").is_dir(),
        "held after creating the directory"
    );
    as_user(
        user,
        &format!(
            "cd '{}' && mv pipes moved && ln -s '{}' pipes",
            parent.display(),
            victim.display()
        ),
    );
    held.resume();
    let mut held = held;
    let status = held.wait();
    let err = held.stderr.drain().join("\n");
    assert_eq!(
        mode(&victim),
        0o4755,
        "a file outside the pipe directory changed mode through the symlink; controller said: {err}"
    );
    // strace exits with its tracee's status.
    assert_eq!(status.code(), Some(ControllerExit::Failed.code()), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
}

#[test]
fn issue9_a_pipe_dir_swapped_after_verification_is_still_the_one_served() {
    let Some(user) =
        second_user("issue9_a_pipe_dir_swapped_after_verification_is_still_the_one_served")
    else {
        return;
    };
    let (_tmp, parent, _victim) = attacker_parent(user);
    // The attacker's own directory with its own FIFOs, waiting to be adopted.
    as_user(
        user,
        &format!(
            "cd '{}' && mkdir -m 777 evil && mkfifo -m 666 evil/control evil/response",
            parent.display()
        ),
    );
    let evil = parent.join("evil");
    let inode = |name: &str| fs::symlink_metadata(evil.join(name)).unwrap().ino();
    let before = (inode("control"), inode("response"));

    let held = HeldController::start(&parent, "pipes", Hold::AtLock);
    as_user(
        user,
        &format!(
            "cd '{}' && mv pipes moved && ln -s evil pipes",
            parent.display()
        ),
    );
    held.resume();
    let mut held = held;
    // Refusing is as good as serving the verified directory; adopting is not.
    let served = held.started();
    if served {
        held.stderr.wait_for("listening on");
    }
    let names: Vec<_> = fs::read_dir(&evil)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["control", "response"],
        "the controller wrote into the attacker's directory"
    );
    assert_eq!(
        (inode("control"), inode("response")),
        before,
        "the controller replaced the attacker's FIFOs (and would serve them)"
    );
    for name in ["control", "response"] {
        assert_eq!(fs::symlink_metadata(evil.join(name)).unwrap().uid(), user.0);
    }
    if served {
        let moved = parent.join("moved");
        let meta = fs::symlink_metadata(&moved).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
        for name in ["control", "response"] {
            let fifo = fs::symlink_metadata(moved.join(name)).unwrap();
            assert!(
                std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()),
                "{name}"
            );
            assert_eq!(fifo.uid(), 0);
        }
        // It answers on the directory it verified, wherever that now is.
        let reply = helicopter_parent::io::exchange::exchange_raw(
            &moved,
            "GET_TARGET_PID",
            Duration::from_secs(5),
            true,
        )
        .expect("GET_TARGET_PID")
        .expect("a reply");
        assert!(reply.starts_with("TARGET_PID "), "{reply}");
    }
}

#[test]
fn issue9_stale_pipes_of_a_dead_controller_are_replaced_and_the_directory_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    for name in ["control", "response"] {
        nix::unistd::mkfifo(&dir.join(name), mode).unwrap();
    }
    serve_then_terminate(&dir);
    // The replacements were the controller's own: removed; the user's directory stays.
    assert!(!dir.join("control").exists() && !dir.join("response").exists());
    assert!(dir.is_dir());
}

/// Starts a controller on `dir` (no journal), waits until it listens, stops it with
/// TERMINATE and checks that it exited as a terminated controller does.
fn serve_then_terminate(dir: &Path) {
    let mut child = KillOnDrop(Some(
        controller_in(dir)
            .arg("--no-journal")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heli-controller"),
    ));
    let mut err = Lines::spawn(child.0.as_mut().unwrap().stderr.take().unwrap());
    err.wait_for("listening on");
    let reply = helicopter_parent::io::exchange::exchange_raw(
        dir,
        "TERMINATE",
        Duration::from_secs(5),
        true,
    )
    .expect("TERMINATE")
    .expect("a reply");
    assert_eq!(reply, "READY");
    let status = wait_with_deadline(child.0.as_mut().unwrap(), TIMEOUT);
    child.0 = None;
    assert_eq!(status.code(), Some(ControllerExit::Terminated.code()));
}
