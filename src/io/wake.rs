//! Waking a target that waits. A thread blocked in a system call (epoll_wait, a lock, a
//! long sleep) runs no Python code and so never picks up a pending remote-exec request.
//! A signal with a Python-level handler wakes it: the call returns EINTR, CPython runs the
//! handler on the main thread and retries the call (PEP 475), and on the way through the
//! eval breaker the pending request runs. The blocked call then resumes as before.
//!
//! The signal is SIGURG ([`WAKE_SIGNAL`]): its default action is to ignore it, so sending
//! it to a process without a handler changes nothing. The handler is installed by the
//! target's interpreter itself while it starts ([`super::startup_waker`]); for an
//! interpreter that skipped that, by a tiny script ([`waker_script`]) written into it
//! right after start-up; and again at the head of every grant script. Each installs
//! a no-op handler only while SIGURG's disposition is still the default, so a target that
//! handles SIGURG itself keeps its own handler (which is then what a wake calls).
//!
//! When to wake is the core's decision ([`crate::core::delivery`]); this module only sends
//! the signal and installs the handler. `--no-wake` (or `HELI_NO_WAKE=1`) turns both off.
use crate::core::delivery::WAKE_SIGNAL;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::inject::{InjectError, PythonProcess, ThreadChoice};

/// Whether waking was turned off from the environment (`HELI_NO_WAKE=1`), for the
/// client, which has no `--no-wake` of its own to be told.
pub fn disabled_by_env() -> bool {
    std::env::var_os("HELI_NO_WAKE").is_some_and(|v| v == "1")
}

/// Python source that installs the no-op SIGURG handler in the thread that runs it.
/// Only the main thread may install a handler: elsewhere `signal` raises ValueError,
/// which is swallowed, like every other failure: nothing of this may ever show in the
/// target (a remote script's exception would be printed on the target's stderr).
pub fn waker_snippet() -> &'static str {
    // The handler is where pdb stops in a target it had to wake (the handler's call is
    // the first Python event of a blocked main thread), so it is made to look like what
    // it is, and it sees `__main__`'s globals: `p counter` works there as in the script,
    // and `up` shows the code that waited. Its name is bound nowhere in the target.
    r#"def _helicopter_parent_waker():
    try:
        import _signal, sys
        if _signal.getsignal(_signal.SIGURG) != _signal.SIG_DFL:
            return
        main = sys.modules.get("__main__")
        scope = {}
        exec(compile(
            "def helicopter_parent_woke_this_thread(signum, frame):\n"
            "    # A no-op: being called is the point (the debugger attached here).\n"
            "    pass\n",
            "<helicopter-parent: SIGURG woke this thread for the debugger; 'up' shows your code>",
            "exec"), scope)
        handler = scope["helicopter_parent_woke_this_thread"]
        if main is not None:
            handler = type(handler)(handler.__code__, main.__dict__, handler.__name__)
        _signal.signal(_signal.SIGURG, handler)
    except KeyboardInterrupt:
        # A Ctrl-C (or stop signal) that came while this ran was raised here, and CPython
        # would report and drop it: it is given back to the main thread from another
        # thread, which runs only once this script has let go of the interpreter.
        import _thread
        _thread.start_new_thread(_thread.interrupt_main, ())
    except Exception:
        pass
_helicopter_parent_waker()
del _helicopter_parent_waker
"#
}

/// The whole start-up script: the snippet alone.
pub fn waker_script() -> String {
    waker_snippet().to_string()
}

/// Whether `pid` catches `signal` (its bit in `SigCgt` of `/proc/PID/status`).
pub fn catches(pid: i32, signal: i32) -> Option<bool> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    Some(mask & (1u64 << (signal - 1)) != 0)
}

/// Sends [`WAKE_SIGNAL`] to thread `tid` of `pid`. `None` when sent, else why not. A
/// target that does not catch the signal is not sent it: it would do nothing there, and
/// the reason is worth saying.
pub fn wake_thread(pid: i32, tid: i32) -> Option<String> {
    match catches(pid, WAKE_SIGNAL) {
        Some(true) => {}
        Some(false) => {
            return Some(
                "the target does not catch SIGURG (no waker installed yet, or it ignores SIGURG)"
                    .into(),
            )
        }
        None => return Some("the target's signal dispositions are unreadable".into()),
    }
    // SAFETY: tgkill takes plain integers; it signals exactly that thread of that process,
    // so a recycled tid in another process cannot be hit.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, WAKE_SIGNAL) };
    if rc == 0 {
        None
    } else {
        Some(format!("tgkill: {}", std::io::Error::last_os_error()))
    }
}

/// Shared by the start-up installer and the grant injector: the installer writes its
/// request only while no grant has touched the target, so it never overwrites a grant's
/// request (the grant script installs the waker too, so the reverse is harmless).
#[derive(Clone, Default)]
pub struct InjectionGate {
    grants_started: Arc<Mutex<bool>>,
}

impl InjectionGate {
    /// Runs `work` as a grant's injection step: from now on the installer stays away.
    pub fn grant<T>(&self, work: impl FnOnce() -> T) -> T {
        let mut started = self.lock();
        *started = true;
        work()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        // A panic elsewhere while holding the gate leaves a valid bool behind.
        self.grants_started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What became of the start-up installation, for the controller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    /// The target ran the script this long after the installer started.
    Installed { after: Duration },
    /// Written, but the main thread ran no Python code in time (it blocked at once), so
    /// it was taken back; a grant installs the waker too.
    StillPending {
        tid: i32,
        /// When it was written.
        after: Duration,
        /// The last failure before it could be written.
        why: String,
    },
    /// A grant came first; its script installs the waker.
    LeftToGrant,
    /// The interpreter caught SIGURG before anything was written: the start-up
    /// `sitecustomize` installed the waker ([`super::startup_waker`]), or the program
    /// handles SIGURG itself.
    AlreadyCaught { after: Duration },
    /// Never written: why.
    NotWritten { why: String },
}

/// Writes the waker script (at `script`, which must stay readable for the controller's
/// life) into the target's main thread as soon as the interpreter accepts it, retrying
/// while it starts, and watches for a while whether it ran. Never withdraws: the script
/// is harmless whenever it runs.
pub fn install_at_start(
    pid: i32,
    script: &Path,
    gate: &InjectionGate,
    start_within: Duration,
    watch_for: Duration,
) -> InstallOutcome {
    let begun = Instant::now();
    let mut process: Option<PythonProcess> = None;
    let mut last_error = String::from("not tried");
    let (tid, written_after) = loop {
        if begun.elapsed() > start_within {
            return InstallOutcome::NotWritten { why: last_error };
        }
        {
            let started = gate.lock();
            if *started {
                return InstallOutcome::LeftToGrant;
            }
            // Right after the fork the process may not even be Python yet, and then its
            // runtime is not initialised: every failure here may pass until the deadline.
            if process.is_none() {
                match PythonProcess::open(pid) {
                    Ok(opened) => process = Some(opened),
                    // Gone: nothing will ever take the waker.
                    Err(e @ InjectError::NoSuchProcess { .. }) => {
                        return InstallOutcome::NotWritten { why: e.to_string() }
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if let Some(opened) = &process {
                if catches(pid, WAKE_SIGNAL) == Some(true) {
                    return InstallOutcome::AlreadyCaught {
                        after: begun.elapsed(),
                    };
                }
                // As "the main thread": CPython names it only once the interpreter is
                // fully initialised, right before __main__ runs. Earlier, a request would
                // run while the import system is half built (measured: "Can't open
                // debugger script", even a crash). Between that moment and a script that
                // blocks at once (`time.sleep(300)` as its first statement) there are
                // only the script's compilation and first statements, so the name is
                // polled without sleeping while it is missing.
                match opened.schedule(ThreadChoice::Main, script) {
                    Ok(tid) => break (tid, begun.elapsed()),
                    Err(InjectError::NoMainThread { .. }) => {
                        last_error = "the interpreter did not finish starting".into();
                        drop(started);
                        std::thread::yield_now();
                        continue;
                    }
                    Err(e) => {
                        last_error = e.to_string();
                        // Offsets read before the runtime was complete may be stale.
                        process = None;
                    }
                }
            }
        }
        // Not yet Python (right after the fork), or its runtime not readable yet: a poll,
        // since no event says "the interpreter exists".
        std::thread::sleep(Duration::from_millis(1));
    };
    let process = process.expect("scheduled through it");
    let watching = Instant::now();
    loop {
        let started = gate.lock();
        if *started {
            return InstallOutcome::LeftToGrant;
        }
        match process.is_pending(tid) {
            Ok(false) => {
                return InstallOutcome::Installed {
                    after: begun.elapsed(),
                }
            }
            Ok(true) if watching.elapsed() < watch_for => {}
            // Not left pending: a request waiting in a blocked main thread runs when a
            // signal interrupts it, and CPython then loses the KeyboardInterrupt of that
            // signal (measured: the first Ctrl-C or stop signal did nothing).
            Ok(true) | Err(_) => {
                let withdrawn = process.withdraw(tid).unwrap_or(false);
                return if withdrawn {
                    InstallOutcome::StillPending {
                        tid,
                        after: written_after,
                        why: last_error,
                    }
                } else {
                    InstallOutcome::Installed {
                        after: begun.elapsed(),
                    }
                };
            }
        }
        drop(started);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long pdb's request may wait in the target before the client wakes it, unless
/// `HELI_PDB_WAKE_AFTER_MS` says otherwise. A woken thread makes pdb stop in the waker's
/// handler (the only Python code a blocked thread runs), where the script's module
/// globals are visible but not the locals of the function that waits (`up` shows them).
/// A loop that sleeps in steps of up to a second (the seed's demo) reaches its own code
/// within this grace, so pdb stops there as it always did, and `p counter` works.
pub const PDB_WAKE_AFTER: Duration = Duration::from_millis(1200);

pub fn pdb_wake_after() -> Duration {
    std::env::var("HELI_PDB_WAKE_AFTER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(PDB_WAKE_AFTER, Duration::from_millis)
}

/// What a blocked thread waits in, read from `/proc/PID/task/TID/syscall` (x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedIn {
    /// A sleep that ends by itself after this long.
    Sleep { left: Duration },
    /// Any other system call: a wait with no end the client can tell (epoll, a lock, a read).
    Other,
    /// Not in a system call, or unreadable.
    Unknown,
}

/// How long the client lets pdb's request wait before waking the thread: a sleep that
/// ends within the grace ends by itself, and pdb then stops in the sleeper's own code;
/// any other wait may never end, so it is woken at once.
pub fn pdb_wake_delay(blocked: BlockedIn, grace: Duration) -> Duration {
    match blocked {
        BlockedIn::Sleep { left } if left <= grace => grace,
        BlockedIn::Sleep { .. } | BlockedIn::Other => Duration::ZERO,
        BlockedIn::Unknown => grace,
    }
}

/// Reads what thread `tid` of `pid` is blocked in. The sleep's deadline lives in the
/// target's memory (CPython's `time.sleep` passes an absolute CLOCK_MONOTONIC time), which
/// the client may read once the grant declared it.
pub fn blocked_in(pid: i32, tid: i32) -> BlockedIn {
    const NANOSLEEP: u64 = 35;
    const CLOCK_NANOSLEEP: u64 = 230;
    const TIMER_ABSTIME: u64 = 1;
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
        return BlockedIn::Unknown;
    };
    let words: Vec<u64> = text
        .split_whitespace()
        .map_while(|w| {
            w.strip_prefix("0x")
                .map_or_else(|| w.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .collect();
    let Some(&nr) = words.first() else {
        // "running", or "-1 ..." (not in a system call)
        return BlockedIn::Unknown;
    };
    let read_timespec = |addr: u64| -> Option<Duration> {
        let mut raw = [0i64; 2];
        let local = libc::iovec {
            iov_base: raw.as_mut_ptr().cast(),
            iov_len: 16,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: 16,
        };
        // SAFETY: reads 16 bytes of another process into our own 16-byte buffer.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        (n == 16 && raw[0] >= 0 && (0..1_000_000_000).contains(&raw[1]))
            .then(|| Duration::new(raw[0] as u64, raw[1] as u32))
    };
    match (nr, words.get(1..4)) {
        (CLOCK_NANOSLEEP, Some(&[clock, flags, request])) => match read_timespec(request) {
            Some(at) if flags & TIMER_ABSTIME != 0 => {
                let mut now = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: clock_gettime writes into the timespec we own.
                if unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut now) } != 0 {
                    return BlockedIn::Unknown;
                }
                let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
                BlockedIn::Sleep {
                    left: at.saturating_sub(now),
                }
            }
            Some(relative) => BlockedIn::Sleep { left: relative },
            None => BlockedIn::Unknown,
        },
        (NANOSLEEP, Some(&[request, ..])) => {
            read_timespec(request).map_or(BlockedIn::Unknown, |left| BlockedIn::Sleep { left })
        }
        _ => BlockedIn::Other,
    }
}

/// Wakes the target while pdb's own injection (`python -m pdb -p`, which writes its
/// request with `sys.remote_exec` into the main thread) waits in it: SIGURG to the main
/// thread once the request has been pending for `grace`, as long as it is, until it is
/// taken, `done` is set (pdb exited) or `within` has passed. Returns whether it ever had to wake. Runs in the
/// client, which may read the target's memory once the grant declared it.
pub fn wake_for_pdb(
    target: i32,
    done: &std::sync::atomic::AtomicBool,
    grace: Duration,
    within: Duration,
) -> bool {
    use std::sync::atomic::Ordering;
    let begun = Instant::now();
    let process = PythonProcess::open(target);
    let Ok(process) = process else {
        // Nothing to watch the request with; waking blindly for the whole session could
        // call a handler while pdb traces the main thread.
        return false;
    };
    let mut woke = false;
    let mut pending_since: Option<Instant> = None;
    while begun.elapsed() < within && !done.load(Ordering::Relaxed) {
        let main = match process.main_thread_tid() {
            Ok(Some(tid)) => tid,
            Ok(None) | Err(_) => return woke,
        };
        let pending = process.is_pending(main);
        match pending {
            Ok(true) => {
                let since = *pending_since.get_or_insert_with(Instant::now);
                // The client's progress line says where the target is while this waits
                // (io::client's watcher of pdb's request).
                let blocked = blocked_in(target, main);
                let delay = pdb_wake_delay(blocked, grace);
                // Once woken, the thread runs the handler and then pdb's script: it is
                // not woken again until it is back asleep outside pdb's code.
                if since.elapsed() >= delay
                    && pdb_thread(&process, main) == PdbThread::Asleep
                    && wake_thread(target, main).is_none()
                {
                    woke = true;
                }
                // The handler runs within microseconds of a wake; a few milliseconds
                // apart keeps a target that cannot be woken from being flooded.
                std::thread::sleep(Duration::from_millis(5));
            }
            // Taken: pdb's script ran and armed the debugger, which stops at the next
            // Python event of the main thread; a blocked thread produces none, so it is
            // woken until pdb's session has it (its server on the main thread's stack),
            // pdb exits or `within` ends: how long pdb's script takes to connect depends
            // on the machine's load (a fixed 150 ms left a loaded target asleep, 1 in
            // 40). Only while the thread sleeps outside pdb's code: a wake while pdb's
            // script still runs would make pdb stop in the handler called from that
            // script (see `pdb_thread`).
            Ok(false) if pending_since.is_some() => {
                if woke {
                    let settle = Instant::now();
                    while settle.elapsed() < PDB_SETTLE_LIMIT
                        && begun.elapsed() < within
                        && !done.load(Ordering::Relaxed)
                    {
                        match pdb_thread(&process, main) {
                            PdbThread::AtPrompt => break,
                            PdbThread::Asleep => {
                                let _ = wake_thread(target, main);
                            }
                            PdbThread::Busy => {}
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                return woke;
            }
            // pdb has not written its request yet (its interpreter starts).
            Ok(false) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return woke,
        }
    }
    woke
}

/// How long the main thread is woken, at most, after pdb's request was taken and before
/// pdb's session shows on its stack. A bound, so that a session this client fails to
/// recognise is not woken while the user steps through it.
const PDB_SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Where the thread pdb attaches to stands, for the client's wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PdbThread {
    /// pdb's session has it: its server's command loop is on the stack.
    AtPrompt,
    /// Asleep in a system call with none of pdb's code on its stack: a wake makes it run
    /// Python code (the handler, and pdb's request or pdb's first stop with it).
    Asleep,
    /// Running, or pdb's code is on its stack (pdb's script imports pdb, connects back,
    /// arms the debugger): not to be woken now.
    Busy,
}

/// Reads where thread `tid` stands. A stack that cannot be read leaves only the kernel's
/// word: asleep counts as [`PdbThread::Asleep`], as before the stack was looked at.
fn pdb_thread(process: &PythonProcess, tid: i32) -> PdbThread {
    let asleep =
        || crate::io::procfs::thread_stat(process.pid(), tid).is_some_and(|stat| stat.state == 'S');
    let stacks = crate::io::stack_reader::read_stacks_of(process);
    let thread = stacks
        .as_ref()
        .ok()
        .and_then(|stacks| stacks.threads.iter().find(|t| t.tid == tid));
    match thread {
        Some(t) if crate::core::stacks::in_remote_debugger(t) => PdbThread::AtPrompt,
        Some(t) if crate::core::stacks::runs_pdb_code(t) => PdbThread::Busy,
        _ if asleep() => PdbThread::Asleep,
        _ => PdbThread::Busy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sleep_that_ends_within_the_grace_is_left_to_end() {
        let grace = Duration::from_millis(1200);
        let sleep = |ms| BlockedIn::Sleep {
            left: Duration::from_millis(ms),
        };
        assert_eq!(pdb_wake_delay(sleep(900), grace), grace);
        assert_eq!(pdb_wake_delay(sleep(300_000), grace), Duration::ZERO);
        assert_eq!(pdb_wake_delay(BlockedIn::Other, grace), Duration::ZERO);
        assert_eq!(pdb_wake_delay(BlockedIn::Unknown, grace), grace);
    }

    #[test]
    fn a_sleeping_thread_is_read_as_a_sleep_with_its_time_left() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            let _ = tx.send(nix::unistd::gettid().as_raw());
            std::thread::sleep(Duration::from_secs(3));
        });
        let tid = rx.recv().unwrap();
        let me = std::process::id() as i32;
        // Wait for the sleep to begin: the event is the kernel's, seen through /proc.
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            let seen = blocked_in(me, tid);
            if matches!(seen, BlockedIn::Sleep { .. }) || Instant::now() > deadline {
                break seen;
            }
            std::thread::yield_now();
        };
        match seen {
            BlockedIn::Sleep { left } => assert!(
                left > Duration::from_secs(1) && left <= Duration::from_secs(3),
                "{left:?}"
            ),
            other => panic!("{other:?}"),
        }
        drop(sleeper);
    }

    #[test]
    fn this_process_catches_no_sigurg_and_a_missing_one_is_unreadable() {
        assert_eq!(catches(std::process::id() as i32, WAKE_SIGNAL), Some(false));
        assert_eq!(catches(i32::MAX, WAKE_SIGNAL), None);
        assert!(wake_thread(i32::MAX, i32::MAX).is_some());
    }

    #[test]
    fn the_waker_only_replaces_the_default_disposition_and_cleans_up_its_name() {
        let script = waker_snippet();
        assert!(
            script.contains("!= _signal.SIG_DFL:\n            return"),
            "{script}"
        );
        assert!(script.contains("except Exception:"), "{script}");
        assert!(
            script.ends_with("del _helicopter_parent_waker\n"),
            "{script}"
        );
    }
}
