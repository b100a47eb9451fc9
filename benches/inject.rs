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

mod common;

use common::stats::{Row, Samples};
use common::Target;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helicopter_parent::io::inject::{PythonProcess, ThreadChoice};

const RUN: Duration = Duration::from_secs(10);

/// Waits (bounded) until the target took the request written into `tid`.
fn wait_pickup(process: &PythonProcess, tid: i32) {
    let deadline = Instant::now() + RUN;
    while process.is_pending(tid).unwrap() {
        assert!(Instant::now() < deadline, "request never picked up");
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn row(name: &str, samples: Vec<Duration>) -> Samples {
    Samples::times(name, samples.into_iter().map(Some).collect(), RUN)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: no run then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("inject: a benchmark; `cargo bench --bench inject` runs it");
        return;
    }
    let python = common::python();
    let dir = tempfile::tempdir().unwrap();
    let silent = dir.path().join("silent.py");
    fs::write(&silent, "pass\n").unwrap();
    let printing = dir.path().join("printing.py");
    // fd 1 directly: `print` could re-enter the target's own locked stdout writer.
    fs::write(&printing, "import os\nos.write(1, b'injected\\n')\n").unwrap();

    let mut busy = Target::start(&python, "inject_busy.py", "ready");
    let mut rows = Vec::new();

    let mut open = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        let process = PythonProcess::open(busy.pid()).unwrap();
        open.push(start.elapsed());
        drop(process);
    }
    rows.push(row("native open (locate + validate)", open));

    let process = PythonProcess::open(busy.pid()).unwrap();
    let mut schedule = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let tid = process.schedule(ThreadChoice::Main, &silent).unwrap();
        schedule.push(start.elapsed());
        wait_pickup(&process, tid);
    }
    rows.push(row("native schedule (busy target)", schedule));

    let mut helper = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let status = sys_remote_exec(&python, busy.pid(), &silent);
        helper.push(start.elapsed());
        assert!(status.success());
        wait_pickup(&process, busy.pid());
    }
    rows.push(row("python3.14 -c sys.remote_exec (whole process)", helper));

    let mut busy_delivery = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        process.schedule(ThreadChoice::Main, &printing).unwrap();
        assert!(
            busy.lines.expect_new("injected", RUN),
            "the script never ran"
        );
        busy_delivery.push(start.elapsed());
    }
    rows.push(row(
        "native delivery, busy loop (write -> script ran)",
        busy_delivery,
    ));

    let mut helper_delivery = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let status = sys_remote_exec(&python, busy.pid(), &printing);
        assert!(status.success());
        assert!(
            busy.lines.expect_new("injected", RUN),
            "the script never ran"
        );
        helper_delivery.push(start.elapsed());
    }
    rows.push(row(
        "sys.remote_exec delivery, busy loop (process -> script ran)",
        helper_delivery,
    ));
    drop(process);
    drop(busy);

    let mut sleeper = Target::start(&python, "inject_sleep.py", "ready");
    let process = PythonProcess::open(sleeper.pid()).unwrap();
    let mut sleep_delivery = Vec::new();
    for i in 0..15u64 {
        // Back-to-back requests would all land right after a pickup, i.e. at the start of
        // a 0.1 s sleep; spread them over the sleep's phase instead.
        std::thread::sleep(Duration::from_millis(i * 37 % 100));
        let start = Instant::now();
        process.schedule(ThreadChoice::Main, &printing).unwrap();
        assert!(
            sleeper.lines.expect_new("injected", RUN),
            "the script never ran"
        );
        sleep_delivery.push(start.elapsed());
    }
    rows.push(row("native delivery, time.sleep(0.1) loop", sleep_delivery));
    drop(process);
    drop(sleeper);

    // Every row beside the native schedule: the ratio is its cost in schedules.
    let schedule = rows[1].clone();
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|r| Row::new("inject", r, schedule.clone()))
        .collect();
    println!("\n{}", common::stats::markdown(&rows));
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
