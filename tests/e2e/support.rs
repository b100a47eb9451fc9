//! Shared helpers for the end-to-end tests: real binaries, real FIFOs, real Python.
//! Every process started here is killed when its guard drops, pass or fail.
//!
//! The Python under test is chosen by `HELI_TEST_PYTHON`: a flavour that
//! `scripts/provision-python.sh` knows (`3.14`, `3.15`, `3.15-dbg`, ...) or an absolute
//! path; unset, the script's default (`$HELI_PYTHON`, else 3.14). `just test` runs the
//! suite once per supported minor version.
#![allow(dead_code)]

use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(30);

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
        let out = Command::new(python())
            .args(["-c", "import sys; print(*sys.version_info[:2])"])
            .output()
            .expect("run the Python under test");
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
    let out = Command::new(root.join("scripts/provision-python.sh"))
        .args(flavour)
        .output()
        .expect("run provision-python.sh");
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
        Controller::start_target(&TargetSpec::new(python(), script), extra)
    }

    /// A controller running `target`, with `extra` controller options.
    pub fn start_target(target: &TargetSpec, extra: &[&str]) -> Controller {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
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
pub fn assert_seed_session(mut controller: Controller) {
    controller.stdout.wait_for("counter ready");
    let (code, out) = controller.client("attach\np counter\nq\nattach\np counter\nq\nterminate\n");
    assert_eq!(code, 0, "{out}");
    let counters = pdb_numbers(&out);
    assert_eq!(counters.len(), 2, "{out}");
    assert!(
        counters[1] > counters[0],
        "counter did not grow: {counters:?}\n{out}"
    );
    assert_eq!(out.matches("Debugger detached").count(), 2, "{out}");
    assert_eq!(out.matches("✅ Permission granted").count(), 2, "{out}");
    assert_eq!(controller.wait(), 0);
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
