//! Getting one injected script picked up by the target: which thread gets the request,
//! when it moves to another thread, when a failed injection is tried again and when to
//! give up. The one delivery policy of the project: the [`super::supervisor`] embeds it
//! for every grant, and `io::inject::deliver` drives it alone (tests, the benchmark).
//!
//! Pure like the rest of the core: the edge carries out a [`DeliveryAction`] with the
//! injector and reports what it found as a [`DeliveryFact`]; time arrives as a number.
//!
//! ```text
//!                 NotScheduled (may pass)                 NotScheduled (final)
//!    ┌──────────┐ ──────────────────────▶ ┌──────────┐ ───────────────────────▶ Failed
//!    │Scheduling│ ◀────────────────────── │ Retrying │
//!    └──────────┘        retry_at         └──────────┘
//!       │ Scheduled{tid}       ▲ ThreadGone during a move: schedule on main again
//!       ▼                      │
//!    ┌─────────┐  survey_at  ┌───────────┐  pending, a Python thread elsewhere runs  ┌────────┐
//!    │ Waiting │ ──────────▶ │ Surveying │ ────────────────────────────────────────▶ │ Moving │
//!    └─────────┘ ◀────────── └───────────┘                                           └────────┘
//!      ▲   │  pending, none runs: back off  │ taken                                      │ Moved{tid}
//!      │   │                                ▼                                            │
//!      │   └── PickedUp ─────────────▶  PickedUp  ◀──────── PickedUp (taken before the move)
//!      └──────────────────────────────────────────────────────────────────────────────────┘
//!    give_up(): Waiting/Waking/Surveying ──Withdraw──▶ Withdrawing ──▶ Withdrawn | PickedUp
//!
//!    With `timing.wake`: every Scheduled/Moved, and every survey that finds the request
//!    still pending with no running thread to move it to, first passes through
//!    Waking ──Wake{tid}──▶ (Woken) ──▶ Waiting
//! ```
//!
//! Waking: a thread blocked in a system call (epoll_wait, a lock, a long sleep) runs no
//! Python code, so it never looks at its pending request. A signal with a Python-level
//! handler makes the call return EINTR; CPython then runs the handler on the main thread
//! and retries the call (PEP 475), passing the eval breaker on the way, where the pending
//! request runs. The edge sends [`WAKE_SIGNAL`] to exactly the request's thread.
use super::stacks::Frame;
use super::supervisor::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The signal a `Wake` sends: SIGURG, whose default action is to ignore it, so a process
/// without a handler for it is not disturbed. The controller installs a no-op handler in
/// the target at start (only if the disposition is still the default).
pub const WAKE_SIGNAL: i32 = 23;

/// Which thread state of the target receives a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "thread", content = "tid", rename_all = "snake_case")]
pub enum ThreadChoice {
    /// The main interpreter's main thread (what `sys.remote_exec` does).
    Main,
    /// The thread state whose native thread id is this.
    Tid(i32),
}

/// What the edge saw of one thread of the target during a survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadFact {
    pub tid: i32,
    /// The main interpreter's main thread.
    pub main: bool,
    /// It has a Python thread state (a request can be written into it).
    pub python: bool,
    /// The kernel's run state letter: `R` running, `S` sleeping, `D` in uninterruptible wait.
    pub state: char,
    /// The kernel function it waits in, when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// Its innermost Python frame, when its stack could be read (the controller reads
    /// it from outside; a client at `ptrace_scope=1` could not before its grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
    /// Where its program stopped, when the thread sits in a debugger of its own (a
    /// `breakpoint()` reading the process's stdin): nothing runs there until someone
    /// answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by_debugger_at: Option<Frame>,
}

impl ThreadFact {
    fn running(&self) -> bool {
        self.state == 'R'
    }
}

impl fmt::Display for ThreadFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tid)?;
        if self.main {
            f.write_str(" (main)")?;
        }
        write!(f, " {}", self.state)?;
        if let Some(wchan) = &self.wchan {
            write!(f, " in {wchan}")?;
        }
        if let Some(frame) = &self.frame {
            write!(f, " at {}", frame_text(frame))?;
        }
        Ok(())
    }
}

/// `app.py:12 handle`: a frame in a progress line (the file's last component: the line
/// is about what the thread does, and a full path would push the rest off the screen).
fn frame_text(frame: &Frame) -> String {
    let file = frame.filename.rsplit('/').next().unwrap_or(&frame.filename);
    match frame.line {
        Some(line) => format!("{file}:{line} {}", frame.function),
        None => format!("{file} {}", frame.function),
    }
}

/// What holds a process whose thread sits in a debugger of its own, in words; `None`
/// when no thread does.
pub fn held_by_debugger(threads: &[ThreadFact]) -> Option<String> {
    threads.iter().find_map(|t| {
        t.held_by_debugger_at.as_ref().map(|at| {
            format!(
                "thread {} is stopped in a debugger of its own (breakpoint() at {}), waiting for an answer on the target's stdin",
                t.tid,
                frame_text(at)
            )
        })
    })
}

/// "1234 (main) S in do_sys_poll at app.py:12 serve, 1235 R".
pub fn describe_threads(threads: &[ThreadFact]) -> String {
    threads
        .iter()
        .map(ThreadFact::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a request could not be written into the target, as facts the edge observed. Which
/// of them may pass by themselves is the core's decision ([`InjectFailure::may_pass`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "failure", rename_all = "snake_case")]
pub enum InjectFailure {
    /// The runtime lists no interpreter or main thread yet (or no more).
    NotReady { detail: String },
    /// The interpreter's remote-debugging flag reads off. `opted_out`: the target's
    /// environment or command line shows a real opt-out (`PYTHON_DISABLE_REMOTE_DEBUG`,
    /// `-X disable-remote-debug`); without one the flag is still being set up at start.
    RemoteDebugOff { opted_out: bool, detail: String },
    /// The chosen thread exited.
    ThreadGone { tid: i32, detail: String },
    /// Anything trying again cannot mend: permission, not Python, an unknown version, a
    /// process that exited, memory that cannot be read.
    Refused { detail: String },
    /// Thread `tid` sits in a debugger of the process's own (a `breakpoint()` waiting for
    /// an answer on its stdin), stopped at `at`. A request written now would run inside
    /// that debugger's prompt, so none was written.
    HeldByDebugger { tid: i32, at: Frame, detail: String },
}

impl InjectFailure {
    pub fn detail(&self) -> &str {
        match self {
            InjectFailure::NotReady { detail }
            | InjectFailure::RemoteDebugOff { detail, .. }
            | InjectFailure::ThreadGone { detail, .. }
            | InjectFailure::Refused { detail }
            | InjectFailure::HeldByDebugger { detail, .. } => detail,
        }
    }

    /// Whether the same request may succeed in a moment without anyone changing
    /// anything: the interpreter is still starting (a client that attaches right after
    /// launch).
    pub fn may_pass(&self) -> bool {
        match self {
            InjectFailure::NotReady { .. } => true,
            InjectFailure::RemoteDebugOff { opted_out, .. } => !opted_out,
            InjectFailure::ThreadGone { .. }
            | InjectFailure::Refused { .. }
            | InjectFailure::HeldByDebugger { .. } => false,
        }
    }
}

/// What the edge found when it carried out a [`DeliveryAction`] or watched the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum DeliveryFact {
    /// The request was written into thread `tid`.
    Scheduled {
        tid: i32,
    },
    NotScheduled {
        failure: InjectFailure,
    },
    /// A survey: whether the request still waits in its thread, and the target's threads.
    Surveyed {
        request: RequestSeen,
        threads: Vec<ThreadFact>,
    },
    /// The request was taken back from one thread and written into `tid`.
    Moved {
        tid: i32,
    },
    /// The request was seen taken: it runs now or has run.
    PickedUp,
    /// The request was taken back before anyone took it: it will never run.
    Withdrawn,
    /// The answer to `Wake`: the signal was sent to `tid`, or why not (`not_sent`: the
    /// thread is gone, or the target does not catch the signal, so sending it would do
    /// nothing).
    Woken {
        tid: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_sent: Option<String>,
    },
}

/// The state of the request in its thread, as a survey read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSeen {
    Pending,
    Taken,
    /// Its thread exited with the request in it: the request died with it.
    ThreadGone,
}

/// Instructions for the edge's injector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DeliveryAction {
    /// Write the request into this thread: answer `Scheduled` or `NotScheduled`.
    Schedule { on: ThreadChoice },
    /// Read whether the request in `tid` still waits and what every thread does: answer
    /// `Surveyed`.
    Survey { tid: i32 },
    /// Take the request back from `from` and write it into `to`: answer `Moved`,
    /// `PickedUp` (it was taken first) or `NotScheduled`.
    Move { from: i32, to: i32 },
    /// Take the request back from `tid` so it can never run: answer `Withdrawn` or
    /// `PickedUp`.
    Withdraw { tid: i32 },
    /// Send [`WAKE_SIGNAL`] to thread `tid`, which holds the request: answer `Woken`.
    Wake { tid: i32 },
}

impl fmt::Display for DeliveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryAction::Schedule {
                on: ThreadChoice::Main,
            } => f.write_str("schedule on the main thread"),
            DeliveryAction::Schedule {
                on: ThreadChoice::Tid(tid),
            } => write!(f, "schedule on thread {tid}"),
            DeliveryAction::Survey { tid } => write!(f, "survey (request in thread {tid})"),
            DeliveryAction::Move { from, to } => write!(f, "move from thread {from} to {to}"),
            DeliveryAction::Withdraw { tid } => write!(f, "withdraw from thread {tid}"),
            DeliveryAction::Wake { tid } => write!(f, "wake thread {tid} (SIGURG)"),
        }
    }
}

impl fmt::Display for DeliveryFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryFact::Scheduled { tid } => write!(f, "written into thread {tid}"),
            DeliveryFact::NotScheduled { failure } => {
                let retry = if failure.may_pass() {
                    " (may pass)"
                } else {
                    ""
                };
                write!(f, "not injected{retry}: {}", failure.detail())
            }
            DeliveryFact::Surveyed { request, threads } => {
                let request = match request {
                    RequestSeen::Pending => "pending",
                    RequestSeen::Taken => "taken",
                    RequestSeen::ThreadGone => "its thread is gone",
                };
                write!(
                    f,
                    "surveyed: {request}; threads {}",
                    describe_threads(threads)
                )
            }
            DeliveryFact::Moved { tid } => write!(f, "moved to thread {tid}"),
            DeliveryFact::PickedUp => f.write_str("picked up"),
            DeliveryFact::Withdrawn => f.write_str("withdrawn"),
            DeliveryFact::Woken {
                tid,
                not_sent: None,
            } => write!(f, "woke thread {tid}"),
            DeliveryFact::Woken {
                tid,
                not_sent: Some(why),
            } => write!(f, "did not wake thread {tid}: {why}"),
        }
    }
}

/// The policy's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTiming {
    /// How long a thread gets to take the request before a survey looks for a thread that
    /// runs (the main thread may be blocked in a sleep, a lock or a join).
    pub survey_after_ms: Millis,
    /// Surveys that find no other running thread back off, doubling up to this, so a
    /// target that runs no Python code at all is looked at a few times, not constantly.
    pub max_survey_backoff_ms: Millis,
    /// Pause before trying again an injection that may pass by itself.
    pub retry_after_ms: Millis,
    /// Wake the request's thread with [`WAKE_SIGNAL`] after each write and at each
    /// survey that finds it still pending. Off in journals written before waking existed,
    /// so they replay as recorded; the controller turns it on unless told not to.
    #[serde(default)]
    pub wake: bool,
}

impl Default for DeliveryTiming {
    fn default() -> Self {
        DeliveryTiming {
            survey_after_ms: 20,
            max_survey_backoff_ms: 320,
            retry_after_ms: 10,
            wake: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the answer to `Schedule`.
    Scheduling,
    /// The last injection failed in a way that may pass; schedule again at `retry_at`.
    Retrying {
        retry_at: Millis,
    },
    /// In thread `tid`; at `survey_at`, if not taken, look for a thread that runs.
    Waiting {
        tid: i32,
        survey_at: Millis,
        backoff: Millis,
    },
    /// Waiting for the answer to `Wake`; then `Waiting` with these.
    Waking {
        tid: i32,
        survey_at: Millis,
        backoff: Millis,
    },
    Surveying {
        tid: i32,
        backoff: Millis,
    },
    Moving {
        from: i32,
    },
    PickedUp {
        tid: i32,
    },
    Withdrawing {
        tid: i32,
    },
    Withdrawn,
    Failed,
}

/// Where a delivery stands, for its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    InFlight,
    PickedUp {
        tid: i32,
    },
    /// Withdrawn before anyone took it: it will never run.
    Withdrawn,
    /// Injection failed for good; [`Delivery::last_failure`] says why.
    Failed,
}

/// One request on its way into the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    timing: DeliveryTiming,
    phase: Phase,
    /// The owner's deadline: a retry that would come after it is not started.
    deadline: Millis,
    moves: u32,
    last_failure: Option<InjectFailure>,
    threads_seen: Option<Vec<ThreadFact>>,
}

impl Delivery {
    /// A new delivery and its first action: schedule on the main thread, as
    /// `sys.remote_exec` does.
    #[must_use]
    pub fn start(timing: DeliveryTiming, deadline: Millis) -> (Delivery, DeliveryAction) {
        let delivery = Delivery {
            timing,
            phase: Phase::Scheduling,
            deadline,
            moves: 0,
            last_failure: None,
            threads_seen: None,
        };
        (
            delivery,
            DeliveryAction::Schedule {
                on: ThreadChoice::Main,
            },
        )
    }

    pub fn status(&self) -> DeliveryStatus {
        match self.phase {
            Phase::PickedUp { tid } => DeliveryStatus::PickedUp { tid },
            Phase::Withdrawn => DeliveryStatus::Withdrawn,
            Phase::Failed => DeliveryStatus::Failed,
            Phase::Scheduling
            | Phase::Retrying { .. }
            | Phase::Waiting { .. }
            | Phase::Waking { .. }
            | Phase::Surveying { .. }
            | Phase::Moving { .. }
            | Phase::Withdrawing { .. } => DeliveryStatus::InFlight,
        }
    }

    /// How many times the request moved to another thread.
    pub fn moves(&self) -> u32 {
        self.moves
    }

    pub fn last_failure(&self) -> Option<&InjectFailure> {
        self.last_failure.as_ref()
    }

    /// What the target's threads were doing at the last survey.
    pub fn threads_seen(&self) -> Option<&[ThreadFact]> {
        self.threads_seen.as_deref()
    }

    /// When [`Delivery::on_deadline`] must be called, if the delivery waits for a moment.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.phase {
            Phase::Retrying { retry_at } => Some(retry_at),
            Phase::Waiting { survey_at, .. } => Some(survey_at),
            Phase::Scheduling
            | Phase::Waking { .. }
            | Phase::Surveying { .. }
            | Phase::Moving { .. }
            | Phase::PickedUp { .. }
            | Phase::Withdrawing { .. }
            | Phase::Withdrawn
            | Phase::Failed => None,
        }
    }

    /// The moment from [`Delivery::poll_timeout`] has come.
    #[must_use]
    pub fn on_deadline(&mut self, now: Millis) -> Option<DeliveryAction> {
        match self.phase {
            Phase::Retrying { retry_at } if now >= retry_at => {
                self.phase = Phase::Scheduling;
                Some(DeliveryAction::Schedule {
                    on: ThreadChoice::Main,
                })
            }
            Phase::Waiting {
                tid,
                survey_at,
                backoff,
            } if now >= survey_at => {
                self.phase = Phase::Surveying { tid, backoff };
                Some(DeliveryAction::Survey { tid })
            }
            Phase::Retrying { .. }
            | Phase::Waiting { .. }
            | Phase::Waking { .. }
            | Phase::Scheduling
            | Phase::Surveying { .. }
            | Phase::Moving { .. }
            | Phase::PickedUp { .. }
            | Phase::Withdrawing { .. }
            | Phase::Withdrawn
            | Phase::Failed => None,
        }
    }

    /// The owner gives up (its deadline came, or it stops): a request still waiting in a
    /// thread is taken back so that it can never run later.
    #[must_use]
    pub fn give_up(&mut self) -> Option<DeliveryAction> {
        match self.phase {
            Phase::Waiting { tid, .. }
            | Phase::Waking { tid, .. }
            | Phase::Surveying { tid, .. } => {
                self.phase = Phase::Withdrawing { tid };
                Some(DeliveryAction::Withdraw { tid })
            }
            Phase::Scheduling | Phase::Retrying { .. } | Phase::Moving { .. } => {
                self.phase = Phase::Failed;
                None
            }
            Phase::PickedUp { .. }
            | Phase::Withdrawing { .. }
            | Phase::Withdrawn
            | Phase::Failed => None,
        }
    }

    /// A fact from the edge. Returns the next action, if any.
    #[must_use]
    pub fn handle(&mut self, now: Millis, fact: DeliveryFact) -> Option<DeliveryAction> {
        let survey_after = self.timing.survey_after_ms;
        match (&self.phase, fact) {
            (Phase::Scheduling | Phase::Moving { .. }, DeliveryFact::Scheduled { tid })
            | (Phase::Moving { .. }, DeliveryFact::Moved { tid }) => {
                self.wait_in(tid, now + survey_after, survey_after)
            }
            (
                Phase::Waking {
                    tid,
                    survey_at,
                    backoff,
                },
                DeliveryFact::Woken { tid: woken, .. },
            ) if *tid == woken => {
                // Sent or not, the next survey looks again: a signal that could not be
                // sent now (no handler yet) may be sendable then.
                self.phase = Phase::Waiting {
                    tid: *tid,
                    survey_at: *survey_at,
                    backoff: *backoff,
                };
                None
            }
            // A Wake answered after the owner gave up: nothing to do, the withdrawal follows.
            (Phase::Withdrawing { .. }, DeliveryFact::Woken { .. }) => None,
            (Phase::Moving { from }, DeliveryFact::NotScheduled { failure })
                if matches!(failure, InjectFailure::ThreadGone { .. }) =>
            {
                // The thread chosen to move to exited in between: back to the main thread.
                let _ = from;
                self.moves += 1;
                self.last_failure = Some(failure);
                self.phase = Phase::Scheduling;
                Some(DeliveryAction::Schedule {
                    on: ThreadChoice::Main,
                })
            }
            (Phase::Scheduling | Phase::Moving { .. }, DeliveryFact::NotScheduled { failure }) => {
                let retry_at = now + self.timing.retry_after_ms;
                self.phase = if failure.may_pass() && retry_at < self.deadline {
                    Phase::Retrying { retry_at }
                } else {
                    Phase::Failed
                };
                self.last_failure = Some(failure);
                None
            }
            (Phase::Surveying { tid, backoff }, DeliveryFact::Surveyed { request, threads }) => {
                let (tid, backoff) = (*tid, *backoff);
                let action = match request {
                    RequestSeen::Taken => {
                        self.phase = Phase::PickedUp { tid };
                        None
                    }
                    RequestSeen::ThreadGone => {
                        self.moves += 1;
                        self.phase = Phase::Scheduling;
                        Some(match runner(&threads, tid) {
                            Some(to) => DeliveryAction::Schedule {
                                on: ThreadChoice::Tid(to),
                            },
                            None => DeliveryAction::Schedule {
                                on: ThreadChoice::Main,
                            },
                        })
                    }
                    RequestSeen::Pending => match runner(&threads, tid) {
                        Some(to) => {
                            self.moves += 1;
                            self.phase = Phase::Moving { from: tid };
                            Some(DeliveryAction::Move { from: tid, to })
                        }
                        // Nothing better to move to: leave the request where it is rather
                        // than take it back and write it again, which opens a window for
                        // nothing.
                        None => {
                            let backoff = (backoff * 2).min(self.timing.max_survey_backoff_ms);
                            self.wait_in(tid, now + backoff, backoff)
                        }
                    },
                };
                self.threads_seen = Some(threads);
                action
            }
            (
                Phase::Waiting { tid, .. }
                | Phase::Waking { tid, .. }
                | Phase::Surveying { tid, .. }
                | Phase::Withdrawing { tid },
                DeliveryFact::PickedUp,
            ) => {
                self.phase = Phase::PickedUp { tid: *tid };
                None
            }
            (Phase::Moving { from }, DeliveryFact::PickedUp) => {
                self.moves = self.moves.saturating_sub(1);
                self.phase = Phase::PickedUp { tid: *from };
                None
            }
            (Phase::Withdrawing { .. }, DeliveryFact::Withdrawn) => {
                self.phase = Phase::Withdrawn;
                None
            }
            // A fact that does not answer the pending action is the driver's mistake.
            (phase, fact) => {
                debug_assert!(false, "delivery fact {fact:?} in phase {phase:?}");
                None
            }
        }
    }

    /// The request sits in `tid`: wake that thread first when waking is on, then wait
    /// until `survey_at`.
    fn wait_in(&mut self, tid: i32, survey_at: Millis, backoff: Millis) -> Option<DeliveryAction> {
        if self.timing.wake {
            self.phase = Phase::Waking {
                tid,
                survey_at,
                backoff,
            };
            Some(DeliveryAction::Wake { tid })
        } else {
            self.phase = Phase::Waiting {
                tid,
                survey_at,
                backoff,
            };
            None
        }
    }

    /// The phase, for transcripts.
    pub fn phase_name(&self) -> String {
        match self.phase {
            Phase::Waking { tid, .. } => format!("waking thread {tid}"),
            Phase::Scheduling => "scheduling".into(),
            Phase::Retrying { retry_at } => format!("retrying at {retry_at}"),
            Phase::Waiting { tid, .. } => format!("waiting in thread {tid}"),
            Phase::Surveying { tid, .. } => format!("surveying (request in thread {tid})"),
            Phase::Moving { from } => format!("moving from thread {from}"),
            Phase::PickedUp { tid } => format!("picked up by thread {tid}"),
            Phase::Withdrawing { tid } => format!("withdrawing from thread {tid}"),
            Phase::Withdrawn => "withdrawn".into(),
            Phase::Failed => "failed".into(),
        }
    }
}

/// A Python thread other than `except` that is running right now: it will reach an
/// eval-breaker check within microseconds, while a blocked one may never.
fn runner(threads: &[ThreadFact], except: i32) -> Option<i32> {
    threads
        .iter()
        .find(|t| t.tid != except && t.python && t.running())
        .map(|t| t.tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: i32, main: bool, state: char) -> ThreadFact {
        ThreadFact {
            frame: None,
            held_by_debugger_at: None,
            tid,
            main,
            python: true,
            state,
            wchan: (state != 'R').then(|| "do_sys_poll".into()),
        }
    }

    fn start() -> Delivery {
        let (delivery, first) = Delivery::start(DeliveryTiming::default(), 1500);
        assert_eq!(
            first,
            DeliveryAction::Schedule {
                on: ThreadChoice::Main
            }
        );
        delivery
    }

    #[test]
    fn a_request_not_taken_moves_to_a_running_python_thread() {
        let mut d = start();
        assert_eq!(d.handle(0, DeliveryFact::Scheduled { tid: 10 }), None);
        assert_eq!(d.poll_timeout(), Some(20));
        assert_eq!(d.on_deadline(20), Some(DeliveryAction::Survey { tid: 10 }));
        let threads = vec![thread(10, true, 'S'), thread(11, false, 'R')];
        assert_eq!(
            d.handle(
                20,
                DeliveryFact::Surveyed {
                    request: RequestSeen::Pending,
                    threads
                }
            ),
            Some(DeliveryAction::Move { from: 10, to: 11 })
        );
        assert_eq!(d.handle(21, DeliveryFact::Moved { tid: 11 }), None);
        assert_eq!(d.handle(22, DeliveryFact::PickedUp), None);
        assert_eq!(d.status(), DeliveryStatus::PickedUp { tid: 11 });
        assert_eq!(d.moves(), 1);
    }

    #[test]
    fn with_no_thread_running_the_request_stays_and_surveys_back_off() {
        let mut d = start();
        let _ = d.handle(0, DeliveryFact::Scheduled { tid: 10 });
        let mut at = 20;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            assert_eq!(d.poll_timeout(), Some(at));
            assert_eq!(d.on_deadline(at), Some(DeliveryAction::Survey { tid: 10 }));
            let action = d.handle(
                at,
                DeliveryFact::Surveyed {
                    request: RequestSeen::Pending,
                    threads: vec![thread(10, true, 'S'), thread(11, false, 'S')],
                },
            );
            assert_eq!(action, None);
            let next = d.poll_timeout().unwrap();
            gaps.push(next - at);
            at = next;
        }
        assert_eq!(gaps, vec![40, 80, 160, 320, 320, 320]);
        assert_eq!(d.give_up(), Some(DeliveryAction::Withdraw { tid: 10 }));
        assert_eq!(d.handle(at, DeliveryFact::Withdrawn), None);
        assert_eq!(d.status(), DeliveryStatus::Withdrawn);
        assert_eq!(
            describe_threads(d.threads_seen().unwrap()),
            "10 (main) S in do_sys_poll, 11 S in do_sys_poll"
        );
    }

    #[test]
    fn failures_that_may_pass_are_retried_until_the_deadline_others_are_final() {
        let not_ready = InjectFailure::NotReady {
            detail: "no main interpreter yet".into(),
        };
        let mut d = start();
        assert_eq!(
            d.handle(
                0,
                DeliveryFact::NotScheduled {
                    failure: not_ready.clone()
                }
            ),
            None
        );
        assert_eq!(d.poll_timeout(), Some(10));
        assert_eq!(
            d.on_deadline(10),
            Some(DeliveryAction::Schedule {
                on: ThreadChoice::Main
            })
        );
        // Too close to the deadline for another try.
        let _ = d.handle(
            1495,
            DeliveryFact::NotScheduled {
                failure: not_ready.clone(),
            },
        );
        assert_eq!(d.status(), DeliveryStatus::Failed);

        for (failure, passes) in [
            (
                InjectFailure::RemoteDebugOff {
                    opted_out: false,
                    detail: "off".into(),
                },
                true,
            ),
            (
                InjectFailure::RemoteDebugOff {
                    opted_out: true,
                    detail: "off".into(),
                },
                false,
            ),
            (
                InjectFailure::Refused {
                    detail: "permission denied".into(),
                },
                false,
            ),
        ] {
            let mut d = start();
            let _ = d.handle(0, DeliveryFact::NotScheduled { failure });
            let expected = if passes {
                DeliveryStatus::InFlight
            } else {
                DeliveryStatus::Failed
            };
            assert_eq!(d.status(), expected);
        }
    }

    #[test]
    fn a_thread_that_exits_with_the_request_gets_it_rescheduled() {
        let mut d = start();
        let _ = d.handle(0, DeliveryFact::Scheduled { tid: 11 });
        let _ = d.on_deadline(20);
        let action = d.handle(
            20,
            DeliveryFact::Surveyed {
                request: RequestSeen::ThreadGone,
                threads: vec![thread(10, true, 'S')],
            },
        );
        assert_eq!(
            action,
            Some(DeliveryAction::Schedule {
                on: ThreadChoice::Main
            })
        );
        // A move whose destination exits falls back to the main thread too.
        let _ = d.handle(21, DeliveryFact::Scheduled { tid: 10 });
        let _ = d.on_deadline(41);
        let _ = d.handle(
            41,
            DeliveryFact::Surveyed {
                request: RequestSeen::Pending,
                threads: vec![thread(10, true, 'S'), thread(12, false, 'R')],
            },
        );
        let action = d.handle(
            42,
            DeliveryFact::NotScheduled {
                failure: InjectFailure::ThreadGone {
                    tid: 12,
                    detail: "gone".into(),
                },
            },
        );
        assert_eq!(
            action,
            Some(DeliveryAction::Schedule {
                on: ThreadChoice::Main
            })
        );
    }

    #[test]
    fn a_request_taken_just_before_its_move_counts_as_picked_up_where_it_was() {
        let mut d = start();
        let _ = d.handle(0, DeliveryFact::Scheduled { tid: 10 });
        let _ = d.on_deadline(20);
        let _ = d.handle(
            20,
            DeliveryFact::Surveyed {
                request: RequestSeen::Pending,
                threads: vec![thread(10, true, 'S'), thread(11, false, 'R')],
            },
        );
        let _ = d.handle(20, DeliveryFact::PickedUp);
        assert_eq!(d.status(), DeliveryStatus::PickedUp { tid: 10 });
        assert_eq!(d.moves(), 0);
    }

    fn waking() -> Delivery {
        let timing = DeliveryTiming {
            wake: true,
            ..DeliveryTiming::default()
        };
        Delivery::start(timing, 1500).0
    }

    #[test]
    fn with_waking_on_each_write_is_followed_by_a_wake_of_that_thread() {
        let mut d = waking();
        assert_eq!(
            d.handle(0, DeliveryFact::Scheduled { tid: 10 }),
            Some(DeliveryAction::Wake { tid: 10 })
        );
        // Waiting for the answer: no deadline of its own.
        assert_eq!(d.poll_timeout(), None);
        assert_eq!(d.phase_name(), "waking thread 10");
        assert_eq!(
            d.handle(
                1,
                DeliveryFact::Woken {
                    tid: 10,
                    not_sent: None
                }
            ),
            None
        );
        // The survey keeps the time it had from the write.
        assert_eq!(d.poll_timeout(), Some(20));
        assert_eq!(d.handle(2, DeliveryFact::PickedUp), None);
        assert_eq!(d.status(), DeliveryStatus::PickedUp { tid: 10 });
    }

    #[test]
    fn with_waking_on_a_survey_that_finds_nothing_to_move_to_wakes_again() {
        let mut d = waking();
        let _ = d.handle(0, DeliveryFact::Scheduled { tid: 10 });
        let unsent = DeliveryFact::Woken {
            tid: 10,
            not_sent: Some("the target does not catch SIGURG".into()),
        };
        assert_eq!(d.handle(0, unsent.clone()), None);
        assert_eq!(d.on_deadline(20), Some(DeliveryAction::Survey { tid: 10 }));
        assert_eq!(
            d.handle(
                20,
                DeliveryFact::Surveyed {
                    request: RequestSeen::Pending,
                    threads: vec![thread(10, true, 'S')],
                }
            ),
            Some(DeliveryAction::Wake { tid: 10 })
        );
        assert_eq!(d.handle(20, unsent), None);
        assert_eq!(d.poll_timeout(), Some(60));
        // A running thread elsewhere is still preferred: a move, not a wake.
        let _ = d.on_deadline(60);
        assert_eq!(
            d.handle(
                60,
                DeliveryFact::Surveyed {
                    request: RequestSeen::Pending,
                    threads: vec![thread(10, true, 'S'), thread(11, false, 'R')],
                }
            ),
            Some(DeliveryAction::Move { from: 10, to: 11 })
        );
        assert_eq!(
            d.handle(61, DeliveryFact::Moved { tid: 11 }),
            Some(DeliveryAction::Wake { tid: 11 })
        );
    }

    #[test]
    fn giving_up_while_waking_withdraws_and_a_late_wake_answer_changes_nothing() {
        let mut d = waking();
        let _ = d.handle(0, DeliveryFact::Scheduled { tid: 10 });
        assert_eq!(d.give_up(), Some(DeliveryAction::Withdraw { tid: 10 }));
        assert_eq!(
            d.handle(
                1,
                DeliveryFact::Woken {
                    tid: 10,
                    not_sent: None
                }
            ),
            None
        );
        assert_eq!(d.handle(2, DeliveryFact::Withdrawn), None);
        assert_eq!(d.status(), DeliveryStatus::Withdrawn);
    }

    #[test]
    fn journals_from_before_waking_replay_with_waking_off() {
        let old = r#"{"survey_after_ms":20,"max_survey_backoff_ms":320,"retry_after_ms":10}"#;
        let timing: DeliveryTiming = serde_json::from_str(old).unwrap();
        assert!(!timing.wake);
    }
}
