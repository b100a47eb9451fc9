//! Carrying out the core's delivery policy ([`crate::core::delivery`]) with the injector's
//! primitives: [`carry_out`] does one [`DeliveryAction`] and reports what it found, and
//! [`deliver`] drives a whole delivery by itself, for tests, the benchmark and simple
//! callers. The controller uses [`carry_out`] too: there is one policy, in the core.
//!
//! The target gives no acknowledgement of pickup here: [`deliver`] watches the pending
//! flag between the policy's moments, and reports a pickup as a fact.
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{InjectError, PythonProcess, ThreadChoice as InjectorThread};
use crate::core::delivery::{
    Delivery as PolicyDelivery, DeliveryAction, DeliveryFact, DeliveryStatus, DeliveryTiming,
    InjectFailure, RequestSeen, ThreadChoice, ThreadFact,
};

/// Timing of [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverOptions {
    /// How long a thread gets to pick the request up before it is moved to a running one.
    pub main_grace: Duration,
    /// Give up (and withdraw) after this long.
    pub timeout: Duration,
    /// Pause between two reads of the pending flag.
    pub poll_interval: Duration,
    /// Wake the request's thread with SIGURG (see [`crate::io::wake`]); it needs the
    /// waker installed in the target.
    pub wake: bool,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        DeliverOptions {
            main_grace: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            poll_interval: Duration::from_micros(250),
            wake: false,
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

/// Carries out one action of the policy for `script` in `process`.
pub fn carry_out(
    process: &PythonProcess,
    script: &Path,
    action: &DeliveryAction,
) -> Result<DeliveryFact, InjectError> {
    match *action {
        DeliveryAction::Schedule { on } => {
            if let Some(failure) = held_by_debugger(process, on) {
                return Ok(DeliveryFact::NotScheduled { failure });
            }
            let tid = process.schedule(injector_thread(on), script)?;
            Ok(DeliveryFact::Scheduled { tid })
        }
        DeliveryAction::Survey { tid } => {
            let request = match process.is_pending(tid) {
                Ok(true) => RequestSeen::Pending,
                Ok(false) => RequestSeen::Taken,
                Err(InjectError::NoSuchThread { .. }) => RequestSeen::ThreadGone,
                Err(other) => return Err(other),
            };
            Ok(DeliveryFact::Surveyed {
                request,
                threads: survey_threads(process),
            })
        }
        DeliveryAction::Move { from, to } => {
            match process.withdraw(from) {
                Ok(true) | Err(InjectError::NoSuchThread { .. }) => {}
                Ok(false) => return Ok(DeliveryFact::PickedUp),
                Err(other) => return Err(other),
            }
            let tid = process.schedule(InjectorThread::Tid(to), script)?;
            Ok(DeliveryFact::Moved { tid })
        }
        DeliveryAction::Withdraw { tid } => match process.withdraw(tid) {
            Ok(false) => Ok(DeliveryFact::PickedUp),
            Ok(true) | Err(InjectError::NoSuchThread { .. }) => Ok(DeliveryFact::Withdrawn),
            Err(other) => Err(other),
        },
        DeliveryAction::Wake { tid } => Ok(DeliveryFact::Woken {
            tid,
            not_sent: crate::io::wake::wake_thread(process.pid(), tid),
        }),
    }
}

/// Whether the thread a request would go to sits in a debugger of the process's own
/// (`breakpoint()` at its prompt), read from outside; `None` when it does not or its
/// stack cannot be read (the request then goes ahead as before).
fn held_by_debugger(process: &PythonProcess, on: ThreadChoice) -> Option<InjectFailure> {
    let stacks = crate::io::stack_reader::read_stacks_of(process).ok()?;
    let thread = stacks.threads.iter().find(|t| match on {
        ThreadChoice::Main => t.is_main,
        ThreadChoice::Tid(tid) => t.tid == tid,
    })?;
    let at = crate::core::stacks::local_debugger(thread)?;
    Some(InjectFailure::HeldByDebugger {
        tid: thread.tid,
        detail: format!(
            "thread {} of pid {} is stopped in its own debugger at {}:{}",
            thread.tid,
            process.pid(),
            at.filename,
            at.line.map_or("?".to_string(), |l| l.to_string())
        ),
        at,
    })
}

fn injector_thread(choice: ThreadChoice) -> InjectorThread {
    match choice {
        ThreadChoice::Main => InjectorThread::Main,
        ThreadChoice::Tid(tid) => InjectorThread::Tid(tid),
    }
}

/// Every thread of the target: its run state and wait channel from `/proc`, and whether
/// it has a Python thread state.
pub fn survey_threads(process: &PythonProcess) -> Vec<ThreadFact> {
    let python: Vec<i32> = process
        .threads()
        .map(|threads| threads.iter().map(|t| t.native_tid).collect())
        .unwrap_or_default();
    let main = process.main_thread_tid().ok().flatten();
    // Read from outside, never stopping the target; a reading that fails (a process
    // changing too fast, another build) leaves the frames out, nothing else.
    let stacks = crate::io::stack_reader::read_stacks_of(process)
        .map(|s| s.threads)
        .unwrap_or_default();
    crate::io::procfs::thread_states(process.pid())
        .into_iter()
        .map(|(tid, state, wchan)| {
            let stack = stacks.iter().find(|t| t.tid == tid);
            ThreadFact {
                tid,
                main: Some(tid) == main,
                python: python.contains(&tid),
                state,
                wchan,
                frame: stack.and_then(|t| t.frames.first().cloned()),
                held_by_debugger_at: stack.and_then(crate::core::stacks::local_debugger),
            }
        })
        .collect()
}

/// The injector's error as the facts the core decides on (whether it may pass is the
/// core's call, [`InjectFailure::may_pass`]).
pub fn failure_of(error: &InjectError, pid: i32) -> InjectFailure {
    let detail = error.to_string();
    match *error {
        InjectError::NoMainThread { .. } | InjectError::NoMainInterpreter { .. } => {
            InjectFailure::NotReady { detail }
        }
        InjectError::RemoteDebugDisabled { .. } => InjectFailure::RemoteDebugOff {
            opted_out: opted_out_of_remote_debug(pid),
            detail,
        },
        InjectError::NoSuchThread { tid, .. } => InjectFailure::ThreadGone { tid, detail },
        InjectError::NoSuchProcess { .. }
        | InjectError::NotPython { .. }
        | InjectError::UnsupportedVersion { .. }
        | InjectError::PermissionDenied { .. }
        | InjectError::FreeThreaded { .. }
        | InjectError::PathTooLong { .. }
        | InjectError::Memory { .. }
        | InjectError::InvalidPath { .. }
        | InjectError::NotPickedUp { .. } => InjectFailure::Refused { detail },
    }
}

/// A real opt-out of remote debugging always shows from outside, as
/// `PYTHON_DISABLE_REMOTE_DEBUG` in the environment or `-X disable-remote-debug` on the
/// command line; right after launch the flag reads off without either.
fn opted_out_of_remote_debug(pid: i32) -> bool {
    let read = |what: &str| fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let environ = read("environ");
    let cmdline = read("cmdline");
    environ
        .split(|&b| b == 0)
        .any(|var| var.starts_with(b"PYTHON_DISABLE_REMOTE_DEBUG="))
        || cmdline
            .split(|&b| b == 0)
            .any(|arg| arg.ends_with(b"disable-remote-debug"))
}

impl PythonProcess {
    /// Schedules `script`, waits for pickup, moves the request to a running thread when
    /// the chosen one does not take it, and withdraws it on timeout: the core's policy,
    /// driven with this thread's clock.
    pub fn deliver(&self, script: &Path, opts: DeliverOptions) -> Result<Delivery, InjectError> {
        let start = Instant::now();
        let ms = |d: Duration| d.as_millis() as u64;
        let now = || ms(start.elapsed());
        let deadline = ms(opts.timeout);
        let main_grace = ms(opts.main_grace).max(1);
        let timing = DeliveryTiming {
            survey_after_ms: main_grace,
            max_survey_backoff_ms: main_grace,
            retry_after_ms: 1,
            wake: opts.wake,
        };
        let main_tid = self.main_thread_tid()?;
        let (mut policy, first) = PolicyDelivery::start(timing, deadline);
        let mut next = Some(first);
        let mut current: Option<i32> = None;
        let mut given_up = false;
        loop {
            if let Some(action) = next.take() {
                let fact = match carry_out(self, script, &action) {
                    Ok(fact) => fact,
                    // Failures that cannot pass are the caller's to see as they are.
                    Err(error)
                        if !failure_of(&error, self.pid()).may_pass()
                            && !matches!(error, InjectError::NoSuchThread { .. }) =>
                    {
                        return Err(error)
                    }
                    Err(error) => DeliveryFact::NotScheduled {
                        failure: failure_of(&error, self.pid()),
                    },
                };
                match fact {
                    DeliveryFact::Scheduled { tid } | DeliveryFact::Moved { tid } => {
                        current = Some(tid)
                    }
                    DeliveryFact::NotScheduled { .. }
                    | DeliveryFact::Surveyed {
                        request: RequestSeen::ThreadGone,
                        ..
                    } => current = None,
                    DeliveryFact::Surveyed { .. }
                    | DeliveryFact::PickedUp
                    | DeliveryFact::Withdrawn
                    | DeliveryFact::Woken { .. } => {}
                }
                next = policy.handle(now(), fact);
                continue;
            }
            match policy.status() {
                DeliveryStatus::PickedUp { tid } => {
                    return Ok(Delivery {
                        tid,
                        on_main: Some(tid) == main_tid,
                        picked_up_after: start.elapsed(),
                        moves: policy.moves(),
                    })
                }
                DeliveryStatus::Withdrawn => {
                    return Err(InjectError::NotPickedUp {
                        pid: self.pid(),
                        waited_ms: now(),
                        threads: super::describe_threads(self.pid()),
                    })
                }
                DeliveryStatus::Failed => {
                    return Err(InjectError::NotPickedUp {
                        pid: self.pid(),
                        waited_ms: now(),
                        threads: policy
                            .last_failure()
                            .map_or_else(String::new, |f| f.detail().to_string()),
                    })
                }
                DeliveryStatus::InFlight => {}
            }
            if now() >= deadline && !given_up {
                given_up = true;
                next = policy.give_up();
                continue;
            }
            // Watching for pickup between the policy's moments is observation, not policy.
            if let Some(tid) = current {
                if let Ok(false) = self.is_pending(tid) {
                    next = policy.handle(now(), DeliveryFact::PickedUp);
                    continue;
                }
            }
            if let Some(at) = policy.poll_timeout() {
                if now() >= at {
                    next = policy.on_deadline(now());
                    continue;
                }
            }
            thread::sleep(opts.poll_interval);
        }
    }
}
