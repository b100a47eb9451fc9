//! Attach → first `(Pdb)` prompt for each target shape of issue 10, first attach (a fresh
//! controller each time) and re-attach (the same controller and target), beside raw
//! `python3.x -m pdb -p` on the same kind of target, bounded by a timeout ("> N s" when
//! it never gets a prompt). The time is from starting `heli-client` (or pdb) to `(Pdb)` on
//! its stdout.
//!
//! The seed-like `sleep(1)` loop is slower by design: the client lets a sleep that ends
//! within 1.2 s end by itself, so that pdb stops in the target's own code (README,
//! "Waking a target that waits"); its `HELI_PDB_WAKE_AFTER_MS=0` rows show the wake
//! applied at once instead. For that shape each run starts at another phase of the
//! sleep (spread evenly over the second), as a user arrives at any moment.
use crate::common::stats::{Row, Samples};
use crate::common::{time_to_prompt, wait_until_blocked, Controller};
use crate::{Bench, Emit};
use std::process::Command;
use std::time::Duration;

const N: usize = 10;
/// How long a client may take to reach `(Pdb)`, and then to finish its session.
const CLIENT_LIMIT: Duration = Duration::from_secs(10);
const RAW_LIMIT: Duration = Duration::from_secs(5);
const SESSION: &str = "attach\np 1\nq\nquit\n";

#[derive(Clone, Copy, PartialEq)]
enum Waits {
    /// Runs bytecode all the time.
    Never,
    /// Sleeps in steps of this long: runs start at phases spread over one step.
    InSteps(Duration),
    /// Blocks in one call that does not end by itself.
    Blocked,
}

struct Shape {
    name: &'static str,
    fixture: &'static str,
    ready: &'static str,
    waits: Waits,
    /// Also measure with `HELI_PDB_WAKE_AFTER_MS=0` (rows of their own).
    wake_at_once_too: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "busy loop",
        fixture: "inject_busy.py",
        ready: "ready",
        waits: Waits::Never,
        wake_at_once_too: false,
    },
    Shape {
        name: "seed-like sleep(1) loop",
        fixture: "demo_target.py",
        ready: "Iteration 1,",
        waits: Waits::InSteps(Duration::from_secs(1)),
        wake_at_once_too: true,
    },
    Shape {
        name: "time.sleep(300)",
        fixture: "wait_long_sleep.py",
        ready: "sleeping 300 s",
        waits: Waits::Blocked,
        wake_at_once_too: false,
    },
    Shape {
        name: "idle asyncio server",
        fixture: "wait_asyncio_server.py",
        ready: "listening on port",
        waits: Waits::Blocked,
        wake_at_once_too: false,
    },
    Shape {
        name: "queue-blocked worker",
        fixture: "wait_queue.py",
        ready: "consumer waiting",
        waits: Waits::Blocked,
        wake_at_once_too: false,
    },
];

impl Shape {
    /// Before run `i`: the target back in its waiting state, or at the run's phase.
    fn settle(&self, c: &Controller, i: usize) {
        match self.waits {
            Waits::Never => {}
            Waits::Blocked => wait_until_blocked(c.target, CLIENT_LIMIT),
            Waits::InSteps(step) => {
                // Stratified phases: the middles of N equal parts of one step.
                std::thread::sleep(step * (2 * i as u32 + 1) / (2 * N as u32));
            }
        }
    }

    fn start(&self, bench: &Bench) -> Controller {
        Controller::start(&bench.python, self.fixture, self.ready)
    }

    /// N first attaches (a fresh controller each) and N re-attaches (one controller, after
    /// one attach not counted), with `wake_after_ms` for the client when given.
    fn heli(&self, bench: &Bench, wake_after_ms: Option<u32>) -> (Samples, Samples) {
        let client = |c: &Controller| {
            let mut command = c.client();
            if let Some(ms) = wake_after_ms {
                command.env("HELI_PDB_WAKE_AFTER_MS", ms.to_string());
            }
            command
        };
        let attach = |c: &Controller| {
            time_to_prompt(&mut client(c), SESSION, CLIENT_LIMIT, CLIENT_LIMIT)
                .map_err(|why| eprintln!("attach, {}: heli-client: {why}", self.name))
                .ok()
        };
        let variant =
            wake_after_ms.map_or(String::new(), |ms| format!(", HELI_PDB_WAKE_AFTER_MS={ms}"));
        let mut first = Vec::new();
        for i in 0..N {
            let c = self.start(bench);
            self.settle(&c, i);
            first.push(attach(&c));
        }
        let c = self.start(bench);
        self.settle(&c, 0);
        let _ = attach(&c);
        let mut again = Vec::new();
        for i in 0..N {
            self.settle(&c, i);
            again.push(attach(&c));
        }
        (
            Samples::times(
                format!("attach → (Pdb), first attach, {}{variant}", self.name),
                first,
                CLIENT_LIMIT,
            ),
            Samples::times(
                format!("attach → (Pdb), re-attach, {}{variant}", self.name),
                again,
                CLIENT_LIMIT,
            ),
        )
    }

    /// Raw `pdb -p` N times on one target (a fresh controller's), or once when it never
    /// gets its prompt: one bounded try says so, and its request stays pending in that
    /// target, which is then dropped.
    fn raw(&self, bench: &Bench) -> Samples {
        let c = self.start(bench);
        let mut runs = Vec::new();
        for i in 0..N {
            self.settle(&c, i);
            let mut pdb = Command::new(&bench.python);
            pdb.args(["-m", "pdb", "-p", &c.target.to_string()]);
            let run = time_to_prompt(&mut pdb, "p 1\nq\n", RAW_LIMIT, CLIENT_LIMIT).ok();
            runs.push(run);
            if run.is_none() {
                break;
            }
        }
        Samples::times(
            format!("raw {} -m pdb -p, same shape", bench.python_name),
            runs,
            RAW_LIMIT,
        )
    }
}

pub fn rows(bench: &Bench, emit: Emit) {
    for shape in SHAPES {
        let raw = shape.raw(bench);
        let (first, again) = shape.heli(bench, None);
        emit(Row::new("attach", first, raw.clone()));
        emit(Row::new("attach", again, raw.clone()));
        if shape.wake_at_once_too {
            let (first, again) = shape.heli(bench, Some(0));
            emit(Row::new("attach", first, raw.clone()));
            emit(Row::new("attach", again, raw));
        }
    }
}
