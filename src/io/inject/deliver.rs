//! A complete delivery policy on top of schedule / is_pending / withdraw, for tests, the
//! benchmark and simple callers. (The controller drives its own policy with the same
//! primitives.)
//!
//! The target gives no acknowledgement: polling the pending flag is the only signal that
//! the script was picked up. Policy:
//! 1. schedule on the main thread, as `sys.remote_exec` does;
//! 2. every `main_grace` without pickup, look for a Python thread that is running right
//!    now (state `R`); if there is one, withdraw the request and move it there (a main
//!    thread blocked in a lock, `join()` or a long sleep may never come back to bytecode,
//!    while a running thread reaches an eval-breaker check within microseconds);
//! 3. at `timeout`, withdraw, so the request can never fire later.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{procfs, InjectError, PythonProcess, ThreadChoice};

/// Timing of [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverOptions {
    /// How long a thread gets to pick the request up before it is moved to a running one.
    pub main_grace: Duration,
    /// Give up (and withdraw) after this long.
    pub timeout: Duration,
    /// Pause between two reads of the pending flag.
    pub poll_interval: Duration,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            main_grace: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            poll_interval: Duration::from_micros(250),
        }
    }
}

/// A request the target picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The thread that took it.
    pub tid: i32,
    /// That thread is the main thread.
    pub on_main: bool,
    /// From the first write to the observed pickup (the script starts right after).
    pub picked_up_after: Duration,
    /// How many times the request was moved to another thread.
    pub moves: u32,
}

/// Opens `pid` and delivers `script` with [`PythonProcess::deliver`].
pub fn deliver(pid: i32, script: &Path, opts: DeliverOptions) -> Result<Delivery, InjectError> {
    PythonProcess::open(pid)?.deliver(script, opts)
}

impl PythonProcess {
    /// Schedules `script`, waits for pickup, moves the request to a running thread when
    /// the chosen one does not take it, and withdraws it on timeout.
    pub fn deliver(&self, script: &Path, opts: DeliverOptions) -> Result<Delivery, InjectError> {
        let start = Instant::now();
        let deadline = start + opts.timeout;
        let main_tid = self.main_thread_tid()?;
        let mut current = self.schedule(ThreadChoice::Main, script)?;
        let mut moves = 0;
        let mut next_review = start + opts.main_grace;
        let delivered = |tid: i32, moves: u32| Delivery {
            tid,
            on_main: Some(tid) == main_tid,
            picked_up_after: start.elapsed(),
            moves,
        };
        loop {
            match self.is_pending(current) {
                Ok(false) => return Ok(delivered(current, moves)),
                Ok(true) => {}
                // The thread exited with our request in it: the request died with it.
                Err(InjectError::NoSuchThread { .. }) => {
                    current = self.reschedule(current, script)?;
                    moves += 1;
                    continue;
                }
                Err(other) => return Err(other),
            }
            let now = Instant::now();
            if now >= deadline {
                return match self.withdraw(current) {
                    Ok(false) => Ok(delivered(current, moves)),
                    Ok(true) | Err(InjectError::NoSuchThread { .. }) => {
                        Err(InjectError::NotPickedUp {
                            pid: self.pid(),
                            waited_ms: start.elapsed().as_millis() as u64,
                            threads: procfs::describe_threads(self.pid(), main_tid),
                        })
                    }
                    Err(other) => Err(other),
                };
            }
            if now >= next_review {
                next_review = now + opts.main_grace;
                if let Some(runner) = self.running_python_thread(current)? {
                    match self.withdraw(current) {
                        Ok(false) => return Ok(delivered(current, moves)),
                        Ok(true) | Err(InjectError::NoSuchThread { .. }) => {}
                        Err(other) => return Err(other),
                    }
                    current = match self.schedule(ThreadChoice::Tid(runner), script) {
                        Ok(tid) => tid,
                        // It exited in between: fall back to main.
                        Err(InjectError::NoSuchThread { .. }) => self.reschedule(runner, script)?,
                        Err(other) => return Err(other),
                    };
                    moves += 1;
                    continue;
                }
            }
            thread::sleep(opts.poll_interval);
        }
    }

    /// A Python thread of the main interpreter other than `except` that is in state `R`.
    fn running_python_thread(&self, except: i32) -> Result<Option<i32>, InjectError> {
        let running = procfs::running_threads(self.pid());
        if running.is_empty() {
            return Ok(None);
        }
        Ok(self
            .threads()?
            .into_iter()
            .map(|t| t.native_tid)
            .find(|tid| *tid != except && running.contains(tid)))
    }

    /// After the request's thread vanished: a running thread, else the main thread.
    fn reschedule(&self, gone: i32, script: &Path) -> Result<i32, InjectError> {
        if let Some(runner) = self.running_python_thread(gone)? {
            if let Ok(tid) = self.schedule(ThreadChoice::Tid(runner), script) {
                return Ok(tid);
            }
        }
        self.schedule(ThreadChoice::Main, script)
    }
}
