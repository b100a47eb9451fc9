//! 10,000 requests from 1 client and from 20 concurrent clients (threads of this process),
//! over the socket and the FIFOs: per-request latency, throughput, p99, and every reply
//! checked. Three requests in four are `GET_TARGET_PID` (reply `TARGET_PID <pid>`); the
//! fourth is a probe, `GRANT_ACCESS x<client>_<n>`, whose `ERROR:` reply quotes its own
//! tag, so a reply that reached the wrong request shows: counted as misrouted. A request
//! with no reply within the limit is lost.
//!
//! References: for the socket, the same load against a bare Unix-socket server in this
//! process (one thread: accept, read a line, reply, close), answered by the same client
//! code, so the ratio is what the controller adds to the kernel's round trip; for the FIFOs
//! with one client, the socket with one client. Twenty concurrent FIFO clients are not
//! supported (the README says so: replies carry no request id); their row shows why.
use crate::common::stats::{Row, Samples};
use crate::common::Controller;
use crate::{Bench, Emit};
use helicopter_parent::io::exchange::{exchange_raw, ExchangeError};
use helicopter_parent::io::socket_exchange::{exchange_socket_raw, SocketExchangeError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const REQUESTS: usize = 10_000;
const CONCURRENT: usize = 20;
/// Concurrent FIFO clients lose replies, each costing [`LIMIT`]: fewer requests keep the
/// unsupported case's row within seconds.
const FIFO_CONCURRENT_REQUESTS: usize = 2_000;
/// A reply later than this is lost (FIFO clients that read each other's replies wait for
/// one that never comes).
const LIMIT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Socket,
    Fifos,
}

/// The reply that answers one request.
enum Expected {
    /// This line exactly.
    Line(String),
    /// An `ERROR:` quoting this tag (its text is the controller's).
    ErrorQuoting(String),
}

impl Expected {
    fn answers(&self, reply: &str) -> bool {
        match self {
            Expected::Line(line) => reply == line,
            Expected::ErrorQuoting(tag) => {
                reply.starts_with("ERROR:") && reply.contains(&format!("'{tag}'"))
            }
        }
    }
}

/// Request `n` of client `client`: its line and the reply that answers it.
fn request(client: usize, n: usize, target: u32) -> (String, Expected) {
    if n % 4 == 3 {
        let tag = format!("x{client}_{n}");
        (format!("GRANT_ACCESS {tag}"), Expected::ErrorQuoting(tag))
    } else {
        (
            "GET_TARGET_PID".to_string(),
            Expected::Line(format!("TARGET_PID {target}")),
        )
    }
}

#[derive(Default)]
struct Outcome {
    /// One per request: its latency, `None` when lost.
    latencies: Vec<Option<Duration>>,
    misrouted: usize,
    lost: usize,
    failed: Vec<String>,
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// One client's share of the load.
fn client(transport: Transport, dir: &Path, client: usize, count: usize, target: u32) -> Outcome {
    let mut out = Outcome::default();
    for n in 0..count {
        let (line, expected) = request(client, n, target);
        let started = Instant::now();
        let reply = match transport {
            Transport::Socket => exchange_socket_raw(dir, &line, LIMIT).map_err(|e| match e {
                SocketExchangeError::Failed(ExchangeError::Timeout { .. }) => None,
                other => Some(other.to_string()),
            }),
            Transport::Fifos => exchange_raw(dir, &line, LIMIT, true)
                .map(Option::unwrap_or_default)
                .map_err(|e| match e {
                    ExchangeError::Timeout { .. } => None,
                    other => Some(other.to_string()),
                }),
        };
        let took = started.elapsed();
        match reply {
            Ok(reply) => {
                out.latencies.push(Some(took));
                if !expected.answers(&reply) {
                    out.misrouted += 1;
                }
            }
            Err(None) => {
                out.latencies.push(None);
                out.lost += 1;
            }
            Err(Some(why)) => {
                out.latencies.push(None);
                out.failed.push(why);
            }
        }
    }
    out
}

/// `REQUESTS` requests from `clients` threads started together; the samples are the
/// per-request latencies, with throughput, p99, lost and misrouted as extras.
fn load(
    name: String,
    transport: Transport,
    dir: &Path,
    (requests, clients): (usize, usize),
    target: u32,
) -> Samples {
    let start = Barrier::new(clients + 1);
    let mut outcomes = Vec::new();
    let mut took = Duration::ZERO;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|i| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    client(transport, dir, i, requests / clients, target)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        outcomes = workers.into_iter().map(|w| w.join().unwrap()).collect();
        took = started.elapsed();
    });
    let mut latencies = Vec::new();
    let (mut misrouted, mut lost, mut failed) = (0, 0, Vec::new());
    for o in outcomes {
        latencies.extend(o.latencies);
        misrouted += o.misrouted;
        lost += o.lost;
        failed.extend(o.failed);
    }
    for why in failed.iter().take(3) {
        eprintln!("{name}: a request failed: {why}");
    }
    let n = latencies.len();
    let throughput = n as f64 / took.as_secs_f64();
    let samples = Samples::times(name, latencies, LIMIT);
    let p99 = samples.show(samples.quantile(0.99));
    let p99_s = samples.quantile(0.99).flatten().unwrap_or(f64::INFINITY);
    let mut samples = samples
        .with_extra(
            "throughput_per_s",
            throughput,
            format!("{throughput:.0} req/s"),
        )
        .with_extra("p99_s", p99_s, format!("p99 {p99}"))
        .with_extra("lost", lost as f64, format!("{lost} lost"))
        .with_extra(
            "misrouted",
            misrouted as f64,
            format!("{misrouted} misrouted"),
        );
    if !failed.is_empty() {
        let count = failed.len();
        samples = samples.with_extra("failed", count as f64, format!("{count} failed"));
    }
    samples
}

/// A bare server of the control socket's shape: accept, read one line, reply, close, one
/// connection at a time. Stopped and joined on drop.
struct BareServer {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareServer {
    fn start(target: u32) -> BareServer {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("control.sock")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                let line = line.trim_end();
                let reply = match line.strip_prefix("GRANT_ACCESS ") {
                    Some(tag) => format!("ERROR: invalid pid '{tag}'\n"),
                    None => format!("TARGET_PID {target}\n"),
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        BareServer {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // One connection wakes the accept loop to see the flag.
        let _ = std::os::unix::net::UnixStream::connect(self.dir.path().join("control.sock"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn rows(bench: &Bench, emit: Emit) {
    // A target that stays blocked: nothing else wakes the controller during the load.
    let c = Controller::start(&bench.python, "wait_long_sleep.py", "sleeping 300 s");
    let dir = c.pipe_dir();
    let bare = BareServer::start(c.target);
    let name = |what: &str, (requests, clients): (usize, usize)| {
        let who = if clients == 1 {
            "1 client".to_string()
        } else {
            format!("{clients} concurrent clients")
        };
        format!("{} requests, {what}, {who}", thousands(requests))
    };
    let one = (REQUESTS, 1);
    let twenty = (REQUESTS, CONCURRENT);
    let socket_1 = load(name("socket", one), Transport::Socket, &dir, one, c.target);
    let bare_dir = bare.dir();
    let bare_1 = load(
        name("bare Unix socket server", one),
        Transport::Socket,
        &bare_dir,
        one,
        c.target,
    );
    let socket_20 = load(
        name("socket", twenty),
        Transport::Socket,
        &dir,
        twenty,
        c.target,
    );
    let bare_20 = load(
        name("bare Unix socket server", twenty),
        Transport::Socket,
        &bare_dir,
        twenty,
        c.target,
    );
    let fifo_1 = load(name("FIFOs", one), Transport::Fifos, &dir, one, c.target);
    emit(Row::new("requests", socket_1.clone(), bare_1));
    emit(Row::new("requests", socket_20.clone(), bare_20));
    emit(Row::new("requests", fifo_1, socket_1));
    let fifo_twenty = (FIFO_CONCURRENT_REQUESTS, CONCURRENT);
    let fifo_20 = load(
        name("FIFOs (unsupported: one client at a time)", fifo_twenty),
        Transport::Fifos,
        &dir,
        fifo_twenty,
        c.target,
    );
    emit(Row::new("requests", fifo_20, socket_20));
}
