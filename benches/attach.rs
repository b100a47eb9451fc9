//! Attach → first `(Pdb)` prompt, for targets of each shape of issue 10, side by side
//! with raw `python3.14 -m pdb -p` on the same target. Run with `cargo bench --bench
//! attach` (after `cargo build --release --bins`). Medians and p90 of N runs; first attach
//! (a fresh controller each time) and re-attach (the same controller and target).
//! Raw pdb is bounded by a timeout and reported as "> N s" when it never gets a prompt.
#![allow(clippy::disallowed_methods)] // a benchmark reads clocks

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RUNS: usize = 10;
const RAW_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let out = Command::new(root().join("scripts/provision-python.sh"))
        .output()
        .expect("run scripts/provision-python.sh");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A controller with its target; both killed on drop.
struct Controller {
    child: Child,
    target: u32,
    dir: tempfile::TempDir,
}

impl Controller {
    fn start(python: &Path, fixture: &str, ready: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(root().join("target/release/heli-controller"))
            .arg("--pipe-dir")
            .arg(dir.path().join("p"))
            .arg("--no-journal")
            .arg("--python")
            .arg(python)
            .arg(root().join("tests/fixtures").join(fixture))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heli-controller");
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut target, mut listening, mut is_ready) = (None, false, false);
        while target.is_none() || !listening || !is_ready {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("{fixture}: controller never got ready"));
            if line.contains(" started: ") {
                target = line.split_whitespace().nth(2).and_then(|p| p.parse().ok());
            }
            listening |= line.contains("listening on");
            is_ready |= line.contains(ready);
        }
        // Let the target settle into its waiting state.
        std::thread::sleep(Duration::from_millis(300));
        Controller {
            child,
            target: target.unwrap(),
            dir,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        unsafe { libc::kill(self.target as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with `input` piped in; time until its stdout shows "(Pdb)", or None
/// within `limit`. The process is killed afterwards in any case.
fn time_to_prompt(mut command: Command, input: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("(Pdb)") {
                let _ = tx.send(Instant::now());
                break;
            }
        }
    });
    let at = rx.recv_timeout(limit).ok().map(|t| t - started);
    // Let a client that got its prompt finish its session (q, quit) before the next run.
    if at.is_some() {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    at
}

fn client(c: &Controller) -> Command {
    let mut command = Command::new(root().join("target/release/heli-client"));
    command.arg("--pipe-dir").arg(c.dir.path().join("p"));
    command
}

fn stats(samples: &[Option<Duration>], limit: Duration) -> String {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    if ok.len() < samples.len() {
        if ok.is_empty() {
            return format!("> {} s (never)", limit.as_secs());
        }
        return format!(
            "{} of {} never attached",
            samples.len() - ok.len(),
            samples.len()
        );
    }
    ok.sort();
    let median = ok[ok.len() / 2];
    let p90 = ok[(ok.len() * 9 / 10).min(ok.len() - 1)];
    format!(
        "{:>6.0} ms / {:>6.0} ms",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    )
}

fn main() {
    let python = python();
    let shapes = [
        ("busy loop", "inject_busy.py", "ready"),
        ("seed-like sleep(1) loop", "demo_target.py", "listening on"),
        ("time.sleep(300)", "wait_long_sleep.py", "sleeping 300 s"),
        (
            "idle asyncio server",
            "wait_asyncio_server.py",
            "listening on port",
        ),
        ("queue-blocked worker", "wait_queue.py", "consumer waiting"),
    ];
    let session = "attach\np 1\nq\nquit\n";
    println!(
        "{:<26} {:>24} {:>24} {:>24}",
        "attach → (Pdb), median / p90", "first attach", "re-attach", "raw pdb -p"
    );
    for (name, fixture, ready) in shapes {
        let mut first = Vec::new();
        for _ in 0..RUNS {
            let c = Controller::start(&python, fixture, ready);
            first.push(time_to_prompt(client(&c), session, CLIENT_TIMEOUT));
        }
        let c = Controller::start(&python, fixture, ready);
        let _ = time_to_prompt(client(&c), session, CLIENT_TIMEOUT);
        let again: Vec<_> = (0..RUNS)
            .map(|_| time_to_prompt(client(&c), session, CLIENT_TIMEOUT))
            .collect();
        drop(c);
        let mut raw = Vec::new();
        for _ in 0..RUNS.min(3) {
            let c = Controller::start(&python, fixture, ready);
            let mut command = Command::new(&python);
            command.args(["-m", "pdb", "-p", &c.target.to_string()]);
            let t = time_to_prompt(command, "p 1\nq\n", RAW_TIMEOUT);
            raw.push(t);
            if t.is_none() {
                break; // it never returns: one bounded try says so
            }
        }
        println!(
            "{:<26} {:>24} {:>24} {:>24}",
            name,
            stats(&first, CLIENT_TIMEOUT),
            stats(&again, CLIENT_TIMEOUT),
            stats(&raw, RAW_TIMEOUT)
        );
    }
}
