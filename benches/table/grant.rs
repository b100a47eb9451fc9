//! Grant round trip: `GRANT_ACCESS <pid>` → `READY`, over the socket and over the FIFOs,
//! on a busy, a sleeping and a blocked target (issue 10). The reference is the bare
//! native injection into the same target: `io::inject` delivering an empty script (with
//! the wake, as the controller's grant has it), so the ratio is what the controller adds
//! around it (the protocol, the grant script, `prctl`, its report).
use crate::common::stats::{Row, Samples};
use crate::common::{wait_until_blocked, Controller};
use crate::{Bench, Emit};
use helicopter_parent::io::exchange::exchange_raw;
use helicopter_parent::io::inject::{DeliverOptions, PythonProcess};
use helicopter_parent::io::socket_exchange::exchange_socket_raw;
use std::time::{Duration, Instant};

const N: usize = 20;
const LIMIT: Duration = Duration::from_secs(5);

/// (name, fixture, readiness line, whether the main thread blocks)
const SHAPES: &[(&str, &str, &str, bool)] = &[
    ("busy loop", "inject_busy.py", "ready", false),
    ("time.sleep(1) loop", "demo_target.py", "Iteration 1,", true),
    (
        "idle asyncio server (epoll_wait)",
        "wait_asyncio_server.py",
        "listening on port",
        true,
    ),
    (
        "queue-blocked worker (join)",
        "wait_queue.py",
        "consumer waiting",
        true,
    ),
];

pub fn rows(bench: &Bench, emit: Emit) {
    let scripts = tempfile::tempdir().unwrap();
    let empty = scripts.path().join("empty.py");
    std::fs::write(&empty, "pass\n").unwrap();
    let line = format!("GRANT_ACCESS {}", std::process::id());

    for &(shape, fixture, ready, blocks) in SHAPES {
        let mut c = Controller::start(&bench.python, fixture, ready);
        let settle = |c: &Controller| {
            if blocks {
                wait_until_blocked(c.target, LIMIT);
            }
        };
        let dir = c.pipe_dir();
        let mut socket = Vec::new();
        let mut fifo = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..N {
            settle(&c);
            let started = Instant::now();
            socket.push(match exchange_socket_raw(&dir, &line, LIMIT) {
                Ok(reply) if reply == "READY" => Some(started.elapsed()),
                other => {
                    failures.push(format!("socket: {other:?}"));
                    None
                }
            });
            settle(&c);
            let started = Instant::now();
            fifo.push(match exchange_raw(&dir, &line, LIMIT, true) {
                Ok(Some(reply)) if reply == "READY" => Some(started.elapsed()),
                other => {
                    failures.push(format!("FIFOs: {other:?}"));
                    None
                }
            });
            // The controller logs each grant; its lines are not needed.
            c.lines.forget();
        }
        let process = PythonProcess::open(c.target as i32).expect("open the target");
        // The pickup is seen by polling the pending flag: polled at the default 250 µs,
        // a pickup a few µs after the first look would read as ~350 µs. The controller's
        // grant hears its report as an event, so the reference polls finely.
        let options = DeliverOptions {
            wake: true,
            timeout: LIMIT,
            poll_interval: Duration::from_micros(5),
            ..DeliverOptions::default()
        };
        let mut native = Vec::new();
        for _ in 0..N {
            settle(&c);
            let started = Instant::now();
            native.push(match process.deliver(&empty, options) {
                Ok(_) => Some(started.elapsed()),
                Err(e) => {
                    failures.push(format!("native: {e}"));
                    None
                }
            });
        }
        drop(c);
        for failure in failures.iter().take(3) {
            eprintln!("grant, {shape}: {failure}");
        }
        let reference = Samples::times(
            "native injection (io::inject deliver), same target",
            native,
            LIMIT,
        );
        emit(Row::new(
            "grant",
            Samples::times(
                format!("grant round trip over the socket, {shape}"),
                socket,
                LIMIT,
            ),
            reference.clone(),
        ));
        emit(Row::new(
            "grant",
            Samples::times(
                format!("grant round trip over the FIFOs, {shape}"),
                fifo,
                LIMIT,
            ),
            reference,
        ));
    }
}
