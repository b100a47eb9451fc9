//! The SIGURG waker for the rest of the tree. The target gets it at start-up
//! ([`super::wake::install_at_start`]), and children it *forks* inherit it. A child that
//! is a fresh interpreter (a multiprocessing `forkserver` or `spawn` child, a
//! `subprocess` running Python) starts without it, and once it blocks (a pool worker
//! waiting for tasks) nothing can wake it for an attach. So the controller watches the
//! tree and writes the waker into each new Python process while it still runs Python code
//! (its imports at start-up take tens of milliseconds).
//!
//! No event says "a process was started" (the proc connector needs `CAP_NET_ADMIN`, and a
//! ptrace of the tree would keep pdb out), so the tree is polled: every 20 ms for 3 s after
//! the controller starts or a new process appears, then every 500 ms. Not journaled: it
//! decides nothing the core does, and a grant's script installs the waker as well.
use super::tree::children;
use super::wake::{catches, install_at_start, InjectionGate, InstallOutcome};
use crate::core::delivery::WAKE_SIGNAL;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BUSY_POLL: Duration = Duration::from_millis(20);
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long after a change the tree is polled fast.
const BUSY_FOR: Duration = Duration::from_secs(3);
/// Bounds for one child: a process that is not Python (or not yet) is given up on after
/// `START_WITHIN`; a written waker still pending after `WATCH_FOR` is taken back (a
/// request left waiting in a blocked thread would swallow its next Ctrl-C).
const START_WITHIN: Duration = Duration::from_millis(1500);
const WATCH_FOR: Duration = Duration::from_millis(500);
/// More descendants than this are not watched (the listing's own bound).
const MAX_WATCHED: usize = 256;

/// Watches the descendants of `target` until `stop` fires or is dropped; `script` is the
/// waker (a path the children can open, as for the target); `log` tells the person
/// watching the controller.
pub fn watch(target: u32, script: PathBuf, stop: Receiver<()>, log: fn(&str)) {
    // A process is known by its pid *and* its command line: a child that `spawn` or
    // `subprocess` starts is first a fork of its parent (with the parent's handler and
    // runtime), then exec's the new interpreter; only the second is the one to give the
    // waker.
    let mut seen: HashSet<(u32, Vec<u8>)> = HashSet::new();
    let mut busy_until = Instant::now() + BUSY_FOR;
    loop {
        let pause = if Instant::now() < busy_until {
            BUSY_POLL
        } else {
            IDLE_POLL
        };
        match stop.recv_timeout(pause) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now_in_tree: Vec<(u32, Vec<u8>)> = descendants(target)
            .into_iter()
            .map(|pid| (pid, command_line(pid)))
            .collect();
        let new: Vec<u32> = now_in_tree
            .iter()
            .filter(|known| !seen.contains(*known))
            .map(|(pid, _)| *pid)
            .collect();
        // Forget the ones gone, so that a recycled pid is a new process again.
        seen.retain(|known| now_in_tree.contains(known));
        seen.extend(now_in_tree);
        if new.is_empty() {
            continue;
        }
        busy_until = Instant::now() + BUSY_FOR;
        for pid in new {
            // A forked child inherited the handler; a process that ignores or handles
            // SIGURG itself is left as it is (as the target would be).
            if catches(pid as i32, WAKE_SIGNAL) != Some(false) || !looks_like_python(pid) {
                continue;
            }
            let script = script.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("waker-{pid}"))
                .spawn(move || install_in_child(pid, &script, log));
            if let Err(e) = spawned {
                log(&format!("SIGURG waker for pid {pid} not attempted: {e}"));
            }
        }
    }
}

/// The start of `/proc/PID/cmdline` (empty when gone): enough to tell an exec.
fn command_line(pid: u32) -> Vec<u8> {
    let mut bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes.truncate(4096);
    bytes
}

fn install_in_child(pid: u32, script: &std::path::Path, log: fn(&str)) {
    // Its own gate: grants into this child come later, once a client has seen it in
    // `ps`; the installer is done within START_WITHIN + WATCH_FOR of its start.
    let gate = InjectionGate::default();
    match install_at_start(pid as i32, script, &gate, START_WITHIN, WATCH_FOR) {
        InstallOutcome::Installed { after } => log(&format!(
            "SIGURG waker installed in pid {pid} of the tree after {} ms",
            after.as_millis()
        )),
        InstallOutcome::StillPending { .. } => log(&format!(
            "SIGURG waker for pid {pid} of the tree not run in time (it blocked at once), so taken back; attaching to it waits until it runs Python code"
        )),
        // Not Python, or gone, or it installed the waker itself: nothing to say.
        InstallOutcome::NotWritten { .. }
        | InstallOutcome::LeftToGrant
        | InstallOutcome::AlreadyCaught { .. } => {}
    }
}

/// Whether `pid` runs a Python interpreter: its executable is named like one, or it maps
/// a `libpython` (an embedding program). Cheap, so that the tree's `git`s and shells are
/// not searched for a runtime for a second and a half each.
fn looks_like_python(pid: u32) -> bool {
    let named = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name.starts_with("python"));
    named
        || std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|maps| maps.contains("/libpython3"))
}

/// Every process below `target`, bounded.
fn descendants(target: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = children(target);
    while let Some(pid) = queue.pop() {
        if found.len() >= MAX_WATCHED {
            break;
        }
        if !found.contains(&pid) {
            found.push(pid);
            queue.extend(children(pid));
        }
    }
    found
}
