//! Shared helpers for the end-to-end tests: real binaries, real FIFOs, real Python.
//! Every process started here is killed when its guard drops, pass or fail.
//!
//! The Python under test is chosen by `HELI_TEST_PYTHON`: a flavour that
//! `scripts/provision-python.sh` knows (`3.14`, `3.15`, `3.15-dbg`, ...) or an absolute
//! path; unset, the script's default (`$HELI_PYTHON`, else 3.14). `just test` runs the
//! suite once per supported minor version.
#![allow(dead_code)]

use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::supervisor::ControllerExit;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Provisioning may download and unpack a Python build on a fresh machine.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The environment variable that picks the Python under test.
pub const TEST_PYTHON_ENV: &str = "HELI_TEST_PYTHON";

/// The Python under test (see the module doc).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| match std::env::var(TEST_PYTHON_ENV) {
        Ok(path) if path.starts_with('/') => PathBuf::from(path),
        Ok(flavour) if !flavour.is_empty() => provision(Some(&flavour)),
        _ => provision(None),
    })
}

/// `(major, minor)` of [`python()`], asked from the interpreter itself.
pub fn python_minor() -> (u32, u32) {
    static MINOR: OnceLock<(u32, u32)> = OnceLock::new();
    *MINOR.get_or_init(|| {
        let out = output_within(
            Command::new(python()).args(["-c", "import sys; print(*sys.version_info[:2])"]),
            TIMEOUT,
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace().map(|p| p.parse().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    })
}

/// Another build of the minor version under test: `"dbg"` or `"shared"` (see
/// `scripts/provision-python.sh`). Provisioned once per test run.
pub fn python_build(build: &str) -> PathBuf {
    let (major, minor) = python_minor();
    python_flavour(&format!("{major}.{minor}-{build}"))
}

/// The interpreter of a `scripts/provision-python.sh` flavour, provisioned once per run.
pub fn python_flavour(flavour: &str) -> PathBuf {
    static FLAVOURS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    // Held while provisioning: the script locks too, but one call per flavour is enough.
    let mut known = FLAVOURS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = known.iter().find(|(f, _)| f == flavour) {
        return path.clone();
    }
    let path = provision(Some(flavour));
    known.push((flavour.to_owned(), path.clone()));
    path
}

fn provision(flavour: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = output_within(
        Command::new(root.join("scripts/provision-python.sh")).args(flavour),
        PROVISION_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "provision-python.sh {}failed: {}",
        flavour.map(|f| format!("{f} ")).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

/// The parent pid of `pid` as `/proc/PID/stat` gives it, or "?" when it cannot be read.
pub fn ppid(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, t)| t.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
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

    /// Every line received so far, without waiting for more.
    pub fn received(&mut self) -> &[String] {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        &self.seen
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
    wait_until_waiting_in(pid, tid, "nanosleep");
}

/// Waits until the kernel reports thread `tid` of `pid` waiting in a kernel function
/// whose name contains `what` (its wait channel: `nanosleep`, `epoll`...).
pub fn wait_until_waiting_in(pid: i32, tid: i32, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let wchan = format!("/proc/{pid}/task/{tid}/wchan");
    while !std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains(what)) {
        assert!(
            Instant::now() < deadline,
            "thread {tid} of {pid} never waited in {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for a child with a deadline; kills it if the deadline passes.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> ExitStatus {
    let pid = child.id();
    wait_or_kill(child, timeout)
        .unwrap_or_else(|| panic!("process {pid} did not exit within {timeout:?}; killed"))
}

/// Waits for a child with a deadline; kills it and returns `None` if the deadline passes,
/// so the caller can report what the child had printed.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
        let _ = child.wait();
        return None;
    }
    let _ = watcher.join();
    Some(child.wait().expect("reap"))
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

    /// A controller running `target`, with `extra` controller options.
    pub fn start_target(target: &TargetSpec, extra: &[&str]) -> Controller {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
        Controller::start_spec(tmp, dir, target, extra)
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
        let mut target = TargetSpec::new(python(), script);
        target.args = script_args.iter().map(|a| a.to_string()).collect();
        Controller::start_spec(tmp, dir, &target, extra)
    }

    fn start_spec(
        tmp: tempfile::TempDir,
        dir: PathBuf,
        target: &TargetSpec,
        extra: &[&str],
    ) -> Controller {
        let mut child = Command::new(bin("heli-controller"))
            .arg("--pipe-dir")
            .arg(&dir)
            .arg("--python")
            .arg(&target.python)
            .args(extra)
            .arg(fixture(&target.script))
            .args(&target.args)
            // The target inherits the controller's environment.
            .envs(target.env.iter().map(|(k, v)| (k, v)))
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

/// What a controller runs: an interpreter, a fixture script, its arguments and any
/// environment the target needs.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub python: PathBuf,
    pub script: String,
    pub args: Vec<String>,
    pub env: Vec<(String, PathBuf)>,
}

impl TargetSpec {
    pub fn new(python: &Path, script: &str) -> TargetSpec {
        TargetSpec {
            python: python.to_owned(),
            script: script.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> TargetSpec {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<PathBuf>) -> TargetSpec {
        self.env.push((key.to_owned(), value.into()));
        self
    }
}

/// The seed's session against `controller`'s target (a fixture that prints "counter
/// ready"): two attach cycles reading a growing `counter`, then `terminate`; checks all of
/// it and that everything is gone afterwards. It starts once the target is up: these
/// sessions are about the build under test, not about attaching during start-up.
pub fn assert_seed_session(controller: &mut Controller) {
    controller.stdout.wait_for("counter ready");
    let (code, out) = controller.client("attach\np counter\nq\nattach\np counter\nq\nterminate\n");
    assert_eq!(code, ClientExit::Ok.code(), "{out}");
    let counters = pdb_numbers(&out);
    assert_eq!(counters.len(), 2, "{out}");
    assert!(
        counters[1] > counters[0],
        "counter did not grow: {counters:?}\n{out}"
    );
    assert_eq!(out.matches("Debugger detached").count(), 2, "{out}");
    assert_eq!(out.matches("✅ Permission granted").count(), 2, "{out}");
    assert_eq!(controller.wait(), ControllerExit::Terminated.code());
    assert!(!is_alive(controller.target_pid));
    assert!(!controller.pipe("control").exists());
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
    let timeout = Duration::from_secs(120);
    let status = wait_or_kill(child.0.as_mut().unwrap(), timeout);
    child.0 = None;
    let _ = writer.join();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        out.drain().join("\n"),
        err.drain().join("\n")
    );
    match status {
        Some(status) => (status.code().unwrap_or(-1), text),
        None => panic!(
            "heli-client did not exit within {timeout:?}; killed. It printed:\n{text}\n\
             --- journals in {} ---\n{}",
            dir.display(),
            journals_in(dir)
        ),
    }
}

/// The text of every controller journal in `dir`: what a hung exchange looked like from
/// the controller's side.
fn journals_in(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("journal") {
            let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
            text.push_str(&format!("{name}:\n{body}\n"));
        }
    }
    text
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

/// Whether the tests run as root, and so can make processes and files of another uid.
/// Tests whose other-uid half needs it print a visible skip otherwise.
pub fn can_use_another_uid() -> bool {
    nix::unistd::geteuid().is_root() && Path::new("/usr/bin/setpriv").exists()
}

/// The uid the other-uid tests use: `nobody` on Debian.
pub const OTHER_UID: u32 = 65534;

/// A directory with FIFOs `control` and `response` served by a thread of this test that
/// answers like a controller: `TARGET_PID <pid>` for the pid it was given, `READY` to
/// anything else. It stands for a controller someone else runs, so the client under test
/// cannot tell it from a real one; what it received is kept in `received`.
pub struct FakeController {
    pub dir: PathBuf,
    pub received: Receiver<String>,
    _tmp: tempfile::TempDir,
}

impl FakeController {
    /// Serves in a new 0700 directory with 0600 FIFOs, then hands both to `owner`.
    pub fn serve(target_pid: u32, owner: u32) -> FakeController {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for name in ["control", "response"] {
            nix::unistd::mkfifo(
                &dir.join(name),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            std::os::unix::fs::lchown(dir.join(name), Some(owner), Some(owner)).unwrap();
        }
        std::os::unix::fs::lchown(&dir, Some(owner), Some(owner)).unwrap();
        // Read-write: the FIFO never reports EOF between clients.
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("control"))
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let response = dir.join("response");
        std::thread::spawn(move || {
            for line in BufReader::new(control).lines() {
                let Ok(line) = line else { return };
                let reply = if line.eq_ignore_ascii_case("GET_TARGET_PID") {
                    format!("TARGET_PID {target_pid}\n")
                } else {
                    "READY\n".to_string()
                };
                if let Ok(mut out) = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&response)
                {
                    let _ = out.write_all(reply.as_bytes());
                }
                // The test ended: nobody listens any more.
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        FakeController {
            dir,
            received: rx,
            _tmp: tmp,
        }
    }

    /// The lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.received.try_iter().collect()
    }
}

impl Drop for FakeController {
    /// One more line wakes the serving thread, which then finds nobody listening and ends.
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        drop(std::mem::replace(
            &mut self.received,
            crossbeam_channel::never(),
        ));
        if let Ok(mut control) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.join("control"))
        {
            let _ = control.write_all(b"\n");
        }
    }
}

/// A running process whose executable was deleted after it started and replaced, under
/// the same name, by a script that leaves a file named after the uid that ran it: what a
/// user who wants someone else to run their code would plant for a client that runs the
/// target's `/proc/PID/exe`.
pub struct ReplacedExecutable {
    pub pid: u32,
    /// Where the script would leave its marker files.
    pub dir: PathBuf,
    _process: KillOnDrop,
    _tmp: tempfile::TempDir,
}

impl ReplacedExecutable {
    /// Starts a copy of `sleep` named `python3.14` as `uid` (through `setpriv` when it is
    /// not ours), then swaps the file for the script.
    pub fn start(uid: u32) -> ReplacedExecutable {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::lchown(&dir, Some(uid), Some(uid)).unwrap();
        let exe = dir.join("python3.14");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        std::os::unix::fs::lchown(&exe, Some(uid), Some(uid)).unwrap();
        let mut command = if uid == nix::unistd::getuid().as_raw() {
            Command::new(&exe)
        } else {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(&exe);
            setpriv
        };
        let child = command.arg("120").spawn().unwrap();
        let pid = child.id();
        let process = KillOnDrop(Some(child));
        // setpriv execs in place: wait until the pid runs the copy (no event for an exec).
        let deadline = Instant::now() + TIMEOUT;
        while std::fs::read_link(format!("/proc/{pid}/exe")).map_or(true, |l| l != exe) {
            assert!(Instant::now() < deadline, "{} never ran", exe.display());
            std::thread::yield_now();
        }
        std::fs::remove_file(&exe).unwrap();
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\ntouch '{}/ran-as-uid-'\"$(id -u)\"\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::lchown(&exe, Some(uid), Some(uid)).unwrap();
        ReplacedExecutable {
            pid,
            dir,
            _process: process,
            _tmp: tmp,
        }
    }

    /// The markers the script left: one per uid it ran as.
    pub fn markers(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("ran-as-uid-"))
            .collect()
    }
}

/// `heli-client` on a pseudo-terminal of its own (a new session whose controlling
/// terminal it is), as a user runs it. The screen is read by a thread and awaited with
/// deadlines; the client is killed when this drops.
pub struct PtyClient {
    /// The client, or the shell that runs it.
    pub client: KillOnDrop,
    /// The client's own pid.
    client_pid: u32,
    master: std::fs::File,
    rx: Receiver<Vec<u8>>,
    /// What the terminal showed since the last [`PtyClient::mark`].
    pub screen: String,
}

impl PtyClient {
    pub fn start(dir: &Path, envs: &[(&str, &str)]) -> PtyClient {
        PtyClient::start_with(dir, &[], envs)
    }

    pub fn start_with(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> PtyClient {
        let mut command = Command::new(bin("heli-client"));
        command.arg("--pipe-dir").arg(dir).args(args);
        PtyClient::spawn(command, envs, false)
    }

    /// As a user runs it: a shell leads the terminal's session and runs the client as its
    /// child, so the client's end hangs nothing up (a session leader's end would send
    /// SIGHUP to everything on the terminal and hide what the client itself leaves).
    pub fn start_under_shell(dir: &Path) -> PtyClient {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            // The shell outlives the client like a user's shell; it is killed at the end.
            .arg("\"$0\" --pipe-dir \"$1\"; exec sleep 600")
            .arg(bin("heli-client"))
            .arg(dir);
        PtyClient::spawn(command, &[], true)
    }

    fn spawn(mut command: Command, envs: &[(&str, &str)], under_shell: bool) -> PtyClient {
        use std::os::fd::OwnedFd;
        use std::os::unix::process::CommandExt;
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: OwnedFd = pty.slave;
        command
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .env("TERM", "dumb")
            .envs(envs.iter().copied());
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
        let leader = child.id();
        let client = KillOnDrop(Some(child));
        let client_pid = if under_shell {
            // The shell forks the client: wait for its child to appear (no event for it).
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let [pid] = children_of(leader).as_slice() {
                    break *pid;
                }
                assert!(
                    Instant::now() < deadline,
                    "the shell never started the client"
                );
                std::thread::yield_now();
            }
        } else {
            leader
        };
        PtyClient {
            client,
            client_pid,
            master,
            rx,
            screen: String::new(),
        }
    }

    /// The client's pid.
    pub fn pid(&self) -> u32 {
        self.client_pid
    }

    /// Waits until the screen shows `needle` (since the last mark).
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.screen.contains(needle) {
            match self.rx.recv_deadline(deadline) {
                Ok(bytes) => self.screen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "terminal never showed {needle:?}; screen so far:\n{}",
                    self.screen
                ),
            }
        }
    }

    /// Forgets what was shown up to the end of the first `needle` on the screen (and
    /// what came with it stays), so the next wait looks only at what followed it.
    pub fn mark_after(&mut self, needle: &str) {
        self.wait_for(needle);
        let end = self.screen.find(needle).map_or(0, |at| at + needle.len());
        self.screen.drain(..end);
    }

    /// Forgets what was shown so far.
    pub fn mark(&mut self) {
        self.screen.clear();
    }

    pub fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Whether the terminal is in its ordinary (cooked) mode: canonical input and echo,
    /// as a shell expects it back (through the master, Linux reports the pty's modes).
    pub fn is_cooked(&self) -> bool {
        use nix::sys::termios::{tcgetattr, LocalFlags};
        let modes = tcgetattr(&self.master).expect("tcgetattr on the pty");
        modes
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    }

    /// Waits for the client to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let status = wait_with_deadline(self.client.0.as_mut().unwrap(), TIMEOUT);
        self.client.0 = None;
        status.code()
    }
}

/// The children of `pid` (its main thread's), from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process that is not our child, watched through a pidfd: its end is an event.
pub struct Watched {
    pub pid: u32,
    pidfd: std::os::fd::OwnedFd,
}

impl Watched {
    pub fn new(pid: u32) -> Watched {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        Watched {
            pid,
            // SAFETY: a fresh descriptor that nothing else owns.
            pidfd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
        }
    }

    /// Whether the process ended within `within` (the pidfd becomes readable).
    pub fn ends_within(&self, within: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut fds = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(within.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut fds, 1, ms) == 1 }
    }
}

impl Watched {
    /// SIGKILL through the pidfd: never a process that reused the pid.
    pub fn kill(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal on our own pidfd.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl Drop for Watched {
    /// A process that would outlive its test is killed.
    fn drop(&mut self) {
        self.kill();
    }
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
