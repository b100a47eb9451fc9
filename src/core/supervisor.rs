//! The controller's decisions: a state machine that supervises the target, answers the
//! pipe protocol and hands out grants. Pure (see the contract in [`crate::core`]).
//!
//! Control lines are answered strictly in arrival order, because every FIFO client reads
//! the one shared `response` pipe: lines that arrive while a grant is in flight wait in a
//! queue and are answered after it. Lines from the socket (one connection per request)
//! take the same queue, but each reply is addressed to its own connection
//! ([`ReplyTo`]), so no socket client can read another's reply; the socket also names
//! the asker ([`Origin`]), which the grant policy uses.
use super::delivery::{
    describe_threads, held_by_debugger, Delivery, DeliveryAction, DeliveryFact, DeliveryStatus,
    DeliveryTiming, InjectFailure,
};
use super::ptrace_policy::{attach_rule, AttachRule, TracerPrivilege};
pub use super::signals::{parse_signal, signal_name, ExitStatus, StopSignal, DEFAULT_STOP_SIGNAL};
use super::signals::{signal_display, SIGKILL};
use super::stacks::AsyncTask;
use super::tree::{
    ps_json, ps_report, stacks_json, stacks_report, tasks_json, StacksOutcome, TasksReport,
    TreeListing,
};
use super::wire::{parse_command, Command, Dialect, Frame, Reply, StackTarget};
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

impl fmt::Display for Yama {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Yama::Absent => f.write_str("Yama absent"),
            Yama::Scope(s) => write!(f, "Yama ptrace_scope {s}"),
        }
    }
}

/// Whether grants are really injected. `SkippedForDiagnostics` is the Yama rig's negative
/// control (`HELI_DISABLE_GRANT=1`): the core answers READY without injecting, and says so,
/// so that the rig can show that attach then fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GrantInjection {
    #[default]
    Injected,
    SkippedForDiagnostics,
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
    /// How the grant's request finds a thread that runs (see [`super::delivery`]).
    #[serde(default)]
    pub delivery: DeliveryTiming,
    /// The first, polite signal of a stop, sent to the target alone. SIGINT by default:
    /// Python raises KeyboardInterrupt, so `finally` blocks and `atexit` handlers run
    /// (SIGTERM's default action kills Python before either can).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: i32,
    /// From the stop signal to SIGKILL of whatever remains of the tree.
    pub stop_grace_ms: Millis,
    #[serde(default)]
    pub grant_injection: GrantInjection,
    /// A grant still held this long after it was given is taken back: one nobody uses
    /// must not stay open forever. Our client takes its grant back when pdb detaches, and
    /// a grant goes when its holder exits, so this bounds only forgotten ones.
    #[serde(default = "default_grant_expiry")]
    pub grant_expiry_ms: Millis,
    /// The keeper's pid: orphans of the tree are reparented to it (a child subreaper), so
    /// a process whose parent chain reaches it belongs to the tree. Absent in journals
    /// written before grants could go into other processes of the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper_pid: Option<u32>,
    /// The wall clock when the session started, to name moments in messages ("since
    /// 10:42:07"). The core reads no clock: this is a fact of the start, like the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<WallClock>,
}

/// The local wall-clock time at the session's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    pub started_unix_ms: u64,
    /// Local time minus UTC, in seconds, at the start.
    pub utc_offset_s: i32,
}

impl WallClock {
    /// "HH:MM:SS", local time, of the moment `at` of the session.
    pub fn local_time(&self, at: Millis) -> String {
        let unix_s = (self.started_unix_ms + at) / 1000;
        let local = unix_s as i64 + i64::from(self.utc_offset_s);
        let day_s = local.rem_euclid(86_400);
        format!(
            "{:02}:{:02}:{:02}",
            day_s / 3600,
            day_s % 3600 / 60,
            day_s % 60
        )
    }
}

/// "45s", "2m", "3h": how long ago, rounded down, for people.
pub fn human_age(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn default_grant_expiry() -> Millis {
    30 * 60 * 1000
}

impl Config {
    pub fn new(target_pid: u32, uid: u32, yama: Yama) -> Config {
        Config {
            dialect: Dialect::Seed,
            target_pid,
            uid,
            yama,
            grant_timeout_ms: 1500,
            delivery: DeliveryTiming::default(),
            stop_signal: DEFAULT_STOP_SIGNAL,
            stop_grace_ms: 2000,
            grant_injection: GrantInjection::Injected,
            grant_expiry_ms: default_grant_expiry(),
            keeper_pid: None,
            clock: None,
        }
    }
}

fn default_stop_signal() -> i32 {
    DEFAULT_STOP_SIGNAL
}

/// The controller's exit status: one enum for every way a controller ends (the README's
/// table lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "exit", rename_all = "snake_case")]
pub enum ControllerExit {
    /// The target ended by itself: its status passes through (128+N for signal N).
    Target { status: ExitStatus },
    /// A client asked TERMINATE and the target was stopped: 0.
    Terminated,
    /// The controller was stopped by a signal: 128+N, as a shell reports it.
    Signalled { signal: StopSignal },
    /// The controller's own failure (start refused, its adapters died): 125, the
    /// convention of `timeout`, `env` and `docker run`, distinct from any target status.
    Failed,
}

impl ControllerExit {
    pub const FAILED_CODE: i32 = 125;
    /// A bad command line (clap's own exit, before the controller runs).
    pub const USAGE_CODE: i32 = 2;

    pub fn code(self) -> i32 {
        match self {
            ControllerExit::Target { status } => status.as_exit_code(),
            ControllerExit::Terminated => 0,
            ControllerExit::Signalled { signal } => 128 + signal.number(),
            ControllerExit::Failed => Self::FAILED_CODE,
        }
    }
}

/// What the edge found out about a pid that asked for access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum ClientFacts {
    Running {
        uid: u32,
        exe: Option<String>,
        #[serde(default = "ordinary")]
        privilege: TracerPrivilege,
        /// How the pid relates to the socket peer that asked; reported when
        /// [`Effect::InspectClient`] named an asker, absent for FIFO requests (whose asker
        /// nobody knows), so format-2 journals read as they were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kinship: Option<Kinship>,
    },
    NotRunning,
}

/// How the pid named in a socket GRANT_ACCESS relates to the peer that asked, as the
/// edge found it in `/proc` (parent links, followed up from the pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kinship {
    /// The pid is the asker itself.
    Asker,
    /// The asker is an ancestor of the pid (a pdb it started, say).
    Descendant,
    /// Neither: granting it would let the asker hand debugging rights to a stranger.
    Unrelated,
}

/// What the edge found out about the process a `GRANT_ACCESS` names as the one that
/// declares (the second pid), to decide whether it belongs to the supervised tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum ProcessFacts {
    /// Its parent chain, nearest first, up to init (`/proc/PID/stat`).
    Running {
        ancestry: Vec<u32>,
    },
    NotRunning,
}

/// Where a control line came from. The FIFO is anonymous: anyone may write, and replies
/// go, in order, to whoever reads the shared `response` pipe. A socket connection carries
/// one request, and the kernel names its peer (SO_PEERCRED): who asked is a fact, and the
/// reply goes back on that connection alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Origin {
    #[default]
    Fifo,
    Socket {
        /// The connection, numbered by the edge; the reply's address.
        conn: u64,
        /// The peer's pid and uid when it connected.
        pid: u32,
        uid: u32,
    },
}

impl Origin {
    pub fn is_fifo(&self) -> bool {
        matches!(self, Origin::Fifo)
    }

    /// Where the reply to this line goes.
    pub fn reply_to(self) -> ReplyTo {
        match self {
            Origin::Fifo => ReplyTo::Fifo,
            Origin::Socket { conn, .. } => ReplyTo::Socket { conn },
        }
    }

    /// The socket connection the line came on.
    pub fn conn(self) -> Option<u64> {
        match self {
            Origin::Fifo => None,
            Origin::Socket { conn, .. } => Some(conn),
        }
    }

    /// The pid that asked, when the kernel told us.
    pub fn asker(self) -> Option<u32> {
        match self {
            Origin::Fifo => None,
            Origin::Socket { pid, .. } => Some(pid),
        }
    }
}

/// Where a reply goes: the shared `response` pipe, in order, or one socket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum ReplyTo {
    #[default]
    Fifo,
    Socket {
        conn: u64,
    },
}

impl ReplyTo {
    pub fn is_fifo(&self) -> bool {
        matches!(self, ReplyTo::Fifo)
    }
}

fn ordinary() -> TracerPrivilege {
    TracerPrivilege::Ordinary
}

/// Facts observed at the edge, past tense. Each is journaled before it is handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// A line arrived on the control pipe or on a socket connection.
    LineReceived {
        frame: Frame,
        /// Absent in the journal for the FIFO, as in format 2.
        #[serde(default, skip_serializing_if = "Origin::is_fifo")]
        origin: Origin,
    },
    /// The answer to [`Effect::InspectClient`].
    ClientInspected {
        pid: u32,
        facts: ClientFacts,
    },
    /// The answer to [`Effect::InspectProcess`].
    ProcessInspected {
        pid: u32,
        facts: ProcessFacts,
    },
    /// A socket connection whose line has no reply yet was closed by its client: it gave
    /// up (Ctrl-C, its own deadline) or it died. Nobody waits for the reply any more.
    ConnectionClosed {
        conn: u64,
    },
    /// The answer to an [`Effect::Deliver`], or what the edge saw of the grant's request.
    Delivery {
        grant: GrantId,
        fact: DeliveryFact,
    },
    /// The injected script reported `prctl`'s result: 0 or an errno.
    GrantRan {
        grant: GrantId,
        errno: i32,
    },
    TargetExited {
        status: ExitStatus,
    },
    /// A process watched after [`Effect::WatchClient`] has exited.
    ClientExited {
        pid: u32,
    },
    SignalReceived {
        signal: StopSignal,
        /// Sent by the kernel rather than by `kill()`: a terminal's Ctrl-C (or hang-up)
        /// reaches the whole foreground process group, so the target got it too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_kernel: bool,
    },
    /// The answer to [`Effect::ListTree`].
    TreeListed {
        listing: TreeListing,
    },
    /// The answer to [`Effect::ReadStacks`], one outcome per pid asked for, in order.
    StacksRead {
        stacks: Vec<StacksOutcome>,
    },
    /// The answer to [`Effect::ReadTasks`].
    TasksRead {
        pid: u32,
        outcome: Result<Vec<AsyncTask>, String>,
    },
    /// Every adapter thread has stopped: no line, signal or exit can be observed anymore.
    AdaptersGone,
    /// A deadline from [`Supervisor::poll_timeout`] has come.
    DeadlineReached,
}

/// Instructions for the edge, imperative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Write this reply line on the response pipe, or on the socket connection `to`.
    Reply {
        reply: Reply,
        #[serde(default, skip_serializing_if = "ReplyTo::is_fifo")]
        to: ReplyTo,
    },
    /// Find out whether `pid` runs, as whom and with which privilege, and, when `asker` is
    /// given, whether `pid` is the asker or its descendant ([`Kinship`]); answer with
    /// [`Input::ClientInspected`].
    InspectClient {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asker: Option<u32>,
    },
    /// Find out whether `pid` runs and its parent chain; answer with
    /// [`Input::ProcessInspected`].
    InspectProcess {
        pid: u32,
    },
    /// Every [`Effect::Deliver`] of `grant` goes into `process` (a descendant of the
    /// target) instead of the target; said once, before the grant's first delivery.
    AimGrant {
        grant: GrantId,
        process: u32,
    },
    /// Carry out one step of the grant's delivery: its request makes the target run
    /// `prctl(PR_SET_PTRACER, client)` and report back. Answer with [`Input::Delivery`].
    Deliver {
        grant: GrantId,
        client: u32,
        action: DeliveryAction,
    },
    /// The grant is over (it ran, failed or was withdrawn): release what carried it.
    ForgetGrant {
        grant: GrantId,
    },
    /// Report with [`Input::ClientExited`] when `pid` exits (it holds the grant).
    WatchClient {
        pid: u32,
    },
    /// Send `signal` to the target alone (the first step of a stop).
    SignalTarget {
        signal: i32,
    },
    /// Send `signal` to every process of the supervised tree: the target (while it
    /// runs) and all its descendants, including orphans reparented to the controller's
    /// side. Nothing of the tree may outlive the controller.
    StopTree {
        signal: i32,
    },
    /// List the supervised tree (`/proc`, each process's interpreter); answer with
    /// [`Input::TreeListed`]. Bounded in time and size by the edge.
    ListTree,
    /// Read every thread's Python stack of each pid (from outside, without stopping it);
    /// answer with [`Input::StacksRead`]. Bounded in time by the edge.
    ReadStacks {
        pids: Vec<u32>,
    },
    /// Read the asyncio tasks of `pid`; answer with [`Input::TasksRead`].
    ReadTasks {
        pid: u32,
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

/// One GRANT_ACCESS in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    id: GrantId,
    client: u32,
    /// The process that declares: the target or one of its descendants.
    process: u32,
    /// Who asked and where the answer goes.
    origin: Origin,
    asked_at: Millis,
    /// `None`: the asker waits until it hangs up (`WAIT`).
    deadline: Option<Millis>,
    /// When the next `WAITING` progress line is due (waiting grants only).
    next_progress: Option<Millis>,
    /// The asker hung up after the target took the request: when it reports, the
    /// declaration is taken back at once.
    cancelled: bool,
    /// The client that held the grant before; it keeps the grant if this one fails.
    previous: Option<Holder>,
    step: GrantStep,
    purpose: Purpose,
}

/// Who holds the grant, in which process, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    client: u32,
    process: u32,
    since: Millis,
    /// When the grant is taken back if nobody took it back before.
    expires_at: Millis,
    /// The socket peer that asked (this project's client, which takes its grant back
    /// when pdb detaches): while it holds the grant a debugger session is open. `None`
    /// for the anonymous FIFO.
    asker: Option<u32>,
}

/// The first `WAITING` line comes this long after the request, so that the client can
/// say within a second that it waits; then one a second.
const FIRST_PROGRESS_MS: Millis = 500;
const PROGRESS_EVERY_MS: Millis = 1000;

/// What a grant's injection declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `prctl(PR_SET_PTRACER, client)`: the client may attach.
    Declare,
    /// `prctl(PR_SET_PTRACER, 0)`: nobody is declared any more; `client` held the grant.
    Revoke {
        reason: RevokeReason,
        /// A REVOKE_ACCESS line asked for it (and was answered when it began).
        requested: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevokeReason {
    Detached,
    ClientExited,
    Expired,
    /// Its asker hung up while the target was running it.
    Cancelled,
}

impl fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevokeReason::Detached => "its client detached",
            RevokeReason::ClientExited => "its client exited",
            RevokeReason::Expired => "it expired",
            RevokeReason::Cancelled => "its client cancelled the attach",
        })
    }
}

impl Grant {
    /// Whether a line waits for this grant's outcome: a revocation's line (if any) was
    /// answered when it began.
    fn reply_owed(&self) -> bool {
        match self.purpose {
            Purpose::Declare => true,
            Purpose::Revoke { .. } => false,
        }
    }

    fn is_delivering(&self) -> bool {
        matches!(self.step, GrantStep::Delivering(_))
    }

    /// The pid the target's prctl names: the client, or 0 (nobody) for a revocation.
    fn declared(&self) -> u32 {
        match self.purpose {
            Purpose::Declare => self.client,
            Purpose::Revoke { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GrantStep {
    /// Waiting for [`Input::ProcessInspected`]: is the named process in the tree?
    InspectingProcess,
    /// Waiting for [`Input::ClientInspected`].
    Inspecting,
    /// The request is on its way into the target (or taken: its report is on the way).
    Delivering(Delivery),
}

/// A question about the tree (`PS`, `STACK`, `TASKS`) being answered: the edge lists the
/// tree, then reads what the question needs. Lines that arrive meanwhile wait behind it,
/// as behind a grant, so the FIFO's replies keep their order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Survey {
    question: Question,
    to: ReplyTo,
    step: SurveyStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    Processes,
    Stacks(StackTarget),
    Tasks(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SurveyStep {
    /// [`Effect::ListTree`] is out.
    Listing,
    /// [`Effect::ReadStacks`] is out, for the listing kept here.
    ReadingStacks(TreeListing),
    /// [`Effect::ReadTasks`] is out.
    ReadingTasks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Requested,
    Signal(StopSignal),
    AdaptersGone,
}

impl StopReason {
    fn exit(self) -> ControllerExit {
        match self {
            StopReason::Requested => ControllerExit::Terminated,
            StopReason::Signal(signal) => ControllerExit::Signalled { signal },
            StopReason::AdaptersGone => ControllerExit::Failed,
        }
    }
}

/// The controller's lifecycle.
///
/// ```text
///              GRANT_ACCESS, pid plausible              target ran prctl (ack)
///   ┌──────┐ ─────────────────────────▶ ┌──────────┐ ───────────────────────▶ ┌──────────┐
///   │ Idle │                            │ Granting │                          │ Attached │
///   └──────┘ ◀───────────────────────── └──────────┘ ◀─────────────────────── └──────────┘
///      │      refused / failed / timed out   │  ▲       next GRANT_ACCESS          │
///      │                                     │  └─ (failure returns to Attached) ──┘
///      │ TERMINATE, SIGINT/TERM/HUP,         │                                   │
///      │ adapters gone                       ▼                                   ▼
///   ┌──────────┐  target exited (or SIGKILL did not help)   ┌────────────┐
///   │ Stopping │ ─────────────────────────────────────────▶ │ Terminated │ ◀── target exited
///   └──────────┘                                            └────────────┘     by itself
///
///   Granting's steps:
///     Inspecting ──client runs as our uid, policy says Grant──▶ Delivering(delivery phase)
///     Delivering: scheduling → waiting in a thread ⇄ surveying → moving → picked up,
///                 retrying after a failure that may pass (see core::delivery)
/// ```
///
/// `Stopping` exists beside the four lifecycle states because stopping a target takes
/// time during which lines must still be answered:
///
/// ```text
///   begin ── SignalTarget{stop_signal} ──▶ grace ── StopTree{SIGKILL} ──▶ KILL_WAIT ──▶ give up
///                                  │                          │
///                                  └──── target exited ───────┴──▶ StopTree{SIGKILL}, Terminated
/// ```
///
/// Whenever the target exits (stopped or by itself), `StopTree{SIGKILL}` ends whatever it
/// left behind: its children and grandchildren are part of the session.
// One value per controller, moved only between its own states: a box for the grant
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Granting(Grant),
    Attached(Holder),
    Stopping {
        reason: StopReason,
        kill_at: Option<Millis>,
        give_up_at: Millis,
    },
    Terminated {
        exit: ControllerExit,
    },
}

/// The state as a value, for tests and transcripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// A grant for `client`; `step` names where it is.
    Granting {
        client: u32,
        step: String,
    },
    Attached {
        client: u32,
    },
    Stopping,
    Terminated {
        code: i32,
    },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Idle => f.write_str("idle"),
            Phase::Granting { client, step } => write!(f, "granting(client {client}: {step})"),
            Phase::Attached { client } => write!(f, "attached(client {client})"),
            Phase::Stopping => f.write_str("stopping"),
            Phase::Terminated { code } => write!(f, "terminated(exit {code})"),
        }
    }
}

/// How long to wait for the target to die after SIGKILL before giving up on it (a task
/// in uninterruptible sleep): the controller must not hang on it.
const KILL_WAIT_MS: Millis = 2000;

/// `EINVAL` from prctl: no Yama (classic rules apply) or the declared pid is gone.
const EINVAL: i32 = 22;

/// The controller's decisions, without I/O. Feed it [`Input`]s with
/// [`Supervisor::handle`], carry out the [`Effect`]s it returns in order, and feed
/// [`Input::DeadlineReached`] when [`Supervisor::poll_timeout`] comes.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    state: State,
    /// Lines that arrived while a grant was in flight, answered in order after it.
    queued: VecDeque<(Frame, Origin)>,
    next_grant: GrantId,
    /// The question about the tree being answered, beside any state (see [`Survey`]).
    survey: Option<Survey>,
}

impl Supervisor {
    pub fn new(config: Config) -> Supervisor {
        Supervisor {
            config,
            state: State::Idle,
            queued: VecDeque::new(),
            next_grant: 1,
            survey: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current state as a value.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Idle => Phase::Idle,
            State::Granting(g) => Phase::Granting {
                client: g.client,
                step: match &g.step {
                    GrantStep::InspectingProcess => "inspecting the process".into(),
                    GrantStep::Inspecting => "inspecting".into(),
                    GrantStep::Delivering(d) => d.phase_name(),
                },
            },
            State::Attached(holder) => Phase::Attached {
                client: holder.client,
            },
            State::Stopping { .. } => Phase::Stopping,
            State::Terminated { exit } => Phase::Terminated { code: exit.code() },
        }
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated { .. })
    }

    /// The earliest moment at which [`Input::DeadlineReached`] must be fed, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match &self.state {
            State::Granting(g) => {
                let delivery = match &g.step {
                    GrantStep::Delivering(d) => d.poll_timeout(),
                    GrantStep::Inspecting | GrantStep::InspectingProcess => None,
                };
                [delivery, g.deadline, g.next_progress]
                    .into_iter()
                    .flatten()
                    .min()
            }
            State::Stopping {
                kill_at,
                give_up_at,
                ..
            } => Some(kill_at.unwrap_or(*give_up_at)),
            State::Attached(holder) => Some(holder.expires_at),
            State::Idle | State::Terminated { .. } => None,
        }
    }

    #[must_use]
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        let state = std::mem::replace(&mut self.state, State::Idle);
        self.state = self.transition(now, state, input, &mut out);
        // Lines queued behind a grant (or a survey) are answered as soon as neither is in
        // flight.
        while !matches!(self.state, State::Granting(_) | State::Terminated { .. })
            && self.survey.is_none()
        {
            let Some((frame, origin)) = self.queued.pop_front() else {
                break;
            };
            let state = std::mem::replace(&mut self.state, State::Idle);
            self.state = self.on_line(now, state, frame, origin, &mut out);
        }
        out
    }

    /// Every (state, input) pair, each named: the one place where the lifecycle moves.
    fn transition(
        &mut self,
        now: Millis,
        state: State,
        input: Input,
        out: &mut Vec<Effect>,
    ) -> State {
        match (state, input) {
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached { .. }
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::LineReceived { frame, origin },
            ) if self.survey.is_some() => {
                self.queued.push_back((frame, origin));
                state
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached { .. }
                | State::Stopping { .. }
                | State::Terminated { .. }),
                input @ (Input::TreeListed { .. }
                | Input::StacksRead { .. }
                | Input::TasksRead { .. }),
            ) => self.on_survey_fact(state, input, out),
            (State::Granting(grant), Input::LineReceived { frame, origin }) => {
                self.line_while_granting(now, grant, frame, origin, out)
            }
            (
                state @ (State::Idle
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::LineReceived { frame, origin },
            ) => self.on_line(now, state, frame, origin, out),

            (State::Granting(grant), Input::ClientInspected { pid, facts })
                if grant.client == pid && grant.step == GrantStep::Inspecting =>
            {
                self.on_client_inspected(now, grant, facts, out)
            }
            (State::Granting(grant), Input::ProcessInspected { pid, facts })
                if grant.process == pid && grant.step == GrantStep::InspectingProcess =>
            {
                self.on_process_inspected(now, grant, facts, out)
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                input @ Input::ProcessInspected { .. },
            ) => misuse(state, &input, out),

            (State::Granting(grant), Input::ConnectionClosed { conn })
                if grant.reply_owed() && grant.origin.conn() == Some(conn) =>
            {
                self.on_asker_gone(now, grant, out)
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::ConnectionClosed { conn },
            ) => {
                // A line still queued behind a grant: nobody waits for its reply now.
                self.queued
                    .retain(|(_, origin)| origin.conn() != Some(conn));
                state
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                input @ Input::ClientInspected { .. },
            ) => misuse(state, &input, out),

            (State::Granting(grant), Input::Delivery { grant: id, fact }) if grant.id == id => {
                self.on_delivery_fact(now, grant, fact, out)
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::Delivery { grant, fact },
            ) => {
                // What the edge saw of a grant that is over (withdrawn at its deadline or
                // when stopping). Only a pickup matters: the target may declare anyway.
                if fact == DeliveryFact::PickedUp {
                    out.push(Effect::Log {
                        message: format!("grant {grant} was picked up as it was being withdrawn; its declaration stands until the next grant"),
                    });
                }
                out.push(Effect::ForgetGrant { grant });
                state
            }

            (State::Granting(grant), Input::GrantRan { grant: id, errno })
                if grant.id == id && grant.is_delivering() =>
            {
                out.push(Effect::ForgetGrant { grant: id });
                let outcome = self.grant_outcome(grant.declared(), errno);
                self.finish_grant(now, grant, outcome, out)
            }
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::GrantRan { grant, errno },
            ) => {
                // Ran in the instant after a timeout withdrew it: the client heard ERROR,
                // but the target did declare it. Say so rather than pretend.
                if errno == 0 && !matches!(state, State::Stopping { .. } | State::Terminated { .. })
                {
                    out.push(Effect::Log {
                        message: format!("grant {grant} ran after its request had timed out; the declaration stands until the next grant"),
                    });
                }
                out.push(Effect::ForgetGrant { grant });
                state
            }

            (State::Terminated { exit }, Input::TargetExited { .. }) => State::Terminated { exit },
            (State::Stopping { reason, .. }, Input::TargetExited { status }) => {
                self.log_target_exit(status, out);
                out.push(Effect::StopTree { signal: SIGKILL });
                self.terminate(reason.exit(), out)
            }
            (
                state @ (State::Idle | State::Attached(_) | State::Granting(_)),
                Input::TargetExited { status },
            ) => {
                self.log_target_exit(status, out);
                if let State::Granting(grant) = state {
                    let (to, owed) = (grant.origin.reply_to(), grant.reply_owed());
                    self.abandon_grant(grant, "target exited", out);
                    if owed {
                        reply(
                            out,
                            to,
                            Reply::Error(format!(
                                "target process {} exited",
                                self.config.target_pid
                            )),
                        );
                    }
                }
                out.push(Effect::StopTree { signal: SIGKILL });
                self.terminate(ControllerExit::Target { status }, out)
            }

            (
                state @ (State::Stopping { .. } | State::Terminated { .. }),
                Input::SignalReceived { .. },
            ) => state,
            (
                state @ (State::Idle | State::Attached(_) | State::Granting(_)),
                Input::SignalReceived { signal, by_kernel },
            ) => {
                out.push(Effect::Log {
                    message: format!(
                        "received {}: stopping target {}",
                        signal_name(signal.number()),
                        self.config.target_pid
                    ),
                });
                // Ctrl-C on the terminal already gave the target its SIGINT; a second one
                // a moment later would interrupt the `finally` blocks the first one started.
                let target_has_it = by_kernel && signal.number() == self.config.stop_signal;
                if target_has_it {
                    out.push(Effect::Log {
                        message: format!(
                            "the target got {} from the terminal as well: not sending it again",
                            signal_name(signal.number())
                        ),
                    });
                }
                self.begin_stop(now, state, StopReason::Signal(signal), !target_has_it, out)
            }

            (state @ State::Terminated { .. }, Input::AdaptersGone) => state,
            (
                state @ (State::Idle
                | State::Attached(_)
                | State::Granting(_)
                | State::Stopping { .. }),
                Input::AdaptersGone,
            ) => {
                out.push(Effect::Log {
                    message: "every adapter thread has stopped: the controller can no longer hear clients, signals or the target; stopping".into(),
                });
                match state {
                    State::Stopping {
                        kill_at,
                        give_up_at,
                        ..
                    } => State::Stopping {
                        reason: StopReason::AdaptersGone,
                        kill_at,
                        give_up_at,
                    },
                    other @ (State::Idle
                    | State::Granting(_)
                    | State::Attached(_)
                    | State::Terminated { .. }) => {
                        self.begin_stop(now, other, StopReason::AdaptersGone, true, out)
                    }
                }
            }

            (State::Granting(grant), Input::DeadlineReached) => {
                self.on_grant_deadline(now, grant, out)
            }
            (
                State::Stopping {
                    reason,
                    kill_at: Some(at),
                    give_up_at,
                },
                Input::DeadlineReached,
            ) if now >= at => {
                let _ = give_up_at;
                out.push(Effect::Log {
                    message: format!(
                        "target {} still running {} ms after {}: sending SIGKILL to its whole tree",
                        self.config.target_pid,
                        self.config.stop_grace_ms,
                        signal_name(self.config.stop_signal)
                    ),
                });
                out.push(Effect::StopTree { signal: SIGKILL });
                State::Stopping {
                    reason,
                    kill_at: None,
                    give_up_at: now + KILL_WAIT_MS,
                }
            }
            (
                State::Stopping {
                    reason,
                    kill_at: None,
                    give_up_at,
                },
                Input::DeadlineReached,
            ) if now >= give_up_at => {
                out.push(Effect::Log {
                    message: format!(
                        "target {} did not exit after SIGKILL; giving up on it",
                        self.config.target_pid
                    ),
                });
                self.terminate(reason.exit(), out)
            }
            // A deadline that came early (the driver's timer is coarse): nothing is due.
            (state @ State::Stopping { .. }, Input::DeadlineReached) => state,
            (State::Attached(holder), Input::DeadlineReached) if now >= holder.expires_at => {
                self.begin_revoke(now, holder, RevokeReason::Expired, false, out)
            }
            // Early: nothing is due yet.
            (state @ State::Attached(_), Input::DeadlineReached) => state,
            (state @ (State::Idle | State::Terminated { .. }), input @ Input::DeadlineReached) => {
                misuse(state, &input, out)
            }

            (State::Attached(holder), Input::ClientExited { pid }) if holder.client == pid => {
                self.begin_revoke(now, holder, RevokeReason::ClientExited, false, out)
            }
            // A client that no longer holds the grant (it was replaced, taken back, or the
            // controller is stopping): nothing to take back.
            (
                state @ (State::Idle
                | State::Granting(_)
                | State::Attached(_)
                | State::Stopping { .. }
                | State::Terminated { .. }),
                Input::ClientExited { .. },
            ) => state,
        }
    }

    fn on_line(
        &mut self,
        now: Millis,
        state: State,
        frame: Frame,
        origin: Origin,
        out: &mut Vec<Effect>,
    ) -> State {
        let to = origin.reply_to();
        // The socket is 0600 in a 0700 directory, so only our uid (or root) can connect;
        // checked all the same: the kernel's word on the peer is what makes the socket
        // trustworthy, and another user must not even stop the target.
        if let Origin::Socket { pid, uid, .. } = origin {
            if uid != self.config.uid {
                reply(
                    out,
                    to,
                    Reply::Error(format!(
                        "the socket serves uid {} only; pid {pid} runs as uid {uid}",
                        self.config.uid
                    )),
                );
                return state;
            }
        }
        let text = match frame {
            // An empty FIFO line carries no request: answering it would give a reply
            // nobody waits for, which the next client would read as its own. A socket
            // connection waits for exactly one reply, so it is told.
            Frame::Text { text, .. } if text.is_empty() || text == "\r" => {
                if !origin.is_fifo() {
                    reply(
                        out,
                        to,
                        Reply::Error("empty line: a connection carries one command".into()),
                    );
                }
                return state;
            }
            Frame::Text { text, .. } => text,
            Frame::NotUtf8 { len } => {
                reply(
                    out,
                    to,
                    Reply::Error(format!("line of {len} bytes is not valid UTF-8")),
                );
                return state;
            }
            Frame::Oversized { len } => {
                reply(
                    out,
                    to,
                    Reply::Error(format!(
                        "line of {len} bytes is too long (at most {} bytes)",
                        super::wire::MAX_LINE
                    )),
                );
                return state;
            }
        };
        let command = match parse_command(&text) {
            Ok(command) => command,
            Err(e) => {
                reply(out, to, Reply::Error(e.to_string()));
                return state;
            }
        };
        match (state, command) {
            (state @ State::Stopping { .. }, _) => {
                reply(
                    out,
                    to,
                    Reply::Error("the controller is shutting down".into()),
                );
                state
            }
            (state @ State::Terminated { .. }, _) => {
                reply(
                    out,
                    to,
                    Reply::Error(format!(
                        "target process {} is not running",
                        self.config.target_pid
                    )),
                );
                state
            }
            (state, Command::GetTargetPid) => {
                reply(out, to, Reply::TargetPid(self.config.target_pid));
                state
            }
            (state, Command::Terminate) => {
                // The legacy dialect never answers terminate on the FIFO (0.x clients do
                // not read it, so the next client would); a socket connection waits for
                // its one reply in either dialect.
                if self.config.dialect == Dialect::Seed || !origin.is_fifo() {
                    reply(out, to, Reply::Ready);
                }
                out.push(Effect::Log {
                    message: format!(
                        "TERMINATE requested{}: stopping target {}",
                        asked_by(origin),
                        self.config.target_pid
                    ),
                });
                self.begin_stop(now, state, StopReason::Requested, true, out)
            }
            (state, Command::GrantAccess { pid, process, wait }) => {
                self.begin_grant(now, state, pid, process, wait, origin, out)
            }
            (state, Command::Ps) => self.begin_survey(state, Question::Processes, to, out),
            (state, Command::Stack { which }) => {
                self.begin_survey(state, Question::Stacks(which), to, out)
            }
            (state, Command::Tasks { pid }) => {
                self.begin_survey(state, Question::Tasks(pid), to, out)
            }
            (State::Attached(holder), Command::RevokeAccess { pid }) if holder.client == pid => {
                // Answered at once: the client has detached and need not wait for a target
                // that may be slow to run the revocation; lines that come meanwhile wait
                // behind it as behind any grant, and its outcome is logged.
                reply(out, to, Reply::Ready);
                self.begin_revoke(now, holder, RevokeReason::Detached, true, out)
            }
            (state, Command::RevokeAccess { pid }) => {
                let holder = match &state {
                    State::Attached(holder) => format!(" (pid {} does)", holder.client),
                    State::Idle
                    | State::Granting(_)
                    | State::Stopping { .. }
                    | State::Terminated { .. } => String::new(),
                };
                reply(
                    out,
                    to,
                    Reply::Error(format!("pid {pid} holds no grant{holder}")),
                );
                state
            }
        }
    }

    fn begin_survey(
        &mut self,
        state: State,
        question: Question,
        to: ReplyTo,
        out: &mut Vec<Effect>,
    ) -> State {
        debug_assert!(self.survey.is_none(), "a survey began while one was out");
        out.push(Effect::ListTree);
        self.survey = Some(Survey {
            question,
            to,
            step: SurveyStep::Listing,
        });
        state
    }

    /// A survey's answer: the next reading, or the reply.
    fn on_survey_fact(&mut self, state: State, input: Input, out: &mut Vec<Effect>) -> State {
        let Some(survey) = self.survey.take() else {
            return misuse(state, &input, out);
        };
        let target = self.config.target_pid;
        let (question, to) = (survey.question, survey.to);
        let outside = |pid: u32| {
            Reply::Error(format!(
                "pid {pid} is not in the supervised tree (target {target}): only the target and its descendants can be asked about"
            ))
        };
        let reading = |step| Survey { question, to, step };
        let next = match (survey.step, input) {
            (SurveyStep::Listing, Input::TreeListed { listing }) => match question {
                Question::Processes => {
                    let pids = listing.python_pids();
                    if pids.is_empty() {
                        Err(Reply::Processes(ps_json(ps_report(target, &listing, &[]))))
                    } else {
                        out.push(Effect::ReadStacks { pids });
                        Ok(reading(SurveyStep::ReadingStacks(listing)))
                    }
                }
                Question::Stacks(StackTarget::All) => {
                    let pids = listing.python_pids();
                    if pids.is_empty() {
                        Err(Reply::Error(format!(
                            "no Python process in the supervised tree (target {target}) could be read"
                        )))
                    } else {
                        out.push(Effect::ReadStacks { pids });
                        Ok(reading(SurveyStep::ReadingStacks(listing)))
                    }
                }
                Question::Stacks(StackTarget::Pid(pid)) | Question::Tasks(pid) => {
                    match listing.get(pid).filter(|_| listing.contains(pid)) {
                        None => Err(outside(pid)),
                        Some(facts) => match (&facts.interpreter, question) {
                            (super::tree::Interpreter::NotPython, _) => Err(Reply::Error(format!(
                                "pid {pid} ({}) is not a Python process",
                                facts.cmdline.first().map_or("?", String::as_str)
                            ))),
                            (super::tree::Interpreter::Unknown { why }, _) => Err(Reply::Error(
                                format!("the Python runtime of pid {pid} cannot be read: {why}"),
                            )),
                            (super::tree::Interpreter::Python { .. }, Question::Tasks(_)) => {
                                out.push(Effect::ReadTasks { pid });
                                Ok(reading(SurveyStep::ReadingTasks))
                            }
                            (
                                super::tree::Interpreter::Python { .. },
                                Question::Stacks(_) | Question::Processes,
                            ) => {
                                out.push(Effect::ReadStacks { pids: vec![pid] });
                                Ok(reading(SurveyStep::ReadingStacks(listing)))
                            }
                        },
                    }
                }
            },
            (SurveyStep::ReadingStacks(listing), Input::StacksRead { stacks }) => match question {
                Question::Processes => Err(Reply::Processes(ps_json(ps_report(
                    target, &listing, &stacks,
                )))),
                Question::Stacks(_) | Question::Tasks(_) => match stacks.as_slice() {
                    // One process asked for and unreadable: a plain error says it best.
                    [StacksOutcome {
                        pid,
                        outcome: Err(why),
                    }] if question != Question::Stacks(StackTarget::All) => Err(Reply::Error(
                        format!("cannot read the stacks of pid {pid}: {why}"),
                    )),
                    _ => Err(Reply::Stacks(stacks_json(stacks_report(
                        target, &listing, &stacks,
                    )))),
                },
            },
            (SurveyStep::ReadingTasks, Input::TasksRead { pid, outcome }) => match outcome {
                Ok(tasks) => Err(Reply::Tasks(tasks_json(TasksReport {
                    pid,
                    tasks,
                    truncated: false,
                }))),
                Err(why) => Err(Reply::Error(format!(
                    "cannot read the asyncio tasks of pid {pid}: {why}"
                ))),
            },
            (step, input) => {
                self.survey = Some(Survey { question, to, step });
                return misuse(state, &input, out);
            }
        };
        match next {
            Ok(survey) => self.survey = Some(survey),
            Err(answer) => reply(out, to, answer),
        }
        state
    }

    /// A line while a grant is in flight. FIFO lines share one response pipe, so they
    /// are answered in order: they wait behind the grant. A waiting grant (`WAIT`) may
    /// last as long as its asker wants, so while it runs the lines that need no grant are
    /// answered at once (a socket reply is private, and a FIFO line with none queued
    /// before it keeps its order); another grant from the socket is told who waits.
    fn line_while_granting(
        &mut self,
        now: Millis,
        grant: Grant,
        frame: Frame,
        origin: Origin,
        out: &mut Vec<Effect>,
    ) -> State {
        let command = match &frame {
            Frame::Text { text, .. } => parse_command(text).ok(),
            Frame::NotUtf8 { .. } | Frame::Oversized { .. } => None,
        };
        let waits_for_long = grant.deadline.is_none();
        match command {
            _ if !waits_for_long || !self.queued.is_empty() => {
                self.queued.push_back((frame, origin));
                State::Granting(grant)
            }
            Some(Command::GrantAccess { .. }) if origin.is_fifo() => {
                self.queued.push_back((frame, origin));
                State::Granting(grant)
            }
            Some(Command::GrantAccess { .. }) => {
                let since = self.moment(now, grant.asked_at);
                reply(
                    out,
                    origin.reply_to(),
                    Reply::Error(format!(
                        "another attach is waiting for pid {} (client pid {}, since {since}); try again when it is done",
                        grant.process, grant.client
                    )),
                );
                State::Granting(grant)
            }
            Some(
                Command::GetTargetPid
                | Command::Terminate
                | Command::RevokeAccess { .. }
                | Command::Ps
                | Command::Stack { .. }
                | Command::Tasks { .. },
            )
            | None => self.on_line(now, State::Granting(grant), frame, origin, out),
        }
    }

    /// "10:42:07 (2m ago)", or "2m ago" without a wall clock (old journals).
    fn moment(&self, now: Millis, at: Millis) -> String {
        let age = human_age(now.saturating_sub(at));
        match self.config.clock {
            Some(clock) => format!("{} ({age} ago)", clock.local_time(at)),
            None => format!("{age} ago"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_grant(
        &mut self,
        now: Millis,
        state: State,
        client: u32,
        process: Option<u32>,
        wait: bool,
        origin: Origin,
        out: &mut Vec<Effect>,
    ) -> State {
        let target = self.config.target_pid;
        let process = process.unwrap_or(target);
        let refuse =
            |out: &mut Vec<Effect>, why: String| reply(out, origin.reply_to(), Reply::Error(why));
        if client == 1 {
            refuse(
                out,
                "pid 1 is init: it is never declared the target's ptracer".into(),
            );
            return state;
        }
        if client == target {
            refuse(out, format!("pid {client} is the target itself"));
            return state;
        }
        if client == process {
            refuse(
                out,
                format!("pid {client} is the process it asks access to"),
            );
            return state;
        }
        if wait && origin.is_fifo() {
            refuse(out, "WAIT needs the control socket: progress lines on the shared response pipe would reach other clients".into());
            return state;
        }
        let previous = match state {
            State::Attached(holder) => Some(holder),
            State::Idle
            | State::Granting(_)
            | State::Stopping { .. }
            | State::Terminated { .. } => None,
        };
        if let Some(holder) = previous {
            // One grant at a time, and a session open is not taken over: a second
            // client would find pdb refused or, worse, take the declaration away from a
            // session in use. The seed's FIFO clients never give their grant back, so
            // theirs is replaced, as the seed does.
            let other_client = holder.asker.is_some_and(|holder_asker| {
                holder.client != client && origin.asker() != Some(holder_asker)
            });
            if other_client || holder.process != process {
                let to = if holder.process == target {
                    String::new()
                } else {
                    format!(" to pid {}", holder.process)
                };
                refuse(
                    out,
                    format!(
                        "a debugger session is already attached{to} (client pid {}, since {}); it ends when that client detaches or exits",
                        holder.client,
                        self.moment(now, holder.since)
                    ),
                );
                return State::Attached(holder);
            }
        }
        let id = self.next_grant;
        self.next_grant += 1;
        let step = if process == target {
            out.push(Effect::InspectClient {
                pid: client,
                asker: origin.asker(),
            });
            GrantStep::Inspecting
        } else {
            out.push(Effect::InspectProcess { pid: process });
            GrantStep::InspectingProcess
        };
        State::Granting(Grant {
            id,
            client,
            process,
            origin,
            asked_at: now,
            deadline: (!wait).then_some(now + self.config.grant_timeout_ms),
            next_progress: wait.then_some(now + FIRST_PROGRESS_MS),
            cancelled: false,
            previous,
            step,
            purpose: Purpose::Declare,
        })
    }

    /// Whether the named process belongs to the tree: the target, or a process whose
    /// parent chain reaches the target or the keeper (which inherits the tree's orphans).
    fn on_process_inspected(
        &mut self,
        now: Millis,
        mut grant: Grant,
        facts: ProcessFacts,
        out: &mut Vec<Effect>,
    ) -> State {
        let (pid, target) = (grant.process, self.config.target_pid);
        let in_tree = match &facts {
            ProcessFacts::NotRunning => {
                return self.finish_grant(
                    now,
                    grant,
                    Err(format!("pid {pid} is not a running process")),
                    out,
                )
            }
            ProcessFacts::Running { ancestry } => {
                Some(pid) != self.config.keeper_pid
                    && ancestry
                        .iter()
                        .any(|&a| a == target || Some(a) == self.config.keeper_pid)
            }
        };
        if !in_tree {
            return self.finish_grant(
                now,
                grant,
                Err(format!(
                    "pid {pid} is not in the supervised tree (target {target}; heli-client ps lists it)"
                )),
                out,
            );
        }
        out.push(Effect::InspectClient {
            pid: grant.client,
            asker: grant.origin.asker(),
        });
        grant.step = GrantStep::Inspecting;
        State::Granting(grant)
    }

    /// The asker of the grant in flight hung up: the request is taken back so that it
    /// never runs later; if the target took it already, its declaration is taken back as
    /// soon as it reports.
    fn on_asker_gone(&mut self, now: Millis, mut grant: Grant, out: &mut Vec<Effect>) -> State {
        let said = Effect::Log {
            message: format!(
                "grant for pid {} cancelled after {} ms: the client hung up",
                grant.client,
                now - grant.asked_at
            ),
        };
        if let GrantStep::Delivering(delivery) = &grant.step {
            if let DeliveryStatus::PickedUp { .. } = delivery.status() {
                out.push(said);
                grant.cancelled = true;
                grant.next_progress = None;
                return State::Granting(grant);
            }
        }
        // Said once the withdrawal is under way, so that the log line means "no longer
        // waiting in the target" to whoever reads it.
        self.abandon_grant(grant.clone(), "", out);
        out.push(said);
        self.back_to(grant.previous)
    }

    /// Takes back the grant `holder` has: its process declares nobody.
    fn begin_revoke(
        &mut self,
        now: Millis,
        holder: Holder,
        reason: RevokeReason,
        requested: bool,
        out: &mut Vec<Effect>,
    ) -> State {
        let id = self.next_grant;
        self.next_grant += 1;
        let deadline = now + self.config.grant_timeout_ms;
        let (delivery, action) = Delivery::start(self.config.delivery, deadline);
        self.aim(id, holder.process, out);
        out.push(Effect::Deliver {
            grant: id,
            client: 0,
            action,
        });
        State::Granting(Grant {
            id,
            client: holder.client,
            process: holder.process,
            // No reply is owed at its end (a REVOKE_ACCESS was answered when it began), so
            // where it came from does not matter here.
            origin: Origin::Fifo,
            asked_at: now,
            deadline: Some(deadline),
            next_progress: None,
            cancelled: false,
            previous: Some(holder),
            step: GrantStep::Delivering(delivery),
            purpose: Purpose::Revoke { reason, requested },
        })
    }

    /// A grant for another process than the target: the edge is told once where it goes.
    fn aim(&self, grant: GrantId, process: u32, out: &mut Vec<Effect>) {
        if process != self.config.target_pid {
            out.push(Effect::AimGrant { grant, process });
        }
    }

    fn attached(&self, now: Millis, grant: &Grant) -> State {
        State::Attached(Holder {
            client: grant.client,
            process: grant.process,
            since: now,
            expires_at: now + self.config.grant_expiry_ms,
            asker: grant.origin.asker(),
        })
    }

    fn back_to(&self, previous: Option<Holder>) -> State {
        match previous {
            Some(holder) => State::Attached(holder),
            None => State::Idle,
        }
    }

    fn on_client_inspected(
        &mut self,
        now: Millis,
        mut grant: Grant,
        facts: ClientFacts,
        out: &mut Vec<Effect>,
    ) -> State {
        let (uid, pid) = (self.config.uid, grant.client);
        let (privilege, kinship) = match facts {
            ClientFacts::NotRunning => {
                return self.finish_grant(now, grant, Err(format!("pid {pid} is not a running process")), out)
            }
            ClientFacts::Running { uid: other, .. } if other != uid => {
                return self.finish_grant(now, grant, Err(format!(
                    "pid {pid} belongs to uid {other}, not to uid {uid} of the target: Yama never lets another user attach"
                )), out)
            }
            ClientFacts::Running { privilege, kinship, .. } => (privilege, kinship),
        };
        // Over the socket the asker is known: it may hand debugging rights only to itself
        // or to a process it started (the pdb it runs), never to a stranger.
        if let Some(asker) = grant.origin.asker() {
            let refusal = match kinship {
                Some(Kinship::Asker | Kinship::Descendant) => None,
                Some(Kinship::Unrelated) => Some(format!(
                    "pid {pid} is neither the asker (pid {asker}) nor one of its descendants: over the socket a client may ask access only for itself or a process it started"
                )),
                None => {
                    debug_assert!(false, "driver misuse: no kinship reported for socket grant of pid {pid}");
                    Some(format!("the ancestry of pid {pid} was not inspected; refusing"))
                }
            };
            if let Some(why) = refusal {
                return self.finish_grant(now, grant, Err(why), out);
            }
        }
        match attach_rule(self.config.yama, privilege) {
            AttachRule::Forbidden(why) => self.finish_grant(now, grant, Err(why), out),
            AttachRule::NoGrantNeeded(why) => {
                out.push(Effect::Log {
                    message: format!("pid {pid} needs no grant: {why}"),
                });
                reply(out, grant.origin.reply_to(), Reply::Ready);
                // Nothing was declared: whoever held the grant keeps it.
                self.back_to(grant.previous)
            }
            AttachRule::Grant => match self.config.grant_injection {
                GrantInjection::SkippedForDiagnostics => {
                    out.push(Effect::Log {
                        message: format!("grant {} for pid {pid} NOT injected (HELI_DISABLE_GRANT=1, diagnostics only)", grant.id),
                    });
                    self.finish_grant(now, grant, Ok("answered READY without a grant".into()), out)
                }
                GrantInjection::Injected => {
                    let deadline = grant.deadline.unwrap_or(Millis::MAX);
                    let (delivery, action) = Delivery::start(self.config.delivery, deadline);
                    self.aim(grant.id, grant.process, out);
                    out.push(Effect::Deliver {
                        grant: grant.id,
                        client: pid,
                        action,
                    });
                    grant.step = GrantStep::Delivering(delivery);
                    State::Granting(grant)
                }
            },
        }
    }

    fn on_delivery_fact(
        &mut self,
        now: Millis,
        mut grant: Grant,
        fact: DeliveryFact,
        out: &mut Vec<Effect>,
    ) -> State {
        let declared = grant.declared();
        let GrantStep::Delivering(delivery) = &mut grant.step else {
            debug_assert!(false, "delivery fact {fact:?} while inspecting");
            return State::Granting(grant);
        };
        if let Some(action) = delivery.handle(now, fact) {
            out.push(Effect::Deliver {
                grant: grant.id,
                client: declared,
                action,
            });
        }
        match delivery.status() {
            DeliveryStatus::Failed => {
                let message = match delivery.last_failure() {
                    // Said as the seed's second-session case is: someone is at a debugger
                    // prompt of this process already, here its own.
                    Some(InjectFailure::HeldByDebugger { tid, at, .. }) => format!(
                        "a debugger session is already attached to pid {}: its own (breakpoint() at {}:{} in {}, thread {tid}), waiting for an answer on its stdin; answer or continue it there, then attach",
                        grant.process,
                        at.filename,
                        at.line.map_or("?".to_string(), |l| l.to_string()),
                        at.function
                    ),
                    Some(failure) => format!(
                        "cannot inject the grant into the target: {}",
                        failure.detail()
                    ),
                    None => "cannot inject the grant into the target: unknown failure".into(),
                };
                out.push(Effect::ForgetGrant { grant: grant.id });
                self.finish_grant(now, grant, Err(message), out)
            }
            DeliveryStatus::InFlight
            | DeliveryStatus::PickedUp { .. }
            | DeliveryStatus::Withdrawn => State::Granting(grant),
        }
    }

    fn on_grant_deadline(&mut self, now: Millis, mut grant: Grant, out: &mut Vec<Effect>) -> State {
        let timeout = self.config.grant_timeout_ms;
        if grant.next_progress.is_some_and(|at| now >= at) {
            grant.next_progress = Some(now + PROGRESS_EVERY_MS);
            let text = self.progress(now, &grant);
            reply(out, grant.origin.reply_to(), Reply::Waiting(text));
        }
        if grant.deadline.map_or(true, |deadline| now < deadline) {
            if let GrantStep::Delivering(delivery) = &mut grant.step {
                if let Some(action) = delivery.on_deadline(now) {
                    out.push(Effect::Deliver {
                        grant: grant.id,
                        client: grant.declared(),
                        action,
                    });
                }
            }
            return State::Granting(grant);
        }
        let message = match &grant.step {
            GrantStep::Inspecting => format!("timed out after {timeout} ms inspecting pid {}", grant.client),
            GrantStep::InspectingProcess => format!("timed out after {timeout} ms inspecting pid {}", grant.process),
            GrantStep::Delivering(d) => match (d.status(), d.last_failure(), d.threads_seen()) {
                (DeliveryStatus::PickedUp { tid }, _, _) => format!(
                    "timed out after {timeout} ms: thread {tid} of the target took the grant but never reported back"
                ),
                (_, Some(failure), None) => format!(
                    "timed out after {timeout} ms: cannot inject the grant into the target: {}",
                    failure.detail()
                ),
                (_, _, threads) => match threads.and_then(|t| held_by_debugger(t).map(|h| (t, h))) {
                    Some((threads, held)) => format!(
                        "timed out after {timeout} ms: the target's {held} (threads: {}); answer it there, or continue it, and try again",
                        describe_threads(threads)
                    ),
                    None => {
                        let seen = threads.map_or(String::new(), |t| format!(" (threads: {})", describe_threads(t)));
                        format!(
                            "timed out after {timeout} ms: the target ran no Python code{seen}; it may be blocked in a C call, a long sleep or I/O; try again when it is busy"
                        )
                    }
                },
            },
        };
        self.abandon_grant(grant.clone(), "", out);
        self.finish_grant(now, grant, Err(message), out)
    }

    /// The text of a `WAITING` line: the milliseconds since the request, then what the
    /// grant waits for, in words.
    fn progress(&self, now: Millis, grant: &Grant) -> String {
        let elapsed = now - grant.asked_at;
        let pid = grant.process;
        let what = match &grant.step {
            GrantStep::InspectingProcess => format!("inspecting pid {pid}"),
            GrantStep::Inspecting => format!("inspecting pid {}", grant.client),
            GrantStep::Delivering(d) => match (d.status(), d.last_failure(), d.threads_seen()) {
                (DeliveryStatus::PickedUp { tid }, _, _) => {
                    format!("thread {tid} of pid {pid} took the grant; waiting for its report")
                }
                (_, Some(failure), None) => {
                    format!("cannot inject into pid {pid} yet: {}", failure.detail())
                }
                (_, _, Some(threads)) => match held_by_debugger(threads) {
                    Some(held) => format!(
                        "pid {pid} ran no Python code yet: its {held} (threads: {})",
                        describe_threads(threads)
                    ),
                    None => format!(
                        "pid {pid} ran no Python code yet (threads: {})",
                        describe_threads(threads)
                    ),
                },
                (_, _, None) => format!("pid {pid} ran no Python code yet"),
            },
        };
        format!("{elapsed} {what}")
    }

    /// Takes back a request still waiting in the target, so it can never run later.
    fn abandon_grant(&mut self, mut grant: Grant, why: &str, out: &mut Vec<Effect>) {
        if let GrantStep::Delivering(delivery) = &mut grant.step {
            match delivery.give_up() {
                Some(action) => out.push(Effect::Deliver {
                    grant: grant.id,
                    client: grant.declared(),
                    action,
                }),
                None => out.push(Effect::ForgetGrant { grant: grant.id }),
            }
        }
        if !why.is_empty() {
            out.push(Effect::Log {
                message: format!("grant for pid {} abandoned: {why}", grant.client),
            });
        }
    }

    fn grant_outcome(&self, client: u32, errno: i32) -> Result<String, String> {
        match (errno, self.config.yama) {
            (0, _) => Ok(format!("granted ptrace access to pid {client}")),
            (EINVAL, Yama::Absent) => Ok(format!(
                "pid {client} may attach: Yama is not active (prctl gave EINVAL), classic ptrace rules apply"
            )),
            (EINVAL, Yama::Scope(_)) => Err(format!(
                "the target's prctl(PR_SET_PTRACER, {client}) failed with EINVAL: has pid {client} exited?"
            )),
            (errno, _) => Err(format!(
                "the target's prctl(PR_SET_PTRACER, {client}) failed with errno {errno}"
            )),
        }
    }

    /// Ends the grant in flight: READY or `ERROR:` to whoever asked, and the new state.
    fn finish_grant(
        &mut self,
        now: Millis,
        grant: Grant,
        outcome: Result<String, String>,
        out: &mut Vec<Effect>,
    ) -> State {
        match (grant.purpose, outcome) {
            (Purpose::Declare, Ok(message)) if grant.cancelled => {
                out.push(Effect::Log {
                    message: format!("{message}, but its client hung up: taking it back"),
                });
                let holder = Holder {
                    client: grant.client,
                    process: grant.process,
                    since: now,
                    expires_at: now,
                    asker: grant.origin.asker(),
                };
                self.begin_revoke(now, holder, RevokeReason::Cancelled, false, out)
            }
            (Purpose::Declare, Err(message)) if grant.cancelled => {
                out.push(Effect::Log {
                    message: format!("cancelled grant for pid {} failed: {message}", grant.client),
                });
                self.back_to(grant.previous)
            }
            (Purpose::Declare, Ok(message)) => {
                out.push(Effect::Log {
                    message: match asker_note(grant.origin) {
                        None => format!("{message} ({} ms)", now - grant.asked_at),
                        Some(note) => format!("{message} ({} ms, {note})", now - grant.asked_at),
                    },
                });
                // Only one ptracer can be declared per process: this one replaces it.
                if let Some(before) = grant
                    .previous
                    .map(|holder| holder.client)
                    .filter(|before| *before != grant.client)
                {
                    out.push(Effect::Log {
                        message: format!(
                            "pid {} replaces pid {before} as the target's declared ptracer",
                            grant.client
                        ),
                    });
                }
                reply(out, grant.origin.reply_to(), Reply::Ready);
                out.push(Effect::WatchClient { pid: grant.client });
                self.attached(now, &grant)
            }
            (Purpose::Declare, Err(message)) => {
                out.push(Effect::Log {
                    message: format!(
                        "grant for pid {} refused{}: {message}",
                        grant.client,
                        asked_by(grant.origin)
                    ),
                });
                reply(out, grant.origin.reply_to(), Reply::Error(message));
                self.back_to(grant.previous)
            }
            (Purpose::Revoke { reason, .. }, Ok(_)) => {
                out.push(Effect::Log {
                    message: format!(
                        "took back the grant of pid {}: {reason} ({} ms)",
                        grant.client,
                        now - grant.asked_at
                    ),
                });
                State::Idle
            }
            (Purpose::Revoke { reason, .. }, Err(message)) => {
                out.push(Effect::Log {
                    message: format!(
                        "could not take back the grant of pid {} ({reason}): {message}",
                        grant.client
                    ),
                });
                if grant.process != self.config.target_pid {
                    // Not the target: a worker that exited cannot be written into; one
                    // that still runs keeps the declaration, said above. Either way no
                    // session is open any more, so the tree is free for the next.
                    return State::Idle;
                }
                // Still declared: tried again when it expires next.
                self.attached(now, &grant)
            }
        }
    }

    fn begin_stop(
        &mut self,
        now: Millis,
        state: State,
        reason: StopReason,
        signal_target: bool,
        out: &mut Vec<Effect>,
    ) -> State {
        if let State::Granting(grant) = state {
            let (to, owed) = (grant.origin.reply_to(), grant.reply_owed());
            self.abandon_grant(grant, "shutting down", out);
            if owed {
                reply(
                    out,
                    to,
                    Reply::Error("the controller is shutting down".into()),
                );
            }
        }
        if signal_target {
            out.push(Effect::SignalTarget {
                signal: self.config.stop_signal,
            });
        }
        State::Stopping {
            reason,
            kill_at: Some(now + self.config.stop_grace_ms),
            give_up_at: now + self.config.stop_grace_ms + KILL_WAIT_MS,
        }
    }

    fn log_target_exit(&self, status: ExitStatus, out: &mut Vec<Effect>) {
        out.push(Effect::Log {
            message: format!("target {} {status}", self.config.target_pid),
        });
    }

    fn terminate(&mut self, exit: ControllerExit, out: &mut Vec<Effect>) -> State {
        let target = self.config.target_pid;
        if let Some(survey) = self.survey.take() {
            reply(
                out,
                survey.to,
                Reply::Error(format!("target process {target} is not running")),
            );
        }
        // Blank FIFO lines get no reply anywhere (see `on_line`), and not here either: the
        // next client would read it as its own.
        for (frame, origin) in self.queued.drain(..) {
            let blank =
                matches!(&frame, Frame::Text { text, .. } if text.is_empty() || text == "\r");
            if blank && origin == Origin::Fifo {
                continue;
            }
            reply(
                out,
                origin.reply_to(),
                Reply::Error(format!("target process {target} is not running")),
            );
        }
        out.push(Effect::RemovePipes);
        out.push(Effect::Exit { code: exit.code() });
        State::Terminated { exit }
    }
}

fn reply(out: &mut Vec<Effect>, to: ReplyTo, reply: Reply) {
    out.push(Effect::Reply { reply, to });
}

/// " (asked by pid P, uid U)" for a socket request, nothing for the anonymous FIFO: the
/// log says who asked whenever the kernel told us.
fn asked_by(origin: Origin) -> String {
    asker_note(origin).map_or(String::new(), |note| format!(" ({note})"))
}

fn asker_note(origin: Origin) -> Option<String> {
    match origin {
        Origin::Fifo => None,
        Origin::Socket { pid, uid, .. } => Some(format!("asked by pid {pid}, uid {uid}")),
    }
}

/// An input that cannot come in this state unless the driver broke its contract: a bug,
/// loud in debug builds; in release the input is logged and changes nothing.
fn misuse(state: State, input: &Input, out: &mut Vec<Effect>) -> State {
    debug_assert!(false, "driver misuse: input {input:?} in state {state:?}");
    out.push(Effect::Log {
        message: format!("ignored an input the controller cannot take now: {input}"),
    });
    state
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::LineReceived { frame, origin } => {
                match frame {
                    Frame::Text { text, terminated } => {
                        let eof = if *terminated {
                            ""
                        } else {
                            " (no newline, at EOF)"
                        };
                        write!(f, "line {text:?}{eof}")?;
                    }
                    Frame::NotUtf8 { len } => write!(f, "line of {len} bytes, not UTF-8")?,
                    Frame::Oversized { len } => write!(f, "line of {len} bytes, too long")?,
                }
                match origin {
                    Origin::Fifo => Ok(()),
                    Origin::Socket { conn, pid, uid } => {
                        write!(f, " on connection {conn} from pid {pid}, uid {uid}")
                    }
                }
            }
            Input::ClientInspected {
                pid,
                facts: ClientFacts::NotRunning,
            } => write!(f, "client {pid} is not running"),
            Input::ClientInspected {
                pid,
                facts:
                    ClientFacts::Running {
                        uid,
                        exe,
                        privilege,
                        kinship,
                    },
            } => {
                write!(f, "client {pid} runs as uid {uid}")?;
                if let Some(exe) = exe {
                    write!(f, " ({exe})")?;
                }
                if *privilege == TracerPrivilege::CapSysPtrace {
                    f.write_str(" with CAP_SYS_PTRACE")?;
                }
                match kinship {
                    None => Ok(()),
                    Some(Kinship::Asker) => f.write_str(", the asker itself"),
                    Some(Kinship::Descendant) => f.write_str(", a descendant of the asker"),
                    Some(Kinship::Unrelated) => {
                        f.write_str(", neither the asker nor its descendant")
                    }
                }
            }
            Input::ProcessInspected {
                pid,
                facts: ProcessFacts::NotRunning,
            } => write!(f, "process {pid} is not running"),
            Input::ProcessInspected {
                pid,
                facts: ProcessFacts::Running { ancestry },
            } => {
                let chain: Vec<String> = ancestry.iter().map(u32::to_string).collect();
                write!(f, "process {pid} runs, parents {}", chain.join(" < "))
            }
            Input::ConnectionClosed { conn } => {
                write!(f, "connection {conn} closed before its reply")
            }
            Input::Delivery { grant, fact } => write!(f, "grant {grant} {fact}"),
            Input::GrantRan { grant, errno } => write!(f, "grant {grant} ran, prctl errno {errno}"),
            Input::TargetExited { status } => write!(f, "target {status}"),
            Input::SignalReceived { signal, by_kernel } => {
                write!(f, "signal {}", signal_name(signal.number()))?;
                if *by_kernel {
                    f.write_str(" (from the kernel: a terminal)")?;
                }
                Ok(())
            }
            Input::TreeListed { listing } => {
                write!(f, "tree below {} listed:", listing.root)?;
                for p in &listing.processes {
                    write!(f, " {}", p.pid)?;
                }
                if listing.truncated {
                    f.write_str(" (truncated)")?;
                }
                Ok(())
            }
            Input::StacksRead { stacks } => {
                f.write_str("stacks read:")?;
                for read in stacks {
                    match &read.outcome {
                        Ok(s) => write!(f, " {} ({} threads)", read.pid, s.threads.len())?,
                        Err(why) => write!(f, " {} (failed: {why})", read.pid)?,
                    }
                }
                Ok(())
            }
            Input::TasksRead { pid, outcome } => match outcome {
                Ok(tasks) => write!(f, "asyncio tasks of {pid} read: {}", tasks.len()),
                Err(why) => write!(f, "asyncio tasks of {pid} not read: {why}"),
            },
            Input::AdaptersGone => f.write_str("every adapter thread has stopped"),
            Input::ClientExited { pid } => write!(f, "client {pid} exited"),
            Input::DeadlineReached => f.write_str("deadline reached"),
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Reply {
                reply,
                to: ReplyTo::Fifo,
            } => write!(f, "reply {reply}"),
            Effect::Reply {
                reply,
                to: ReplyTo::Socket { conn },
            } => write!(f, "reply on connection {conn}: {reply}"),
            Effect::InspectClient { pid, asker: None } => write!(f, "inspect pid {pid}"),
            Effect::InspectClient {
                pid,
                asker: Some(asker),
            } => write!(f, "inspect pid {pid} and its kinship to asker {asker}"),
            Effect::Deliver {
                grant,
                client,
                action,
            } => write!(f, "grant {grant} for pid {client}: {action}"),
            Effect::ForgetGrant { grant } => write!(f, "forget grant {grant}"),
            Effect::InspectProcess { pid } => write!(f, "inspect process {pid} and its parents"),
            Effect::AimGrant { grant, process } => {
                write!(f, "grant {grant} goes into process {process}")
            }
            Effect::WatchClient { pid } => write!(f, "watch pid {pid} until it exits"),
            Effect::SignalTarget { signal } => {
                write!(f, "signal target ({})", signal_display(*signal))
            }
            Effect::StopTree { signal } => write!(f, "stop tree ({})", signal_display(*signal)),
            Effect::ListTree => f.write_str("list the supervised tree"),
            Effect::ReadStacks { pids } => write!(f, "read the stacks of {pids:?}"),
            Effect::ReadTasks { pid } => write!(f, "read the asyncio tasks of {pid}"),
            Effect::RemovePipes => f.write_str("remove pipes"),
            Effect::Log { message } => write!(f, "log: {message}"),
            Effect::Exit { code } => write!(f, "exit {code}"),
        }
    }
}
