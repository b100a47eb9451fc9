//! The native stack reader vs `py-spy dump`, against the same 4-thread target (the main
//! thread asleep, three workers computing, each a few frames deep). Run with
//! `cargo bench --bench stack`; the Python is `scripts/provision-python.sh`'s default
//! (`HELI_PYTHON` to choose another).
//!
//! - `read_stacks`: one whole reading (locate the runtime, read the offsets, walk every
//!   thread, decode names and lines), as the controller does per `STACK` request;
//! - `py-spy dump --pid`: the whole process, when `py-spy` is on PATH or at `$HELI_PYSPY`
//!   (it stops the target while it reads; `--nonblocking` does not, and is measured too).
//!
//! Iteration counts are modest: the development machines have 2 cores.
#![allow(clippy::disallowed_methods)] // a benchmark reads clocks

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use helicopter_parent::io::stack_reader::read_stacks;

const READS: usize = 200;
const PYSPY_RUNS: usize = 30;

fn python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/provision-python.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/provision-python.sh");
    assert!(out.status.success(), "provision-python.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `$HELI_PYSPY`, else `py-spy` on PATH, if it runs.
fn pyspy() -> Option<PathBuf> {
    let candidate = std::env::var_os("HELI_PYSPY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("py-spy"));
    let runs = Command::new(&candidate)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    runs.then_some(candidate)
}

/// The target, killed and reaped on drop.
struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn time_pyspy(pyspy: &Path, pid: i32, extra: &[&str]) -> Vec<Duration> {
    (0..PYSPY_RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = Command::new(pyspy)
                .args(["dump", "--pid", &pid.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .output()
                .expect("run py-spy");
            let took = start.elapsed();
            assert!(
                out.status.success(),
                "py-spy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            took
        })
        .collect()
}

fn main() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stacks/four_threads.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn target");
    let stdout = child.stdout.take().unwrap();
    let target = Target(child);
    let pid = target.0.id() as i32;
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    assert!(ready.starts_with("ready"), "target said {ready:?}");

    let first = read_stacks(pid).expect("read_stacks");
    assert_eq!(first.threads.len(), 4, "{first:#?}");
    let frames: usize = first.threads.iter().map(|t| t.frames.len()).sum();

    let samples: Vec<Duration> = (0..READS)
        .map(|_| {
            let start = Instant::now();
            let stacks = read_stacks(pid).expect("read_stacks");
            let took = start.elapsed();
            assert_eq!(stacks.threads.len(), 4);
            took
        })
        .collect();
    println!(
        "target: Python {}, 4 threads, {frames} frames",
        first.python_version
    );
    println!("{:<34} {:>5} {:>10}", "measurement", "n", "median");
    println!(
        "{:<34} {READS:>5} {:>10}",
        "read_stacks",
        fmt(median(samples))
    );
    match pyspy() {
        Some(pyspy) => {
            let blocking = median(time_pyspy(&pyspy, pid, &[]));
            println!(
                "{:<34} {PYSPY_RUNS:>5} {:>10}",
                "py-spy dump --pid",
                fmt(blocking)
            );
            let nonblocking = median(time_pyspy(&pyspy, pid, &["--nonblocking"]));
            println!(
                "{:<34} {PYSPY_RUNS:>5} {:>10}",
                "py-spy dump --pid --nonblocking",
                fmt(nonblocking)
            );
        }
        None => println!("py-spy: not on PATH and HELI_PYSPY unset; skipped"),
    }
}
