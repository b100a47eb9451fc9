//! Native injection vs `sys.remote_exec`, side by side in one run, against the same
//! targets. Run with `cargo bench --bench inject`.
//!
//! - `open`: locating and validating the runtime (done once per target by a caller);
//! - `schedule`: the native write of path, flag and eval-breaker bit;
//! - `sys.remote_exec process`: `python3.14 -c "import sys; sys.remote_exec(pid, path)"`
//!   as a whole process (what a helper-interpreter design would pay per injection);
//! - delivery: from just before the write to the moment the script's output line arrives,
//!   for a busy-loop target and a `time.sleep(0.1)`-loop target.
//!
//! Iteration counts are modest: the development machines have 2 cores.
#![allow(clippy::disallowed_methods)] // a benchmark reads clocks

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use helicopter_parent::io::inject::{PythonProcess, ThreadChoice};

const STARTUP: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(10);

fn python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/provision-python.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/provision-python.sh");
    assert!(out.status.success(), "provision-python.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A target process, killed and reaped on drop.
struct Target {
    child: Child,
    lines: Receiver<String>,
}

impl Target {
    fn start(python: &Path, fixture: &str) -> Target {
        let mut child = Command::new(python)
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures")
                    .join(fixture),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn target");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let target = Target { child, lines };
        target.expect_line("ready", STARTUP);
        target
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn expect_line(&self, prefix: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return,
                Ok(_) => continue,
                Err(_) => panic!("target {} printed no {prefix:?} line", self.pid()),
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until the target took the request written into `tid`.
fn wait_pickup(process: &PythonProcess, tid: i32) {
    let deadline = Instant::now() + RUN;
    while process.is_pending(tid).unwrap() {
        assert!(Instant::now() < deadline, "request never picked up");
        std::thread::sleep(Duration::from_micros(100));
    }
}

struct Row {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Row {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index]
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn main() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("silent.py");
    fs::write(&silent, "pass\n").unwrap();
    let printing = dir.path().join("printing.py");
    // fd 1 directly: `print` could re-enter the target's own locked stdout writer.
    fs::write(&printing, "import os\nos.write(1, b'injected\\n')\n").unwrap();

    let busy = Target::start(&python, "inject_busy.py");
    let mut rows = Vec::new();

    let mut open = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let process = PythonProcess::open(busy.pid()).unwrap();
        open.push(start.elapsed());
        drop(process);
    }
    rows.push(Row {
        name: "native open (locate + validate)",
        samples: open,
    });

    let process = PythonProcess::open(busy.pid()).unwrap();
    let mut schedule = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let tid = process.schedule(ThreadChoice::Main, &silent).unwrap();
        schedule.push(start.elapsed());
        wait_pickup(&process, tid);
    }
    rows.push(Row {
        name: "native schedule (busy target)",
        samples: schedule,
    });

    let mut helper = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let status = sys_remote_exec(&python, busy.pid(), &silent);
        helper.push(start.elapsed());
        assert!(status.success());
        wait_pickup(&process, busy.pid());
    }
    rows.push(Row {
        name: "python3.14 -c sys.remote_exec (whole process)",
        samples: helper,
    });

    let mut busy_delivery = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        process.schedule(ThreadChoice::Main, &printing).unwrap();
        busy.expect_line("injected", RUN);
        busy_delivery.push(start.elapsed());
    }
    rows.push(Row {
        name: "native delivery, busy loop (write -> script ran)",
        samples: busy_delivery,
    });

    let mut helper_delivery = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let status = sys_remote_exec(&python, busy.pid(), &printing);
        assert!(status.success());
        busy.expect_line("injected", RUN);
        helper_delivery.push(start.elapsed());
    }
    rows.push(Row {
        name: "sys.remote_exec delivery, busy loop (process -> script ran)",
        samples: helper_delivery,
    });
    drop(process);
    drop(busy);

    let sleeper = Target::start(&python, "inject_sleep.py");
    let process = PythonProcess::open(sleeper.pid()).unwrap();
    let mut sleep_delivery = Vec::new();
    for i in 0..15u64 {
        // Back-to-back requests would all land right after a pickup, i.e. at the start of
        // a 0.1 s sleep; spread them over the sleep's phase instead.
        std::thread::sleep(Duration::from_millis(i * 37 % 100));
        let start = Instant::now();
        process.schedule(ThreadChoice::Main, &printing).unwrap();
        sleeper.expect_line("injected", RUN);
        sleep_delivery.push(start.elapsed());
    }
    rows.push(Row {
        name: "native delivery, time.sleep(0.1) loop",
        samples: sleep_delivery,
    });
    drop(process);
    drop(sleeper);

    let baseline = rows[1].quantile(0.5).as_secs_f64();
    println!();
    println!(
        "| {:<60} | {:>4} | {:>10} | {:>10} | {:>12} |",
        "measurement", "n", "median", "p90", "÷ schedule"
    );
    println!(
        "|{:-<62}|{:->6}|{:->12}|{:->12}|{:->14}|",
        "", "", "", "", ""
    );
    for row in &rows {
        let median = row.quantile(0.5);
        println!(
            "| {:<60} | {:>4} | {:>10} | {:>10} | {:>11.0}x |",
            row.name,
            row.samples.len(),
            fmt(median),
            fmt(row.quantile(0.9)),
            median.as_secs_f64() / baseline
        );
    }
}

/// `sys.remote_exec` as a whole helper process, the way the published tool injects.
fn sys_remote_exec(
    python: &std::path::Path,
    pid: i32,
    script: &std::path::Path,
) -> std::process::ExitStatus {
    Command::new(python)
        .args([
            "-c",
            "import sys; sys.remote_exec(int(sys.argv[1]), sys.argv[2])",
            &pid.to_string(),
        ])
        .arg(script)
        .stdin(Stdio::null())
        .status()
        .unwrap()
}
