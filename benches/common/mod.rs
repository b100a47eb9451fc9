//! What the benchmarks share: the Python under test, the release binaries, processes that
//! are killed when their guard drops (and die with the benchmark, however it ends), and
//! the statistics and table of [`stats`].
//!
//! Every wait here has a deadline: a benchmark that hangs measures nothing.
#![allow(dead_code)] // each benchmark binary uses its own part of this module

pub mod stats;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a controller (or a bare target) may take to start and say it is ready.
pub const STARTUP: Duration = Duration::from_secs(30);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The Python under test: `scripts/provision-python.sh` with `HELI_BENCH_PYTHON` (a
/// flavour such as `3.15`, or an absolute path), by default its default (3.14).
pub fn python() -> PathBuf {
    let choice = std::env::var("HELI_BENCH_PYTHON").unwrap_or_default();
    if choice.starts_with('/') {
        return PathBuf::from(choice);
    }
    let mut command = Command::new(root().join("scripts/provision-python.sh"));
    if !choice.is_empty() {
        command.arg(&choice);
    }
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/provision-python.sh");
    assert!(out.status.success(), "provision-python.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A release binary of this package; the benchmarks measure what users run.
pub fn release_bin(name: &str) -> PathBuf {
    let path = root().join("target/release").join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release --bins` first (`just bench` does)",
        path.display()
    );
    path
}

/// Makes the child receive SIGKILL when the benchmark's thread that started it ends, so
/// that nothing outlives a benchmark killed by a signal (guards cover panics).
pub fn dies_with_us(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A child killed and reaped on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's output, read by a thread, awaited with deadlines.
pub struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    pub fn spawn(sources: Vec<Box<dyn Read + Send>>) -> Lines {
        let (tx, rx) = mpsc::channel();
        for source in sources {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(source).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line containing `needle` (earlier lines included), within `within`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) -> Result<String, String> {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "no line with {needle:?} within {within:?}; saw: {:?}",
                        self.seen
                    ))
                }
            }
        }
    }

    /// Waits for the next new line starting with `prefix` (earlier lines ignored).
    pub fn expect_new(&mut self, prefix: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Lets the lines seen so far go (a long-running output would otherwise pile up).
    pub fn forget(&mut self) {
        while self.rx.try_recv().is_ok() {}
        self.seen.clear();
    }
}

/// A fixture run by Python directly (no controller), printing `ready…` once it runs.
pub struct Target {
    child: KillOnDrop,
    pub lines: Lines,
}

impl Target {
    pub fn start(python: &Path, fixture_name: &str, ready: &str) -> Target {
        let mut child = dies_with_us(
            Command::new(python)
                .arg(fixture(fixture_name))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .spawn()
        .expect("spawn target");
        let stdout = child.stdout.take().unwrap();
        let mut lines = Lines::spawn(vec![Box::new(stdout)]);
        if let Err(why) = lines.wait_for(ready, STARTUP) {
            panic!("{fixture_name}: {why}");
        }
        Target {
            child: KillOnDrop(child),
            lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.0.id() as i32
    }
}

/// A release `heli-controller` with its target, in a pipe directory of its own; the
/// target and the controller are killed on drop (the keeper then stops the rest).
pub struct Controller {
    child: KillOnDrop,
    pub target: u32,
    pub keeper: u32,
    pub lines: Lines,
    dir: tempfile::TempDir,
}

impl Controller {
    /// Starts the controller on `fixture_name` and returns once it listens, the target
    /// printed a line containing `ready`, and the controller said how its SIGURG waker
    /// fared (so that no start-up work overlaps a measurement).
    pub fn start(python: &Path, fixture_name: &str, ready: &str) -> Controller {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut child = dies_with_us(
            Command::new(release_bin("heli-controller"))
                .arg("--pipe-dir")
                .arg(dir.path().join("p"))
                .arg("--no-journal")
                .arg("--python")
                .arg(python)
                .arg(fixture(fixture_name))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("spawn heli-controller");
        let sources: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let child = KillOnDrop(child);
        let mut lines = Lines::spawn(sources);
        let mut wait = |needle: &str| {
            lines
                .wait_for(needle, STARTUP)
                .unwrap_or_else(|why| panic!("{fixture_name}: controller not ready: {why}"))
        };
        let started = wait(" started: ");
        let keeper = wait("keeper ");
        wait("listening on");
        wait("SIGURG waker");
        wait(ready);
        let pid_after = |line: &str, word: &str| -> u32 {
            let mut words = line.split_whitespace();
            words.find(|w| *w == word);
            words
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no pid after {word:?} in {line:?}"))
        };
        let target = pid_after(&started, "target");
        let keeper = pid_after(&keeper, "keeper");
        Controller {
            child,
            target,
            keeper,
            lines,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn pipe_dir(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    /// `heli-client --pipe-dir DIR` for this controller.
    pub fn client(&self) -> Command {
        let mut command = Command::new(release_bin("heli-client"));
        command.arg("--pipe-dir").arg(self.pipe_dir());
        command
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the target this controller started.
        unsafe { libc::kill(self.target as i32, libc::SIGKILL) };
    }
}

/// The run state of `pid`'s main thread (`R`, `S`, `D`, ...), from `/proc/PID/stat`.
pub fn main_thread_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Waits (bounded) until `pid`'s main thread sleeps in the kernel: a target that printed
/// its readiness line just before it blocks may still be running bytecode. There is no
/// event for "entered the system call", so the state is polled.
pub fn wait_until_blocked(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while main_thread_state(pid) != Some('S') {
        assert!(
            Instant::now() < deadline,
            "the main thread of {pid} never blocked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `command` with `input` piped in; the time until its stdout shows `(Pdb)`. A
/// command that got its prompt may then finish its session (within `finish`); it is killed
/// afterwards in any case. Without a prompt within `limit`: what it printed, to say why.
pub fn time_to_prompt(
    command: &mut Command,
    input: &str,
    limit: Duration,
    finish: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = KillOnDrop(
        dies_with_us(
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("spawn"),
    );
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let stderr = collect(child.0.stderr.take().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let seen = printed.clone();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        let mut prompted = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut seen = seen.lock().unwrap();
            seen.extend_from_slice(&buf[..n]);
            if !prompted && String::from_utf8_lossy(&seen).contains("(Pdb)") {
                prompted = true;
                let _ = tx.send(Instant::now());
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(at) => {
            wait_exit(&mut child.0, finish);
            Ok(at - started)
        }
        Err(_) => {
            let status = child.0.try_wait().ok().flatten();
            let tail = |text: &Mutex<Vec<u8>>| {
                let text = String::from_utf8_lossy(&text.lock().unwrap()).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(4)..].join(" / ")
            };
            Err(format!(
                "no (Pdb) within {limit:?} ({}); stdout: {:?}; stderr: {:?}",
                status.map_or("still running".to_string(), |s| s.to_string()),
                tail(&printed),
                tail(&stderr)
            ))
        }
    }
}

/// Everything `source` yields, gathered by a thread.
fn collect(mut source: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let gathered = Arc::new(Mutex::new(Vec::new()));
    let into = gathered.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = source.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    gathered
}

/// Runs `command` to its end: its wall time when it exits 0 within `limit`, else `None`
/// (a failure or a timeout; the process is killed).
pub fn time_to_exit(command: &mut Command, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut child = KillOnDrop(
        dies_with_us(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("spawn"),
    );
    let status = wait_exit(&mut child.0, limit)?;
    let took = started.elapsed();
    status.success().then_some(took)
}

/// Waits for `child` to exit within `limit` (polling: `Child` offers no timed wait).
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
