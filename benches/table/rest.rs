//! The controller at rest: over 10 s with no client, sampled each second, its CPU time
//! (ticks of utime+stime from `/proc/PID/stat`, and nanoseconds from each thread's
//! `schedstat`, which resolves what ticks round to 0), its wakeups (voluntary and
//! involuntary context switches of every thread, `/proc/PID/task/*/status`) and its RSS.
//! "The controller" is the `heli-controller` process and its keeper (RSS summed, so
//! pages they share after the fork count twice).
//!
//! The reference is the target it supervises, measured in the same 10 s: the seed's demo
//! (`time.sleep(1)` loop that logs a line a second), the cheapest realistic Python program
//! to supervise. An idle `sleep` process would make every ratio infinite and say nothing;
//! this one says what the supervision costs next to what is supervised.
use crate::common::stats::{Row, Samples, Unit};
use crate::common::Controller;
use crate::{Bench, Emit};
use std::fs;
use std::time::{Duration, Instant};

const INTERVALS: usize = 10;
const INTERVAL: Duration = Duration::from_secs(1);

/// One reading of a group of processes.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    ticks: u64,
    cpu_ns: u64,
    switches: u64,
    rss_kib: u64,
}

fn read(pids: &[u32]) -> Reading {
    let mut total = Reading::default();
    for &pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        total.ticks += field(14).unwrap_or(0) + field(15).unwrap_or(0);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total.rss_kib += status_value(&status, "VmRSS:");
        for task in fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total.switches += status_value(&status, "voluntary_ctxt_switches:")
                + status_value(&status, "nonvoluntary_ctxt_switches:");
            let schedstat = fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total.cpu_ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn status_value(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Per-interval deltas of the counters, and the RSS at each interval's end.
struct Series {
    ticks: Vec<f64>,
    cpu: Vec<f64>,
    switches: Vec<f64>,
    rss: Vec<f64>,
}

fn series(readings: &[Reading]) -> Series {
    let deltas = |f: fn(&Reading) -> u64| {
        readings
            .windows(2)
            .map(|w| (f(&w[1]) - f(&w[0])) as f64)
            .collect::<Vec<_>>()
    };
    Series {
        ticks: deltas(|r| r.ticks),
        cpu: deltas(|r| r.cpu_ns)
            .into_iter()
            .map(|ns| ns / 1e9)
            .collect(),
        switches: deltas(|r| r.switches),
        rss: readings[1..].iter().map(|r| r.rss_kib as f64).collect(),
    }
}

pub fn rows(bench: &Bench, emit: Emit) {
    let c = Controller::start(&bench.python, "demo_target.py", "Iteration 1,");
    let controller = [c.pid(), c.keeper];
    let target = [c.target];
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let started = Instant::now();
    for i in 0..=INTERVALS {
        // At rest nothing happens to wait for: the samples are taken by the clock.
        let at = started + INTERVAL * i as u32;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        ours.push(read(&controller));
        theirs.push(read(&target));
    }
    drop(c);
    let (ours, theirs) = (series(&ours), series(&theirs));
    let total = |v: &[f64]| v.iter().sum::<f64>();
    let pair =
        |what: &str, unit: Unit, a: Vec<f64>, b: Vec<f64>, per: &str| {
            let (ta, tb) = (total(&a), total(&b));
            let show = |t: f64| crate::common::stats::show_value(unit, t);
            (
                Samples::values(format!("controller at rest, {what}{per}"), unit, a).with_extra(
                    "total",
                    ta,
                    format!("{} in 10 s", show(ta)),
                ),
                Samples::values(format!("its target (seed demo), {what}{per}"), unit, b)
                    .with_extra("total", tb, format!("{} in 10 s", show(tb))),
            )
        };
    let (a, b) = pair(
        "CPU ticks (utime+stime)",
        Unit::Count("tick"),
        ours.ticks,
        theirs.ticks,
        " per 1 s",
    );
    emit(Row::new("rest", a, b).by_mean());
    let (a, b) = pair(
        "CPU time (schedstat)",
        Unit::Time,
        ours.cpu,
        theirs.cpu,
        " per 1 s",
    );
    emit(Row::new("rest", a, b).by_mean());
    let (a, b) = pair(
        "wakeups (context switches)",
        Unit::Count("wakeup"),
        ours.switches,
        theirs.switches,
        " per 1 s",
    );
    emit(Row::new("rest", a, b).by_mean());
    emit(Row::new(
        "rest",
        Samples::values(
            "controller at rest, RSS (controller + keeper)",
            Unit::KiB,
            ours.rss,
        ),
        Samples::values("its target (seed demo), RSS", Unit::KiB, theirs.rss),
    ));
}
