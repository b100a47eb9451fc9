//! The control socket (issue 9, defect 4: replies reached the wrong client). One connection
//! per request: each reply goes back on its own connection, so concurrent clients, a
//! client that holds `response` without reading, or a controller stopped and continued
//! can no longer hand one client another's reply; and the kernel names the asker, which
//! the grant policy and the journal use.
use crate::support::*;
use helicopter_parent::core::journal::replay;
use helicopter_parent::core::supervisor::ControllerExit;
use helicopter_parent::io::exchange::{
    exchange_raw, write_control, ExchangeError, NextLine, ResponseReader,
};
use helicopter_parent::io::socket_exchange::{exchange_socket_raw, SocketExchangeError};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The load of the issue: 20 concurrent clients, 200 round trips each.
const CLIENTS: usize = 20;
const ROUNDS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Socket,
    Fifo,
}

/// Round `i` of client `client` (pid `pid`): the line, and the only reply that is its own.
/// GRANT_ACCESS of a malformed pid echoes the text, so those replies name their request.
fn request(client: usize, i: usize, pid: u32, target: u32) -> (String, String) {
    match i % 4 {
        0 | 2 => ("GET_TARGET_PID".into(), format!("TARGET_PID {target}")),
        1 => (format!("GRANT_ACCESS {pid}"), "READY".into()),
        _ => {
            let tag = format!("x{client}_{i}");
            (
                format!("GRANT_ACCESS {tag}"),
                format!("ERROR: invalid pid '{tag}': not a decimal number"),
            )
        }
    }
}

/// What one client saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    /// A reply that was not the reply to this request.
    mismatched: usize,
    /// No reply before the deadline.
    lost: usize,
    /// Any other failure.
    failed: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.ok += o.ok;
        self.mismatched += o.mismatched;
        self.lost += o.lost;
        self.failed += o.failed;
    }
}

/// One load client, run as a process of its own (the e2e binary again, see
/// [`load_worker`]) so that its pid, which the socket reports, is its own.
#[test]
#[ignore = "a load client, started by the load tests with HELI_LOAD_* set"]
fn load_worker() {
    let Ok(dir) = std::env::var("HELI_LOAD_DIR") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let transport = match var("HELI_LOAD_TRANSPORT").as_str() {
        "socket" => Transport::Socket,
        _ => Transport::Fifo,
    };
    let client: usize = var("HELI_LOAD_CLIENT").parse().unwrap();
    let rounds: usize = var("HELI_LOAD_ROUNDS").parse().unwrap();
    let target: u32 = var("HELI_LOAD_TARGET").parse().unwrap();
    let timeout = Duration::from_millis(var("HELI_LOAD_TIMEOUT_MS").parse().unwrap());
    // Every client starts when the test says go: the load is concurrent from its start.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let pid = std::process::id();
    let dir = Path::new(&dir);
    let mut tally = Tally::default();
    for i in 0..rounds {
        let (line, expected) = request(client, i, pid, target);
        let reply = match transport {
            Transport::Socket => exchange_socket_raw(dir, &line, timeout).map_err(|e| match e {
                SocketExchangeError::Failed(ExchangeError::Timeout { .. }) => None,
                other => Some(other.to_string()),
            }),
            Transport::Fifo => exchange_raw(dir, &line, timeout, true)
                .map(Option::unwrap_or_default)
                .map_err(|e| match e {
                    ExchangeError::Timeout { .. } => None,
                    other => Some(other.to_string()),
                }),
        };
        match reply {
            Ok(reply) if reply == expected => tally.ok += 1,
            // A grant while another client's is held: that client's session is open and
            // is not taken over (issue 10). Still this request's own reply.
            Ok(reply)
                if expected == "READY"
                    && reply.starts_with("ERROR: a debugger session is already attached") =>
            {
                tally.ok += 1
            }
            Ok(reply) => {
                tally.mismatched += 1;
                if tally.mismatched <= 2 {
                    println!("MISMATCH client {client} round {i}: sent {line:?}, got {reply:?}");
                }
            }
            Err(None) => tally.lost += 1,
            Err(Some(why)) => {
                tally.failed += 1;
                if tally.failed <= 2 {
                    println!("FAILED client {client} round {i}: {line:?}: {why}");
                }
            }
        }
    }
    println!(
        "LOAD {} {} {} {}",
        tally.ok, tally.mismatched, tally.lost, tally.failed
    );
}

/// Runs `CLIENTS` load clients over `transport` against a controller of counter.py.
fn run_load(transport: Transport, timeout: Duration) -> (Tally, Duration, Vec<String>) {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let exe = std::env::current_exe().unwrap();
    let mut workers = Vec::new();
    for client in 0..CLIENTS {
        let mut child = Command::new(&exe)
            .args(["socket::load_worker", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "-q"])
            .env("HELI_LOAD_DIR", &controller.dir)
            .env(
                "HELI_LOAD_TRANSPORT",
                match transport {
                    Transport::Socket => "socket",
                    Transport::Fifo => "fifo",
                },
            )
            .env("HELI_LOAD_CLIENT", client.to_string())
            .env("HELI_LOAD_ROUNDS", ROUNDS.to_string())
            .env("HELI_LOAD_TARGET", controller.target_pid.to_string())
            .env("HELI_LOAD_TIMEOUT_MS", timeout.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a load client");
        let out = Lines::spawn(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        workers.push((KillOnDrop(Some(child)), out, stdin));
    }
    let started = Instant::now();
    for (_, _, stdin) in &mut workers {
        stdin.write_all(b"go\n").unwrap();
    }
    let mut total = Tally::default();
    let mut notes = Vec::new();
    for (mut guard, mut out, _) in workers {
        let status = wait_with_deadline(guard.0.as_mut().unwrap(), Duration::from_secs(300));
        guard.0 = None;
        assert!(status.success(), "a load client failed: {status:?}");
        let lines = out.drain().to_vec();
        let load = lines
            .iter()
            .find_map(|l| l.strip_prefix("LOAD "))
            .unwrap_or_else(|| panic!("no LOAD line from a client: {lines:?}"));
        let n: Vec<usize> = load.split(' ').map(|n| n.parse().unwrap()).collect();
        total += Tally {
            ok: n[0],
            mismatched: n[1],
            lost: n[2],
            failed: n[3],
        };
        notes.extend(
            lines
                .into_iter()
                .filter(|l| l.starts_with("MISMATCH") || l.starts_with("FAILED")),
        );
    }
    (total, started.elapsed(), notes)
}

#[test]
fn twenty_concurrent_clients_each_get_every_reply_and_only_their_own() {
    let (tally, took, notes) = run_load(Transport::Socket, Duration::from_secs(10));
    eprintln!(
        "socket: {CLIENTS} clients x {ROUNDS} round trips in {took:?}: {tally:?}, {} of {} replies mismatched, {} lost",
        tally.mismatched,
        CLIENTS * ROUNDS,
        tally.lost
    );
    assert_eq!(
        (tally.mismatched, tally.lost, tally.failed),
        (0, 0, 0),
        "{tally:?}: {notes:#?}"
    );
    assert_eq!(tally.ok, CLIENTS * ROUNDS);
}

/// The same load over the FIFOs, which remain for seed and 0.x clients, one at a time:
/// for comparison only, nothing asserted (run with `-- --ignored`).
#[test]
#[ignore = "comparison only: prints how the shared FIFOs fare under the socket test's load"]
fn comparison_the_same_load_over_the_fifos() {
    let (tally, took, notes) = run_load(Transport::Fifo, Duration::from_secs(2));
    eprintln!(
        "FIFOs: {CLIENTS} clients x {ROUNDS} round trips in {took:?}: {tally:?}, {} of {} replies mismatched, {} lost; first: {:#?}",
        tally.mismatched,
        CLIENTS * ROUNDS,
        tally.lost,
        notes.iter().take(4).collect::<Vec<_>>()
    );
}

/// A small Python client of the socket: the protocol needs nothing of ours.
const PY_ASK: &str = r#"
import os, socket, subprocess, sys
path = sys.argv[1]
def ask(line):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().rstrip("\n")
child = subprocess.Popen(["sleep", "30"])
try:
    print("own", ask(f"GRANT_ACCESS {os.getpid()}"), flush=True)
    print("child", ask(f"GRANT_ACCESS {child.pid}"), flush=True)
    print("parent", ask(f"GRANT_ACCESS {os.getppid()}"), flush=True)
    print("pid", os.getpid(), flush=True)
finally:
    child.kill()
    child.wait()
"#;

#[test]
fn grant_for_a_process_that_is_neither_the_asker_nor_its_descendant_is_refused() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let child = Command::new(python())
        .arg("-c")
        .arg(PY_ASK)
        .arg(controller.pipe("control.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(child));
    let mut out = Lines::spawn(guard.0.as_mut().unwrap().stdout.take().unwrap());
    let mut err = Lines::spawn(guard.0.as_mut().unwrap().stderr.take().unwrap());
    let status = wait_with_deadline(guard.0.as_mut().unwrap(), TIMEOUT);
    guard.0 = None;
    let lines = out.drain().to_vec();
    assert!(status.success(), "{lines:?} {:?}", err.drain());
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
            .to_string()
    };
    let asker = field("pid");
    assert_eq!(field("own"), "READY", "the asker itself");
    assert_eq!(field("child"), "READY", "a process the asker started");
    let me = std::process::id();
    assert_eq!(
        field("parent"),
        format!("ERROR: pid {me} is neither the asker (pid {asker}) nor one of its descendants: over the socket a client may ask access only for itself or a process it started")
    );
}

#[test]
fn the_journal_records_the_real_requester_and_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal.jsonl");
    let mut controller =
        Controller::start_with("counter.py", &["--journal", journal.to_str().unwrap()]);
    controller.stdout.wait_for("counter ready");
    let me = std::process::id();
    let uid = unsafe { libc::getuid() };
    let timeout = Duration::from_secs(10);
    assert_eq!(
        exchange_socket_raw(&controller.dir, &format!("GRANT_ACCESS {me}"), timeout).unwrap(),
        "READY"
    );
    assert_eq!(
        exchange_socket_raw(&controller.dir, "TERMINATE", timeout).unwrap(),
        "READY"
    );
    assert_eq!(controller.wait(), ControllerExit::Terminated.code());
    assert!(
        !controller.pipe("control.sock").exists() && !controller.dir.exists(),
        "the socket goes with the pipes, and the directory with them"
    );
    let text = std::fs::read_to_string(&journal).unwrap();
    let origin = format!(r#""pid":{me},"uid":{uid}}}}}"#);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#""origin":{"via":"socket""#))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|l| l.ends_with(&origin)),
        "each socket line names pid {me}, uid {uid}: {lines:#?}"
    );
    assert!(text.contains(&format!(
        r#""effect":"inspect_client","pid":{me},"asker":{me}"#
    )));
    assert!(text.contains(r#""kinship":"asker""#), "{text}");
    let done = replay(&text, true).unwrap_or_else(|e| panic!("{e}"));
    assert!(done
        .session
        .transcript()
        .contains(&format!("from pid {me}, uid {uid}")));
}

#[test]
fn exchanges_are_not_shifted_by_a_client_holding_response_without_reading() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The stuck FIFO client: holds `response` open, sends five lines, reads nothing.
    let mut stuck = ResponseReader::open(&controller.dir).unwrap();
    write_control(
        &controller.dir,
        "GET_TARGET_PID\n".repeat(5).as_bytes(),
        deadline,
    )
    .unwrap();
    let me = std::process::id();
    for i in 0..100 {
        let (line, expected) = request(0, i, me, controller.target_pid);
        assert_eq!(
            exchange_socket_raw(&controller.dir, &line, Duration::from_secs(10)).unwrap(),
            expected,
            "round {i}"
        );
    }
    // The FIFO got its own five replies and nothing of the socket's.
    for _ in 0..5 {
        assert_eq!(
            stuck.next_line(deadline, None).unwrap(),
            NextLine::Line(format!("TARGET_PID {}", controller.target_pid))
        );
    }
    // A second reader sees what is left in the pipe: nothing (0 without a writer, or
    // EAGAIN while the controller's writer has it open).
    let mut response =
        helicopter_parent::io::pipes::open_reader(&controller.pipe("response")).unwrap();
    let mut rest = [0u8; 64];
    let left = response.read(&mut rest);
    assert!(
        !matches!(left, Ok(n) if n > 0),
        "more on the response pipe: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Waits until the kernel reports child `pid` stopped (an event: waitid, WNOWAIT so the
/// child stays waitable).
fn wait_stopped(pid: u32) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid only fills `info`.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WSTOPPED | libc::WNOWAIT) };
        let _ = tx.send(rc);
    });
    assert_eq!(
        rx.recv_timeout(TIMEOUT)
            .expect("the controller never stopped"),
        0
    );
}

#[test]
fn a_stopped_and_continued_controller_answers_each_client_with_its_own_reply() {
    let mut controller = Controller::start("counter.py");
    controller.stdout.wait_for("counter ready");
    let dir = controller.dir.clone();
    controller.signal(libc::SIGSTOP);
    wait_stopped(controller.child.id());
    // Clients of a stopped controller: connected and sent, then gave up.
    let stale: Vec<_> = (0..3)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                exchange_socket_raw(&dir, "GET_TARGET_PID", Duration::from_millis(300))
            })
        })
        .collect();
    for client in stale {
        let result = client.join().unwrap();
        assert!(
            matches!(
                result,
                Err(SocketExchangeError::Failed(ExchangeError::Timeout { .. }))
            ),
            "{result:?}"
        );
    }
    controller.signal(libc::SIGCONT);
    let me = std::process::id();
    let timeout = Duration::from_secs(10);
    assert_eq!(
        exchange_socket_raw(&dir, &format!("GRANT_ACCESS {me}"), timeout).unwrap(),
        "READY",
        "not a stale TARGET_PID"
    );
    assert_eq!(
        exchange_socket_raw(&dir, "GRANT_ACCESS fresh", timeout).unwrap(),
        "ERROR: invalid pid 'fresh': not a decimal number"
    );
    // The stale requests were handled when the controller ran again; their replies had
    // nobody to go to and were dropped, and said so.
    let line = controller.stderr.wait_for("not delivered");
    assert!(
        line.contains(&format!("TARGET_PID {}", controller.target_pid)),
        "{line}"
    );
}

#[test]
fn bad_requests_get_an_error_never_a_hang() {
    let controller = Controller::start("counter.py");
    let path = controller.pipe("control.sock");
    let ask = |bytes: &[u8], close_write: bool| -> String {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        if close_write {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    let target = controller.target_pid;
    assert_eq!(
        ask(b"\n", false),
        "ERROR: empty line: a connection carries one command\n"
    );
    assert_eq!(
        ask(b"get_target_pid", true),
        format!("TARGET_PID {target}\n"),
        "a last line without newline"
    );
    assert_eq!(
        ask(b"GET_TARGET_PID\nTERMINATE\n", false),
        format!("TARGET_PID {target}\n"),
        "one request per connection: the rest is not read"
    );
    assert!(ask(&[b'A'; 5000], true).starts_with("ERROR: line of 5000 bytes is too long"));
    assert!(ask(b"\xff\xfe\n", false).starts_with("ERROR: line of 2 bytes is not valid UTF-8"));
    // Connected and silent: told, and closed, after the server's wait.
    let started = Instant::now();
    assert_eq!(
        ask(b"", false),
        "ERROR: no complete command line within 5 s of connecting\n"
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    // A connection that leaves without a word costs nothing: the controller still serves.
    drop(UnixStream::connect(&path).unwrap());
    assert_eq!(
        ask(b"GET_TARGET_PID\n", false),
        format!("TARGET_PID {target}\n")
    );
}

#[test]
fn clients_tell_a_missing_socket_from_a_dead_one() {
    let tmp = tempfile::tempdir().unwrap();
    let short = Duration::from_secs(2);
    assert!(matches!(
        exchange_socket_raw(tmp.path(), "GET_TARGET_PID", short),
        Err(SocketExchangeError::NoSocket(_))
    ));
    assert!(matches!(
        exchange_socket_raw(&tmp.path().join("absent"), "GET_TARGET_PID", short),
        Err(SocketExchangeError::NoSocket(_))
    ));
    // A socket file without a listener: a controller that was killed.
    drop(std::os::unix::net::UnixListener::bind(tmp.path().join("control.sock")).unwrap());
    let err = exchange_socket_raw(tmp.path(), "GET_TARGET_PID", short).unwrap_err();
    assert!(
        matches!(
            err,
            SocketExchangeError::Failed(ExchangeError::NotServed(_))
        ),
        "{err:?}"
    );
}

#[test]
fn a_socket_left_by_a_killed_controller_refuses_and_the_next_controller_replaces_it() {
    let mut first = Controller::start("counter.py");
    let dir = first.dir.clone();
    first.signal(libc::SIGKILL);
    let status = wait_with_deadline(&mut first.child, TIMEOUT);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(dir.join("control.sock").exists(), "left behind by SIGKILL");
    let err = exchange_socket_raw(&dir, "GET_TARGET_PID", Duration::from_secs(2)).unwrap_err();
    assert!(
        matches!(
            err,
            SocketExchangeError::Failed(ExchangeError::NotServed(_))
        ),
        "{err:?}"
    );
    let second = Command::new(bin("heli-controller"))
        .arg("--pipe-dir")
        .arg(&dir)
        .arg("--python")
        .arg(python())
        .arg(fixture("counter.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = KillOnDrop(Some(second));
    let mut stderr = Lines::spawn(second.0.as_mut().unwrap().stderr.take().unwrap());
    let started = stderr.wait_for(" started: ");
    let target: u32 = started.split_whitespace().nth(2).unwrap().parse().unwrap();
    stderr.wait_for("listening on");
    assert_eq!(
        exchange_socket_raw(&dir, "GET_TARGET_PID", Duration::from_secs(10)).unwrap(),
        format!("TARGET_PID {target}")
    );
    assert_eq!(
        exchange_socket_raw(&dir, "TERMINATE", Duration::from_secs(10)).unwrap(),
        "READY"
    );
    let status = wait_with_deadline(second.0.as_mut().unwrap(), TIMEOUT);
    second.0 = None;
    assert_eq!(status.code(), Some(ControllerExit::Terminated.code()));
}
