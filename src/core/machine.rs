//! The controller's lifecycle as one state machine.
//!
//! ```text
//!              GRANT_ACCESS ok-syntax                 target ran prctl (ack)
//!   ┌──────┐ ─────────────────────────▶ ┌──────────┐ ───────────────────────▶ ┌──────────┐
//!   │ Idle │                            │ Granting │                          │ Attached │
//!   └──────┘ ◀───────────────────────── └──────────┘ ◀─────────────────────── └──────────┘
//!      │      refused / failed / timed out   │  ▲       next GRANT_ACCESS          │
//!      │                                     │  └─ (failure returns to Attached) ──┘
//!      │ TERMINATE, SIGINT/TERM/HUP          │                                   │
//!      ▼                                     ▼                                   ▼
//!   ┌──────────┐  target exited (or SIGKILL did not help)   ┌────────────┐
//!   │ Stopping │ ─────────────────────────────────────────▶ │ Terminated │ ◀── target exited
//!   └──────────┘                                            └────────────┘     by itself
//! ```
//!
//! Control lines are answered strictly in arrival order, because every client reads the
//! one shared `response` pipe: lines that arrive while a grant is in flight wait in a
//! queue and are answered after it. `Stopping` exists beside the four lifecycle states
//! because stopping a target takes time (SIGTERM, grace, SIGKILL) during which lines
//! must still be answered.
use super::wire::{parse_command, Command, Dialect, Frame, Reply};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;

/// Milliseconds since the session started. The only notion of time in the core.
pub type Millis = u64;

/// Identifies one grant attempt, so a late acknowledgement is never taken for a newer one.
pub type GrantId = u64;

/// What the kernel's Yama LSM does here, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "yama", content = "scope", rename_all = "snake_case")]
pub enum Yama {
    /// No Yama in this kernel: classic ptrace rules, `PR_SET_PTRACER` fails with EINVAL.
    Absent,
    Scope(u8),
}

impl Yama {
    /// At scope 2 and 3 even a declared tracer is refused: no grant can help.
    pub fn grant_can_help(self) -> bool {
        !matches!(self, Yama::Scope(s) if s >= 2)
    }
}

impl fmt::Display for Yama {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Yama::Absent => f.write_str("Yama absent"),
            Yama::Scope(s) => write!(f, "Yama ptrace_scope {s}"),
        }
    }
}

/// Everything the core needs to know about its surroundings, fixed for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub dialect: Dialect,
    pub target_pid: u32,
    /// Clients must run as this uid: Yama never lets another user's process attach.
    pub uid: u32,
    pub yama: Yama,
    /// From GRANT_ACCESS to the `ERROR:` that says the target ran no Python code.
    pub grant_timeout_ms: Millis,
    /// How long the main thread gets to pick a grant up before it is moved to a thread
    /// that is running (the main thread may be blocked in sleep, a lock or a join).
    pub retarget_after_ms: Millis,
    /// From SIGTERM to SIGKILL when stopping the target.
    pub stop_grace_ms: Millis,
}

impl Config {
    pub fn new(target_pid: u32, uid: u32, yama: Yama) -> Config {
        Config {
            dialect: Dialect::Seed,
            target_pid,
            uid,
            yama,
            grant_timeout_ms: 1500,
            retarget_after_ms: 20,
            stop_grace_ms: 2000,
        }
    }
}

/// How a process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention, so a supervisor sees through the controller.
    pub fn as_exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(sig) => 128 + sig,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signal(sig) => {
                write!(f, "was killed by signal {sig} ({})", signal_name(*sig))
            }
        }
    }
}

/// Names of the signals a user is likely to meet; the number is always shown beside it.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// The signals that stop the controller (and with it the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopSignal {
    Interrupt,
    Terminate,
    Hangup,
}

impl StopSignal {
    pub fn number(self) -> i32 {
        match self {
            StopSignal::Hangup => 1,
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}

/// What the edge found out about a pid that asked for access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum ClientFacts {
    Running { uid: u32, exe: Option<String> },
    NotRunning,
}

/// Facts observed at the edge, past tense. Each is journaled before it is handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A line arrived on the control pipe.
    LineReceived {
        frame: Frame,
    },
    ClientInspected {
        pid: u32,
        facts: ClientFacts,
    },
    /// The grant request was written into the thread `tid` of the target.
    GrantScheduled {
        grant: GrantId,
        tid: i32,
    },
    /// A not-yet-picked-up grant was moved to another thread (or left where it was).
    GrantMoved {
        grant: GrantId,
        tid: i32,
    },
    /// A retarget found no other thread running Python code: the grant stays where it
    /// is. `threads` says what each thread is doing ("1234 (main) S in do_sys_poll").
    GrantStayed {
        grant: GrantId,
        threads: String,
    },
    /// A retarget found the grant already picked up: its acknowledgement is on the way.
    GrantPickedUp {
        grant: GrantId,
    },
    /// The request could not be written into the target. `transient`: it may work in a
    /// moment (the interpreter is still starting), so it is tried again until the deadline.
    GrantNotScheduled {
        grant: GrantId,
        error: String,
        #[serde(default)]
        transient: bool,
    },
    /// The injected script reported `prctl`'s result: 0 or an errno.
    GrantRan {
        grant: GrantId,
        errno: i32,
    },
    TargetExited {
        status: ExitStatus,
    },
    SignalReceived {
        signal: StopSignal,
    },
    /// A deadline from [`Controller::poll_timeout`] has come.
    DeadlineReached,
}

/// Instructions for the edge, imperative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Write this reply line on the response pipe.
    Reply {
        reply: Reply,
    },
    /// Find out whether `pid` runs and as whom; answer with [`Input::ClientInspected`].
    InspectClient {
        pid: u32,
    },
    /// Make the target's main thread run `prctl(PR_SET_PTRACER, client)` and report back.
    ScheduleGrant {
        grant: GrantId,
        client: u32,
    },
    /// If the grant is still pending, move it to a thread that is running.
    RetargetGrant {
        grant: GrantId,
    },
    /// Take the grant request back so that it can never run.
    WithdrawGrant {
        grant: GrantId,
    },
    /// SIGTERM the target, or SIGKILL it when `force`.
    StopTarget {
        force: bool,
    },
    /// Remove the FIFOs (and the pipe directory if the controller made it).
    RemovePipes,
    /// Tell the person watching the controller.
    Log {
        message: String,
    },
    Exit {
        code: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for [`Input::ClientInspected`].
    Inspecting,
    /// Waiting for [`Input::GrantScheduled`].
    Scheduling,
    /// In the target; at `retarget_at`, if not picked up, moved to a thread that runs.
    /// `backoff` doubles each time no other thread was running, so a target that runs no
    /// Python code at all is checked a few times, not every few milliseconds.
    Delivering {
        retarget_at: Millis,
        backoff: Millis,
    },
    /// Waiting for the edge to report what the retarget did.
    Retargeting { backoff: Millis },
    /// The target took the request; its acknowledgement is on the way.
    PickedUp,
    /// The last injection failed transiently; try again at `retry_at`.
    Retrying {
        retry_at: Millis,
        last_error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    id: GrantId,
    client: u32,
    asked_at: Millis,
    deadline: Millis,
    phase: Phase,
    /// The client that held the grant before; it keeps it if this one fails.
    previous: Option<u32>,
    /// What the target's threads were last seen doing, to explain a timeout.
    threads: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Requested,
    Signal(StopSignal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Granting(Grant),
    Attached {
        client: u32,
    },
    Stopping {
        reason: StopReason,
        kill_at: Option<Millis>,
        give_up_at: Millis,
    },
    Terminated {
        code: i32,
    },
}

impl State {
    fn name(&self) -> String {
        match self {
            State::Idle => "idle".into(),
            State::Granting(g) => format!("granting(client {})", g.client),
            State::Attached { client } => format!("attached(client {client})"),
            State::Stopping { .. } => "stopping".into(),
            State::Terminated { code } => format!("terminated(exit {code})"),
        }
    }
}

/// How long to wait for the target to die after SIGKILL before giving up on it (a task
/// in uninterruptible sleep): the controller must not hang on it.
const KILL_WAIT_MS: Millis = 2000;

/// Longest pause between two looks for a running thread to move a grant to.
const MAX_RETARGET_BACKOFF_MS: Millis = 320;

/// Pause before trying again an injection that failed transiently.
const RETRY_INJECTION_MS: Millis = 10;

/// The controller's decisions, without I/O. Feed it [`Input`]s with [`Controller::handle`],
/// carry out the [`Effect`]s it returns in order, and feed [`Input::DeadlineReached`] when
/// [`Controller::poll_timeout`] comes.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    state: State,
    /// Lines that arrived while a grant was in flight, answered in order after it.
    queued: VecDeque<Frame>,
    next_grant: GrantId,
}

impl Controller {
    pub fn new(config: Config) -> Controller {
        Controller {
            config,
            state: State::Idle,
            queued: VecDeque::new(),
            next_grant: 1,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A short name of the current state, for transcripts and logs.
    pub fn state_name(&self) -> String {
        self.state.name()
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated { .. })
    }

    /// The earliest moment at which [`Input::DeadlineReached`] must be fed, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match &self.state {
            State::Granting(g) => match g.phase {
                Phase::Delivering { retarget_at, .. } => Some(retarget_at.min(g.deadline)),
                Phase::Retrying { retry_at, .. } => Some(retry_at.min(g.deadline)),
                _ => Some(g.deadline),
            },
            State::Stopping {
                kill_at,
                give_up_at,
                ..
            } => Some(kill_at.unwrap_or(*give_up_at)),
            State::Idle | State::Attached { .. } | State::Terminated { .. } => None,
        }
    }

    #[must_use]
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.step(now, input, &mut out);
        out
    }

    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::LineReceived { frame } => {
                if matches!(self.state, State::Granting(_)) {
                    self.queued.push_back(frame);
                } else {
                    self.on_line(now, frame, out);
                }
            }
            Input::ClientInspected { pid, facts } => self.on_client_inspected(now, pid, facts, out),
            Input::GrantScheduled { grant, .. } | Input::GrantMoved { grant, .. } => {
                let backoff = self.config.retarget_after_ms;
                if let Some(g) = self.grant_mut(grant) {
                    if matches!(g.phase, Phase::Scheduling | Phase::Retargeting { .. }) {
                        let retarget_at = now + backoff;
                        g.phase = Phase::Delivering {
                            retarget_at,
                            backoff,
                        };
                    }
                }
            }
            Input::GrantStayed { grant, threads } => {
                if let Some(g) = self.grant_mut(grant) {
                    if let Phase::Retargeting { backoff } = g.phase {
                        let backoff = (backoff * 2).min(MAX_RETARGET_BACKOFF_MS);
                        g.phase = Phase::Delivering {
                            retarget_at: now + backoff,
                            backoff,
                        };
                        g.threads = Some(threads);
                    }
                }
            }
            Input::GrantPickedUp { grant } => {
                if let Some(g) = self.grant_mut(grant) {
                    if let Phase::Retargeting { .. } = g.phase {
                        g.phase = Phase::PickedUp;
                    }
                }
            }
            Input::GrantNotScheduled {
                grant,
                error,
                transient,
            } => {
                let Some(g) = self.grant_mut(grant) else {
                    return;
                };
                let retry_at = now + RETRY_INJECTION_MS;
                if transient && retry_at < g.deadline {
                    g.phase = Phase::Retrying {
                        retry_at,
                        last_error: error,
                    };
                } else {
                    let message = format!("cannot inject the grant into the target: {error}");
                    self.finish_grant(now, Err(message), out);
                }
            }
            Input::GrantRan { grant, errno } => self.on_grant_ran(now, grant, errno, out),
            Input::TargetExited { status } => self.on_target_exited(status, out),
            Input::SignalReceived { signal } => {
                if !matches!(
                    self.state,
                    State::Stopping { .. } | State::Terminated { .. }
                ) {
                    out.push(Effect::Log {
                        message: format!(
                            "received {}: stopping target {}",
                            signal_name(signal.number()),
                            self.config.target_pid
                        ),
                    });
                    self.begin_stop(now, StopReason::Signal(signal), out);
                }
            }
            Input::DeadlineReached => self.on_deadline(now, out),
        }
    }

    fn grant_mut(&mut self, id: GrantId) -> Option<&mut Grant> {
        match &mut self.state {
            State::Granting(g) if g.id == id => Some(g),
            _ => None,
        }
    }

    fn reply(&self, reply: Reply, out: &mut Vec<Effect>) {
        out.push(Effect::Reply { reply });
    }

    fn on_line(&mut self, now: Millis, frame: Frame, out: &mut Vec<Effect>) {
        let text = match frame {
            // An empty line carries no request: answering it would give a reply nobody
            // waits for, which the next client would read as its own.
            Frame::Text { text, .. } if text.is_empty() || text == "\r" => return,
            Frame::Text { text, .. } => text,
            Frame::NotUtf8 { len } => {
                return self.reply(
                    Reply::Error(format!("line of {len} bytes is not valid UTF-8")),
                    out,
                )
            }
            Frame::Oversized { len } => {
                return self.reply(
                    Reply::Error(format!(
                        "line of {len} bytes is too long (at most {} bytes)",
                        super::wire::MAX_LINE
                    )),
                    out,
                )
            }
        };
        let command = match parse_command(&text) {
            Ok(command) => command,
            Err(e) => return self.reply(Reply::Error(e.to_string()), out),
        };
        if let State::Stopping { .. } | State::Terminated { .. } = self.state {
            return self.reply(Reply::Error("the controller is shutting down".into()), out);
        }
        match command {
            Command::GetTargetPid => self.reply(Reply::TargetPid(self.config.target_pid), out),
            Command::Terminate => {
                // The legacy dialect never answers terminate (0.x clients do not read it).
                if self.config.dialect == Dialect::Seed {
                    self.reply(Reply::Ready, out);
                }
                out.push(Effect::Log {
                    message: format!(
                        "TERMINATE requested: stopping target {}",
                        self.config.target_pid
                    ),
                });
                self.begin_stop(now, StopReason::Requested, out);
            }
            Command::GrantAccess { pid } => self.begin_grant(now, pid, out),
        }
    }

    fn begin_grant(&mut self, now: Millis, client: u32, out: &mut Vec<Effect>) {
        let refusal = if !self.config.yama.grant_can_help() {
            Some(format!(
                "{}: only processes with CAP_SYS_PTRACE may attach, no grant can help",
                self.config.yama
            ))
        } else if client == self.config.target_pid {
            Some(format!("pid {client} is the target itself"))
        } else {
            None
        };
        if let Some(msg) = refusal {
            return self.reply(Reply::Error(msg), out);
        }
        let previous = match self.state {
            State::Attached { client } => Some(client),
            _ => None,
        };
        let id = self.next_grant;
        self.next_grant += 1;
        self.state = State::Granting(Grant {
            id,
            client,
            asked_at: now,
            deadline: now + self.config.grant_timeout_ms,
            phase: Phase::Inspecting,
            previous,
            threads: None,
        });
        out.push(Effect::InspectClient { pid: client });
    }

    fn on_client_inspected(
        &mut self,
        now: Millis,
        pid: u32,
        facts: ClientFacts,
        out: &mut Vec<Effect>,
    ) {
        let uid = self.config.uid;
        let Some(grant) = (match &mut self.state {
            State::Granting(g) if g.client == pid && g.phase == Phase::Inspecting => Some(g),
            _ => None,
        }) else {
            return;
        };
        let problem = match facts {
            ClientFacts::NotRunning => Some(format!("pid {pid} is not a running process")),
            ClientFacts::Running { uid: other, .. } if other != uid => Some(format!(
                "pid {pid} belongs to uid {other}, not to uid {uid} of the target: Yama never lets another user attach"
            )),
            ClientFacts::Running { .. } => None,
        };
        match problem {
            Some(msg) => self.finish_grant(now, Err(msg), out),
            None => {
                grant.phase = Phase::Scheduling;
                let (id, client) = (grant.id, grant.client);
                out.push(Effect::ScheduleGrant { grant: id, client });
            }
        }
    }

    fn on_grant_ran(&mut self, now: Millis, id: GrantId, errno: i32, out: &mut Vec<Effect>) {
        const EINVAL: i32 = 22;
        let Some(grant) = self.grant_mut(id) else {
            // Picked up in the instant before a timeout withdrew it: the client heard
            // ERROR, but the target did declare it. Say so rather than pretend.
            if errno == 0
                && !matches!(
                    self.state,
                    State::Stopping { .. } | State::Terminated { .. }
                )
            {
                out.push(Effect::Log {
                    message: format!("grant {id} ran after its request had timed out; the declaration stands until the next grant"),
                });
            }
            return;
        };
        let client = grant.client;
        let outcome = match (errno, self.config.yama) {
            (0, _) => Ok(format!("granted ptrace access to pid {client}")),
            (EINVAL, Yama::Absent) => Ok(format!(
                "pid {client} may attach: Yama is not active (prctl gave EINVAL), classic ptrace rules apply"
            )),
            (EINVAL, Yama::Scope(_)) => {
                Err(format!("the target's prctl(PR_SET_PTRACER, {client}) failed with EINVAL: has pid {client} exited?"))
            }
            (errno, _) => Err(format!("the target's prctl(PR_SET_PTRACER, {client}) failed with errno {errno}")),
        };
        self.finish_grant(now, outcome, out);
    }

    /// Ends the grant in flight with READY or `ERROR:`, then answers what queued meanwhile.
    fn finish_grant(
        &mut self,
        now: Millis,
        outcome: Result<String, String>,
        out: &mut Vec<Effect>,
    ) {
        let State::Granting(grant) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        match outcome {
            Ok(message) => {
                out.push(Effect::Log {
                    message: format!("{message} ({} ms)", now - grant.asked_at),
                });
                self.reply(Reply::Ready, out);
                self.state = State::Attached {
                    client: grant.client,
                };
            }
            Err(message) => {
                out.push(Effect::Log {
                    message: format!("grant for pid {} refused: {message}", grant.client),
                });
                self.reply(Reply::Error(message), out);
                self.state = match grant.previous {
                    Some(client) => State::Attached { client },
                    None => State::Idle,
                };
            }
        }
        self.drain_queue(now, out);
    }

    fn drain_queue(&mut self, now: Millis, out: &mut Vec<Effect>) {
        while !matches!(self.state, State::Granting(_)) {
            let Some(frame) = self.queued.pop_front() else {
                break;
            };
            self.on_line(now, frame, out);
        }
    }

    fn on_deadline(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let timeout = self.config.grant_timeout_ms;
        match &mut self.state {
            State::Granting(g) if now >= g.deadline => {
                let id = g.id;
                if matches!(
                    g.phase,
                    Phase::Delivering { .. } | Phase::Retargeting { .. }
                ) {
                    out.push(Effect::WithdrawGrant { grant: id });
                }
                let seen = match &g.threads {
                    Some(threads) => format!(" (threads: {threads})"),
                    None => String::new(),
                };
                let message = match &g.phase {
                    Phase::Retrying { last_error, .. } => {
                        format!("timed out after {timeout} ms: cannot inject the grant into the target: {last_error}")
                    }
                    _ => format!(
                        "timed out after {timeout} ms: the target ran no Python code{seen}; it may be blocked in a C call, a long sleep or I/O; try again when it is busy"
                    ),
                };
                self.finish_grant(now, Err(message), out);
            }
            State::Granting(g) => match g.phase {
                Phase::Delivering {
                    retarget_at,
                    backoff,
                } if now >= retarget_at => {
                    g.phase = Phase::Retargeting { backoff };
                    out.push(Effect::RetargetGrant { grant: g.id });
                }
                Phase::Retrying { retry_at, .. } if now >= retry_at => {
                    g.phase = Phase::Scheduling;
                    let (grant, client) = (g.id, g.client);
                    out.push(Effect::ScheduleGrant { grant, client });
                }
                _ => {}
            },
            State::Stopping {
                kill_at: Some(at), ..
            } if now >= *at => {
                out.push(Effect::Log {
                    message: format!(
                        "target {} still running {} ms after SIGTERM: sending SIGKILL",
                        self.config.target_pid, self.config.stop_grace_ms
                    ),
                });
                out.push(Effect::StopTarget { force: true });
                if let State::Stopping {
                    kill_at,
                    give_up_at,
                    ..
                } = &mut self.state
                {
                    *kill_at = None;
                    *give_up_at = now + KILL_WAIT_MS;
                }
            }
            State::Stopping {
                kill_at: None,
                give_up_at,
                reason,
            } if now >= *give_up_at => {
                let code = stop_exit_code(*reason);
                out.push(Effect::Log {
                    message: format!(
                        "target {} did not exit after SIGKILL; giving up on it",
                        self.config.target_pid
                    ),
                });
                self.terminate(code, out);
            }
            _ => {}
        }
    }

    fn begin_stop(&mut self, now: Millis, reason: StopReason, out: &mut Vec<Effect>) {
        if let State::Granting(g) = &self.state {
            let id = g.id;
            if matches!(
                g.phase,
                Phase::Delivering { .. } | Phase::Retargeting { .. }
            ) {
                out.push(Effect::WithdrawGrant { grant: id });
            }
            let client = g.client;
            self.reply(Reply::Error("the controller is shutting down".into()), out);
            out.push(Effect::Log {
                message: format!("grant for pid {client} abandoned: shutting down"),
            });
        }
        self.state = State::Stopping {
            reason,
            kill_at: Some(now + self.config.stop_grace_ms),
            give_up_at: now + self.config.stop_grace_ms + KILL_WAIT_MS,
        };
        out.push(Effect::StopTarget { force: false });
        while let Some(frame) = self.queued.pop_front() {
            self.on_line(now, frame, out);
        }
    }

    fn on_target_exited(&mut self, status: ExitStatus, out: &mut Vec<Effect>) {
        let code = match &self.state {
            State::Terminated { .. } => return,
            State::Stopping { reason, .. } => {
                out.push(Effect::Log {
                    message: format!("target {} {status}", self.config.target_pid),
                });
                stop_exit_code(*reason)
            }
            State::Idle | State::Attached { .. } | State::Granting(_) => {
                out.push(Effect::Log {
                    message: format!("target {} {status}", self.config.target_pid),
                });
                status.as_exit_code()
            }
        };
        if let State::Granting(g) = &self.state {
            let client = g.client;
            self.reply(
                Reply::Error(format!("target process {} exited", self.config.target_pid)),
                out,
            );
            out.push(Effect::Log {
                message: format!("grant for pid {client} abandoned: target exited"),
            });
        }
        self.terminate(code, out);
    }

    fn terminate(&mut self, code: i32, out: &mut Vec<Effect>) {
        self.state = State::Terminated { code };
        let target = self.config.target_pid;
        for _ in self.queued.drain(..) {
            out.push(Effect::Reply {
                reply: Reply::Error(format!("target process {target} is not running")),
            });
        }
        out.push(Effect::RemovePipes);
        out.push(Effect::Exit { code });
    }
}

fn stop_exit_code(reason: StopReason) -> i32 {
    match reason {
        StopReason::Requested => 0,
        StopReason::Signal(signal) => 128 + signal.number(),
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::LineReceived {
                frame: Frame::Text { text, terminated },
            } => {
                write!(
                    f,
                    "line {text:?}{}",
                    if *terminated {
                        ""
                    } else {
                        " (no newline, at EOF)"
                    }
                )
            }
            Input::LineReceived {
                frame: Frame::NotUtf8 { len },
            } => write!(f, "line of {len} bytes, not UTF-8"),
            Input::LineReceived {
                frame: Frame::Oversized { len },
            } => write!(f, "line of {len} bytes, too long"),
            Input::ClientInspected {
                pid,
                facts: ClientFacts::NotRunning,
            } => {
                write!(f, "client {pid} is not running")
            }
            Input::ClientInspected {
                pid,
                facts: ClientFacts::Running { uid, exe },
            } => {
                write!(f, "client {pid} runs as uid {uid}")?;
                if let Some(exe) = exe {
                    write!(f, " ({exe})")?;
                }
                Ok(())
            }
            Input::GrantScheduled { grant, tid } => {
                write!(f, "grant {grant} written into thread {tid}")
            }
            Input::GrantMoved { grant, tid } => write!(f, "grant {grant} moved to thread {tid}"),
            Input::GrantPickedUp { grant } => write!(f, "grant {grant} already picked up"),
            Input::GrantStayed { grant, threads } => {
                write!(f, "grant {grant} stays: no other thread runs ({threads})")
            }
            Input::GrantNotScheduled {
                grant,
                error,
                transient,
            } => {
                let retry = if *transient { " (will retry)" } else { "" };
                write!(f, "grant {grant} not injected{retry}: {error}")
            }
            Input::GrantRan { grant, errno } => write!(f, "grant {grant} ran, prctl errno {errno}"),
            Input::TargetExited { status } => write!(f, "target {status}"),
            Input::SignalReceived { signal } => {
                write!(f, "signal {}", signal_name(signal.number()))
            }
            Input::DeadlineReached => f.write_str("deadline reached"),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Reply { reply } => write!(f, "reply {reply}"),
            Effect::InspectClient { pid } => write!(f, "inspect pid {pid}"),
            Effect::ScheduleGrant { grant, client } => {
                write!(f, "inject grant {grant} for pid {client}")
            }
            Effect::RetargetGrant { grant } => write!(f, "retarget grant {grant}"),
            Effect::WithdrawGrant { grant } => write!(f, "withdraw grant {grant}"),
            Effect::StopTarget { force: false } => f.write_str("stop target (SIGTERM)"),
            Effect::StopTarget { force: true } => f.write_str("stop target (SIGKILL)"),
            Effect::RemovePipes => f.write_str("remove pipes"),
            Effect::Log { message } => write!(f, "log: {message}"),
            Effect::Exit { code } => write!(f, "exit {code}"),
        }
    }
}
