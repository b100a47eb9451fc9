//! Shared helpers for the end-to-end tests: real binaries, real FIFOs, real Python 3.14.
//! Every process started here is killed when its guard drops, pass or fail.
#![allow(dead_code)]

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Provisioning may download and unpack a Python build on a fresh machine.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The Python 3.14 the project provisions (or the one on PATH).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = output_within(
            &mut Command::new(root.join("scripts/provision-python.sh")),
            PROVISION_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "provision-python.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Lines of a child's output, collected by a thread, awaited with deadlines.
pub struct Lines {
    rx: Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn spawn(source: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line with {needle:?} in {TIMEOUT:?}; saw: {:#?}",
                    self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("output ended without {needle:?}; saw: {:#?}", self.seen)
                }
            }
        }
    }

    /// The next line not yet received that starts with `prefix`, within `within`.
    pub fn next_starting_with(&mut self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Ok(line) = self.rx.recv_deadline(deadline) {
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
        None
    }

    /// Forgets every line received so far, so the next wait sees only newer ones.
    pub fn forget(&mut self) {
        while self.rx.try_recv().is_ok() {}
        self.seen.clear();
    }

    /// Everything until the writer closes.
    pub fn drain(&mut self) -> &[String] {
        let deadline = Instant::now() + TIMEOUT;
        while let Ok(line) = self.rx.recv_deadline(deadline) {
            self.seen.push(line);
        }
        &self.seen
    }
}

/// Waits until the kernel reports thread `tid` of `pid` asleep in `clock_nanosleep`.
/// A target that printed its readiness line just before `time.sleep` may still be running
/// bytecode (and would pick a request up at once), and there is no event for "entered
/// the syscall": the wait channel is polled, with a deadline.
pub fn wait_until_asleep(pid: i32, tid: i32) {
    let deadline = Instant::now() + TIMEOUT;
    let wchan = format!("/proc/{pid}/task/{tid}/wchan");
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("nanosleep")) {
        assert!(
            Instant::now() < deadline,
            "thread {tid} of {pid} never fell asleep"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for a child with a deadline; kills it if the deadline passes.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    let pid = child.id();
    // A watcher thread turns "child exited" into an event; no polling loop.
    let (tx, rx) = crossbeam_channel::bounded(1);
    let watcher = std::thread::spawn(move || {
        let mut status: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only observes; the Child reaps it below.
        unsafe { libc::waitid(libc::P_PID, pid, &mut status, libc::WEXITED | libc::WNOWAIT) };
        let _ = tx.send(());
    });
    if rx.recv_deadline(deadline).is_err() {
        let _ = child.kill();
        let _ = watcher.join();
        panic!("process {pid} did not exit within {timeout:?}; killed");
    }
    let _ = watcher.join();
    child.wait().expect("reap")
}

/// `Command::output` with a deadline: runs `command` with stdin on /dev/null and its
/// output collected, and kills it (failing the test) if it has not exited in `timeout`.
pub fn output_within(command: &mut Command, timeout: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut guard = KillOnDrop(Some(child));
    let running = guard.0.as_mut().unwrap();
    let stdout = read_to_end_in_thread(running.stdout.take().unwrap());
    let stderr = read_to_end_in_thread(running.stderr.take().unwrap());
    let status = wait_with_deadline(running, timeout);
    guard.0 = None;
    // A process the command started may still hold its output open: bounded too.
    let collected = |rx: Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            panic!("{command:?} exited, but its {name} stayed open {TIMEOUT:?} (a descendant holds it)")
        })
    };
    Output {
        status,
        stdout: collected(stdout, "stdout"),
        stderr: collected(stderr, "stderr"),
    }
}

/// All of `source`, read by a thread and delivered when it closes.
fn read_to_end_in_thread(mut source: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// The names in directory `dir`, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A pid that is no process: that of a `true` just run and reaped. (Reuse this fast is
/// practically impossible.)
pub fn reaped_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    wait_with_deadline(&mut child, TIMEOUT);
    pid
}

/// Whether the test runs as root; if not, says on the real stderr which part of `test`
/// (`all`, or the part that needs root) is skipped. Written to the stderr descriptor, not with `eprintln!`, which the test
/// harness captures and shows only for failing tests: a skip must be seen in every run.
pub fn root_or_skip(test: &str, skipped: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {skipped} of {test}: not root");
    false
}

/// A running `heli-controller` with its target, in a private pipe directory.
pub struct Controller {
    pub child: Child,
    pub stderr: Lines,
    /// The target's stdout (it inherits the controller's).
    pub stdout: Lines,
    pub dir: PathBuf,
    pub target_pid: u32,
    _tmp: tempfile::TempDir,
}

impl Controller {
    pub fn start(script: &str) -> Controller {
        Controller::start_with(script, &[])
    }

    pub fn start_with(script: &str, extra: &[&str]) -> Controller {
        Controller::start_args(extra, script, &[])
    }

    /// `heli-controller EXTRA... fixture(SCRIPT) SCRIPT_ARGS...`
    pub fn start_args(extra: &[&str], script: &str, script_args: &[&str]) -> Controller {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
        Controller::start_in_with_args(tmp, dir, script, extra, script_args)
    }

    /// Starts a controller on the pipe directory `dir`, which may already exist; `tmp`
    /// (holding `dir`) is removed when the controller is dropped.
    pub fn start_in(
        tmp: tempfile::TempDir,
        dir: PathBuf,
        script: &str,
        extra: &[&str],
    ) -> Controller {
        Controller::start_in_with_args(tmp, dir, script, extra, &[])
    }

    fn start_in_with_args(
        tmp: tempfile::TempDir,
        dir: PathBuf,
        script: &str,
        extra: &[&str],
        script_args: &[&str],
    ) -> Controller {
        let mut child = Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(&dir)
            .arg("--python")
            .arg(python())
            .args(extra)
            .arg(fixture(script))
            .args(script_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heli-controller");
        let mut stderr = Lines::spawn(child.stderr.take().unwrap());
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let started = stderr.wait_for(" started: ");
        let target_pid = started.split_whitespace().nth(2).unwrap().parse().unwrap();
        let mut controller = Controller {
            child,
            stderr,
            stdout,
            dir,
            target_pid,
            _tmp: tmp,
        };
        controller.stderr.wait_for("listening on");
        controller
    }

    pub fn pipe(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn send(&self, line: &str) -> String {
        helicopter_parent::io::exchange::exchange_raw(&self.dir, line, Duration::from_secs(5), true)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .unwrap()
    }

    /// Waits for the controller to exit; returns its exit code.
    pub fn wait(&mut self) -> i32 {
        let status = wait_with_deadline(&mut self.child, TIMEOUT);
        status
            .code()
            .unwrap_or_else(|| panic!("controller killed: {status:?}"))
    }

    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Runs `heli-client` with `input` on a pipe as its stdin; returns (exit code, output).
    pub fn client(&self, input: &str) -> (i32, String) {
        run_client(&self.dir, input, &[])
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.target_pid as i32, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run_client(dir: &Path, input: &str, extra: &[&str]) -> (i32, String) {
    let mut child = Command::new(bin("heli-client"))
        .arg("--pipe-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn heli-client");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut out = Lines::spawn(child.stdout.take().unwrap());
    let mut err = Lines::spawn(child.stderr.take().unwrap());
    let guard = KillOnDrop(Some(child));
    let mut child = guard;
    let status = wait_with_deadline(child.0.as_mut().unwrap(), Duration::from_secs(120));
    child.0 = None;
    let _ = writer.join();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        out.drain().join("\n"),
        err.drain().join("\n")
    );
    (status.code().unwrap_or(-1), text)
}

/// Kills the child when a test fails between spawn and wait.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Numbers printed by pdb for `p counter` in piped mode: lines `(Pdb) <n>`.
pub fn pdb_numbers(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|l| {
            l.strip_prefix("(Pdb) ")
                .and_then(|rest| rest.trim().parse().ok())
        })
        .collect()
}

/// Writes raw bytes on `control` (response opened first) and reads `n` reply lines.
pub fn raw(controller: &Controller, bytes: &[u8], n: usize) -> Vec<String> {
    use helicopter_parent::io::exchange::{write_control, NextLine, ResponseReader};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut response = ResponseReader::open(&controller.dir).unwrap();
    write_control(&controller.dir, bytes, deadline).unwrap();
    (0..n)
        .map(|i| match response.next_line(deadline, None).unwrap() {
            NextLine::Line(line) => line,
            other => panic!("reply {} of {n}: {other:?} after 5 s", i + 1),
        })
        .collect()
}

#[test]
fn output_within_kills_a_command_past_its_deadline() {
    let mut sleeper = Command::new("sleep");
    sleeper.arg("60");
    let started = Instant::now();
    let overran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        output_within(&mut sleeper, Duration::from_millis(300))
    }));
    let message = *overran
        .expect_err("sleep 60 returned within a 300 ms deadline")
        .downcast::<String>()
        .unwrap();
    assert!(started.elapsed() < TIMEOUT, "the deadline was not kept");
    // "process <pid> did not exit within 300ms; killed"
    let pid: u32 = message
        .strip_prefix("process ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected message: {message}"));
    assert!(
        message.ends_with("did not exit within 300ms; killed"),
        "{message}"
    );
    assert!(!is_alive(pid), "sleep {pid} still runs");
}

/// A system user named `name` (created with `useradd` when missing; needs root):
/// (uid, gid). Tests that need a second user call this only as root.
pub fn ensure_user(name: &str) -> (u32, u32) {
    let lookup = || nix::unistd::User::from_name(name).expect("read the user database");
    if lookup().is_none() {
        let out = output_within(
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]),
            TIMEOUT,
        );
        // Another test may have created it meanwhile (useradd then exits 9).
        assert!(
            out.status.success() || lookup().is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = lookup().expect("the user just created");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Says on the real stderr that a test did not run and why. `eprintln!` would be captured
/// by the test harness and shown only on failure; a skipped test passes, so the line
/// is written to the descriptor itself.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}
