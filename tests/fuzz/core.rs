//! Fuzz target: the supervisor, driven as the controller drives it, with every choice the
//! driver contract leaves open taken from the fuzz input: the configuration, the bytes on
//! the control pipe and how `read` splits them, requests over the control socket (one
//! line per connection, from a peer of our uid or another), what an inspection finds
//! (with the asker's kinship for a socket request), what each
//! delivery step finds, which grant reports back with which errno, when signals (from
//! `kill` or from the terminal), target exits, client exits and adapter loss happen, and
//! how late the clock is.
//!
//! The contract itself is kept (the core's debug assertions call anything else a driver
//! bug): `ClientInspected` only answers a pending `InspectClient` of the grant in flight,
//! a `Delivery` fact only answers an `Effect::Deliver` (with a fact that action can
//! produce) or reports the pickup of a request waiting in a thread, `DeadlineReached`
//! only at or after `poll_timeout`, `ClientExited` once per `WatchClient` (and, to show
//! it is ignored, for pids never watched).
//!
//! Checked after every input:
//! - no `Deliver` and no `READY` to a GRANT_ACCESS for pid <= 1, the target, or a pid the
//!   last inspection did not find running as the controller's uid;
//! - a `Deliver` naming pid 0 (the target declares nobody) only as a revocation of the
//!   current holder, begun by that holder's REVOKE_ACCESS, its exit, or its grant's
//!   expiry; each of those begins one; every step of a grant names one pid;
//! - `attached(c)` only after an acknowledgement for a grant to `c` (GrantRan errno 0, or
//!   EINVAL with Yama absent), or from the diagnostic no-injection mode, or as the
//!   previous holder kept (a failed grant, one that needed none, a failed revocation);
//!   an acknowledged revocation leaves nobody attached; a replaced holder is logged;
//! - replies answer lines one for one in arrival order (queued lines included), each
//!   addressed where its line came from and of a kind its line allows: READY to a socket
//!   GRANT_ACCESS only for the asker or its descendant, READY to REVOKE_ACCESS exactly
//!   when its pid holds the grant; blank FIFO lines and legacy TERMINATE on the FIFO are
//!   the lines without a reply; a new holder's exit is watched;
//! - a deadline is pending exactly in granting, attached (the grant's expiry, known to
//!   the millisecond) and stopping; a grant's never lies beyond its timeout;
//! - the stop sends the configured signal to the target once, and not at all when the
//!   terminal already sent it; the tree only ever gets SIGKILL, always after the target
//!   exits; exit is decided once; an exit of a pid that holds nothing changes nothing.
//!
//! At the end the machine is driven to `terminated`: every non-blank line must have had
//! exactly one reply. Finally the recorded inputs go through the journal's JSON and a
//! fresh supervisor, which must decide exactly the same effects (replay determinism).
use super::bytes::Bytes;
use helicopter_parent::core::delivery::{
    DeliveryAction, DeliveryFact, DeliveryTiming, InjectFailure, RequestSeen, ThreadFact,
};
use helicopter_parent::core::journal::Transcribed;
use helicopter_parent::core::ptrace_policy::{attach_rule, AttachRule, TracerPrivilege};
use helicopter_parent::core::supervisor::{
    ClientFacts, Config, Effect, ExitStatus, GrantId, GrantInjection, Input, Kinship, Millis,
    Origin, Phase, ProcessFacts, StopSignal, Supervisor, Yama,
};
use helicopter_parent::core::wire::{
    parse_command, Command, Dialect, Frame, LineFramer, Reply, MAX_LINE, PID_MAX_LIMIT,
};
use std::collections::{BTreeSet, VecDeque};

const EINVAL: i32 = 22;
const SIGKILL: i32 = 9;
/// Bounds one case: long enough for several grants, short enough for millions of cases.
const MAX_STEPS: usize = 400;

/// Counters over a run, to show the cases reach deep states rather than stop early.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub cases: u64,
    pub inputs: u64,
    pub lines: u64,
    pub replies: u64,
    pub grants: u64,
    pub delivers: u64,
    pub readies_for_grants: u64,
    pub attached_entries: u64,
    pub grant_timeouts: u64,
    pub queued_answers: u64,
    pub revocations: u64,
    /// Revocations acknowledged: the target declares nobody, the core is idle.
    pub revocations_done: u64,
    /// Revocations that failed: the holder kept its grant.
    pub revocations_failed: u64,
    pub revoke_readies: u64,
    pub socket_lines: u64,
    /// READY to a GRANT_ACCESS that came over the socket (the asker's kin).
    pub socket_readies: u64,
    pub revoke_errors: u64,
    pub expiries: u64,
    pub holder_exits: u64,
    /// `ClientExited` for a pid that holds nothing (never watched, or replaced).
    pub ignored_exits: u64,
    pub kernel_signals: u64,
    /// Delivery steps of revocations after their first (finding 3: each names pid 0).
    pub later_revocation_steps: u64,
    /// Revocations in flight when a stop began or the target exited (finding 4: no reply).
    pub revocations_cut_short: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.cases += other.cases;
        self.inputs += other.inputs;
        self.lines += other.lines;
        self.replies += other.replies;
        self.grants += other.grants;
        self.delivers += other.delivers;
        self.readies_for_grants += other.readies_for_grants;
        self.attached_entries += other.attached_entries;
        self.grant_timeouts += other.grant_timeouts;
        self.queued_answers += other.queued_answers;
        self.revocations += other.revocations;
        self.revocations_done += other.revocations_done;
        self.revocations_failed += other.revocations_failed;
        self.revoke_readies += other.revoke_readies;
        self.socket_lines += other.socket_lines;
        self.socket_readies += other.socket_readies;
        self.revoke_errors += other.revoke_errors;
        self.expiries += other.expiries;
        self.holder_exits += other.holder_exits;
        self.ignored_exits += other.ignored_exits;
        self.kernel_signals += other.kernel_signals;
        self.later_revocation_steps += other.later_revocation_steps;
        self.revocations_cut_short += other.revocations_cut_short;
    }
}

/// What a line still waiting for its reply allows as an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Command(Command),
    /// Unparsable, not UTF-8, or too long: only `ERROR:` fits.
    Bad,
    /// A blank line that arrived during a grant: it waits in the core's queue and is
    /// dropped without a reply when the queue is worked off or the session ends.
    QueuedBlank,
}

/// The grant in flight, as the driver saw it begin: what its prctl must declare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flight {
    /// GRANT_ACCESS: the target declares this client.
    Declare(u32),
    /// The holder's grant taken back: the target declares nobody (pid 0).
    Revoke(u32),
}

struct Driver {
    sup: Supervisor,
    config: Config,
    now: Millis,
    framer: LineFramer,
    /// Every input fed, for the replay check and for the transcript of a failure.
    record: Vec<(Millis, Input)>,
    effects: Vec<Vec<Effect>>,
    /// Lines in arrival order, not yet answered (FIFO blank ones only while queued), and
    /// where each came from: every reply goes back where its line came from.
    waiting: VecDeque<(Expect, Origin)>,
    /// Socket connections numbered as the edge numbers them.
    next_conn: u64,
    /// Grants and revocations begun so far; the core numbers both 1, 2, ... from one
    /// counter, so this is the id of the one in flight (or of the last one).
    grants: GrantId,
    flight: Option<Flight>,
    grant_asked_at: Millis,
    /// The pid to inspect and, for a socket request, the asker it must be related to.
    pending_inspect: Option<(u32, Option<u32>)>,
    /// The process a `GRANT_ACCESS <pid> <process>` names, to be inspected.
    pending_process: Option<u32>,
    /// Grants that go into another process of the tree than the target.
    aimed: BTreeSet<GrantId>,
    /// When the grant in flight asked about its process (its deadline counts from there).
    process_asked_at: Option<Millis>,
    /// The pid the current grant's inspection found running as our uid.
    inspected_ok: Option<u32>,
    /// The asker of the grant in flight (socket requests only).
    flight_asker: Option<u32>,
    /// The current grant's inspection found the pid to be the asker or its descendant.
    kin_ok: bool,
    pending_deliver: Option<(GrantId, DeliveryAction)>,
    /// Who may be attached: set only by what justifies it.
    holder: Option<u32>,
    /// When the holder's grant expires, computed from the acknowledgements alone.
    expiry: Option<Millis>,
    /// The session is ending (a stop began or the target exited): nobody holds a grant
    /// any more and no revocation may begin.
    ending: bool,
    /// Pids watched (`WatchClient`) whose exit has not been reported yet.
    watched: BTreeSet<u32>,
    ever_watched: BTreeSet<u32>,
    /// Pids whose exit was reported and that were not granted (watched) again since.
    gone: BTreeSet<u32>,
    signalled_target: bool,
    exits: usize,
    /// Within one `handle`: the holder whose revocation this batch must begin.
    revoke_due: Option<u32>,
    /// Within one `handle`: the replacement the core must log, `(new, old)`.
    replace_due: Option<(u32, u32)>,
    /// Within one `handle`: the new holder, whose exit the edge must be asked to report
    /// (else its grant would outlive it until expiry).
    watch_due: Option<u32>,
    stats: Stats,
}

/// What one input must (or may) bring about, decided before the core handles it.
#[derive(Debug, Default)]
struct Batch {
    grants_before: GrantId,
    /// The grant in flight when the input came, if any.
    flight_before: Option<Flight>,
    /// A `ClientExited` for a pid that holds nothing: nothing may change.
    ignored: bool,
    /// How many stop signals the target must get, when the input decides it.
    signals_target: Option<usize>,
    /// The target exited: what it left behind must get SIGKILL.
    kills_tree: bool,
}

fn config(u: &mut Bytes) -> Config {
    let target_pid = u.pick(&[2, 100, 4242, PID_MAX_LIMIT]);
    let uid = u.pick(&[0, 1000]);
    let yama = match u.below(8) {
        0..=1 => Yama::Absent,
        2..=4 => Yama::Scope(1),
        5 => Yama::Scope(0),
        6 => Yama::Scope(2 + u.u8() % 2),
        _ => Yama::Scope(u.u8()),
    };
    let mut config = Config::new(target_pid, uid, yama);
    config.dialect = if u.below(4) == 0 {
        Dialect::Legacy
    } else {
        Dialect::Seed
    };
    config.grant_timeout_ms = u.below(2000) as Millis;
    config.delivery = DeliveryTiming {
        survey_after_ms: u.below(50) as Millis,
        max_survey_backoff_ms: u.below(400) as Millis,
        retry_after_ms: u.below(30) as Millis,
        wake: u.bool(),
    };
    config.stop_grace_ms = u.below(3000) as Millis;
    // SIGINT (the default) and SIGHUP match signals the terminal can send, so the
    // "the target has it already" path is reached; SIGTERM and SIGUSR1 never match one.
    config.stop_signal = u.pick(&[2, 2, 15, 1, 10]);
    // Short expiries, so that grants expire within a case; 0 expires at once.
    config.grant_expiry_ms = u.pick(&[0, 100, 1000, 5000, 60_000, 30 * 60 * 1000]);
    config.grant_injection = if u.below(8) == 0 {
        GrantInjection::SkippedForDiagnostics
    } else {
        GrantInjection::Injected
    };
    config
}

/// Pids a client might name: the edge cases and a few ordinary ones.
fn pid(u: &mut Bytes, config: &Config) -> String {
    match u.below(12) {
        0 => "0".into(),
        1 => "1".into(),
        2 => config.target_pid.to_string(),
        3 => PID_MAX_LIMIT.to_string(),
        4 => (PID_MAX_LIMIT + 1).to_string(),
        5 => u.u32().to_string(),
        6 => "-1".into(),
        7 => "00012".into(),
        n => (1230 + n).to_string(),
    }
}

/// The bytes of one write on the control pipe. `holder` is who holds the grant now (or
/// an ordinary client pid), so that REVOKE_ACCESS often names the one pid it can free.
fn line_bytes(u: &mut Bytes, config: &Config, holder: u32) -> Vec<u8> {
    let mut out: Vec<u8> = match u.below(17) {
        0 => b"GET_TARGET_PID".to_vec(),
        1 => format!("GRANT_ACCESS {}", 1230 + u.below(4)).into_bytes(),
        2..=5 => format!("GRANT_ACCESS {}", pid(u, config)).into_bytes(),
        // TERMINATE ends the session: rare, so that most cases see several grants.
        6 => u
            .pick(&[
                "TERMINATE",
                "GET_TARGET_PID",
                "GET_TARGET_PID",
                "GET_TARGET_PID",
            ])
            .into(),
        7 => u
            .pick(&[
                "",
                "\r",
                "  ",
                "\t",
                "get_target_pid\r",
                "",
                "\r",
                "terminate",
            ])
            .into(),
        8 => format!("grant_access {} {}", pid(u, config), pid(u, config)).into_bytes(),
        9 => u.bytes(24),
        10 => vec![b'G'; MAX_LINE - 1 + u.below(3)],
        11 => b"\xff\xfeGRANT_ACCESS 5".to_vec(),
        12 => u
            .pick(&[
                "HELLO",
                "READY",
                "GRANT_ACCESS",
                "GRANT_ACCESS +7",
                "REVOKE_ACCESS",
                "REVOKE_ACCESS 1 2",
            ])
            .into(),
        13 => format!("  Grant_Access\t{}  ", pid(u, config)).into_bytes(),
        // The holder giving its grant back (as our client does after pdb detaches)...
        14 => format!("REVOKE_ACCESS {holder}").into_bytes(),
        15 => format!("revoke_access {holder}\r").into_bytes(),
        // ...and anyone else asking to.
        _ => format!("REVOKE_ACCESS {}", pid(u, config)).into_bytes(),
    };
    // Mostly whole lines; sometimes a partial one that the next write completes.
    if u.below(8) != 0 {
        out.push(b'\n');
    }
    out
}

fn failure(u: &mut Bytes) -> InjectFailure {
    let detail = "fuzz".to_string();
    match u.below(5) {
        0 => InjectFailure::NotReady { detail },
        1 => InjectFailure::RemoteDebugOff {
            opted_out: u.bool(),
            detail,
        },
        2 => InjectFailure::ThreadGone {
            tid: tid(u),
            detail,
        },
        _ => InjectFailure::Refused { detail },
    }
}

fn tid(u: &mut Bytes) -> i32 {
    u.pick(&[100, 101, 102, 103, -1, 0])
}

fn threads(u: &mut Bytes) -> Vec<ThreadFact> {
    (0..u.below(5))
        .map(|_| ThreadFact {
            frame: None,
            held_by_debugger_at: None,
            tid: tid(u),
            main: u.bool(),
            python: u.below(4) != 0,
            state: u.pick(&['R', 'S', 'D', 'Z', 'é']),
            wchan: u.bool().then(|| "do_sys_poll".to_string()),
        })
        .collect()
}

/// A fact the edge could report after carrying out `action`.
fn answer(u: &mut Bytes, action: &DeliveryAction) -> DeliveryFact {
    match action {
        DeliveryAction::Schedule { .. } => match u.below(3) {
            0 => DeliveryFact::NotScheduled {
                failure: failure(u),
            },
            _ => DeliveryFact::Scheduled { tid: tid(u) },
        },
        DeliveryAction::Survey { .. } => DeliveryFact::Surveyed {
            request: u.pick(&[
                RequestSeen::Pending,
                RequestSeen::Pending,
                RequestSeen::Taken,
                RequestSeen::ThreadGone,
            ]),
            threads: threads(u),
        },
        DeliveryAction::Move { to, .. } => match u.below(4) {
            0 => DeliveryFact::PickedUp,
            1 => DeliveryFact::NotScheduled {
                failure: failure(u),
            },
            _ => DeliveryFact::Moved { tid: *to },
        },
        DeliveryAction::Withdraw { .. } => {
            if u.bool() {
                DeliveryFact::Withdrawn
            } else {
                DeliveryFact::PickedUp
            }
        }
        DeliveryAction::Wake { tid } => match u.below(3) {
            0 => DeliveryFact::PickedUp,
            1 => DeliveryFact::Woken {
                tid: *tid,
                not_sent: Some("the target does not catch SIGURG".into()),
            },
            _ => DeliveryFact::Woken {
                tid: *tid,
                not_sent: None,
            },
        },
    }
}

impl Driver {
    fn new(config: Config) -> Driver {
        Driver {
            sup: Supervisor::new(config.clone()),
            config,
            now: 0,
            framer: LineFramer::default(),
            record: Vec::new(),
            effects: Vec::new(),
            waiting: VecDeque::new(),
            next_conn: 1,
            grants: 0,
            flight: None,
            grant_asked_at: 0,
            pending_inspect: None,
            pending_process: None,
            aimed: BTreeSet::new(),
            process_asked_at: None,
            inspected_ok: None,
            flight_asker: None,
            kin_ok: false,
            pending_deliver: None,
            holder: None,
            expiry: None,
            ending: false,
            watched: BTreeSet::new(),
            ever_watched: BTreeSet::new(),
            gone: BTreeSet::new(),
            signalled_target: false,
            exits: 0,
            revoke_due: None,
            replace_due: None,
            watch_due: None,
            stats: Stats::default(),
        }
    }

    /// A grant to `client` was acknowledged: it holds the grant, from now until expiry.
    fn acknowledged(&mut self, client: u32) {
        self.replace_due = self.holder.filter(|h| *h != client).map(|h| (client, h));
        self.holder = Some(client);
        self.expiry = Some(self.now + self.config.grant_expiry_ms);
        self.watch_due = Some(client);
    }

    fn feed(&mut self, input: Input) -> Result<(), String> {
        let before = self.sup.phase();
        let mut batch = Batch {
            grants_before: self.grants,
            flight_before: self
                .flight
                .filter(|_| matches!(before, Phase::Granting { .. })),
            ..Batch::default()
        };
        self.revoke_due = None;
        self.replace_due = None;
        self.watch_due = None;
        let live = matches!(
            before,
            Phase::Idle | Phase::Attached { .. } | Phase::Granting { .. }
        );
        // What this input justifies, decided from the facts alone (not from the core).
        if let Input::ClientInspected {
            pid,
            facts: ClientFacts::Running { uid, kinship, .. },
        } = &input
        {
            if *uid == self.config.uid {
                self.inspected_ok = Some(*pid);
            }
            self.kin_ok = matches!(kinship, Some(Kinship::Asker | Kinship::Descendant));
        }
        match (&input, &before) {
            (Input::GrantRan { grant, errno }, Phase::Granting { client, step })
                if *grant == self.grants && step != "inspecting" =>
            {
                let ack = *errno == 0 || (*errno == EINVAL && self.config.yama == Yama::Absent);
                match self.flight {
                    Some(Flight::Declare(c)) if c == *client => {
                        if ack {
                            self.acknowledged(c);
                        }
                    }
                    Some(Flight::Revoke(h)) if h == *client => {
                        if ack {
                            // The target declares nobody: nobody may be attached.
                            self.holder = None;
                            self.expiry = None;
                            self.stats.revocations_done += 1;
                        }
                    }
                    flight => {
                        return Err(format!("{before} while the grant in flight is {flight:?}"))
                    }
                }
            }
            // The diagnostic mode answers READY without injecting, by design, where the
            // policy would have granted.
            (
                Input::ClientInspected {
                    pid,
                    facts: ClientFacts::Running { privilege, .. },
                },
                Phase::Granting { .. },
            ) if self.config.grant_injection == GrantInjection::SkippedForDiagnostics
                && self.inspected_ok == Some(*pid)
                && (self.flight_asker.is_none() || self.kin_ok)
                && attach_rule(self.config.yama, *privilege) == AttachRule::Grant =>
            {
                self.acknowledged(*pid);
            }
            // The holder's exit and its grant's expiry each begin a revocation.
            (Input::ClientExited { pid }, Phase::Attached { client }) if pid == client => {
                self.revoke_due = Some(*client);
                self.stats.holder_exits += 1;
            }
            (Input::DeadlineReached, Phase::Attached { client }) => {
                self.revoke_due = Some(*client);
                self.stats.expiries += 1;
            }
            (Input::ClientExited { .. }, _) => {
                batch.ignored = true;
                self.stats.ignored_exits += 1;
            }
            _ => {}
        }
        match &input {
            Input::SignalReceived { signal, by_kernel } if live => {
                // The terminal's signal reached the target too: it is not sent again.
                let has_it = *by_kernel && signal.number() == self.config.stop_signal;
                batch.signals_target = Some(usize::from(!has_it));
                self.stats.kernel_signals += u64::from(*by_kernel);
            }
            Input::AdaptersGone if live => batch.signals_target = Some(1),
            Input::TargetExited { .. } if !matches!(before, Phase::Terminated { .. }) => {
                batch.kills_tree = true;
            }
            _ => {}
        }
        if matches!(
            input,
            Input::SignalReceived { .. } | Input::AdaptersGone | Input::TargetExited { .. }
        ) && !matches!(before, Phase::Terminated { .. })
        {
            // No line waits for a revocation's outcome (REVOKE_ACCESS was answered when it
            // began), so cutting it short must answer nothing (finding 4): any reply now
            // has to match a waiting line.
            if matches!(batch.flight_before, Some(Flight::Revoke(_))) {
                self.stats.revocations_cut_short += 1;
            }
            self.end_session();
        }
        if let Input::LineReceived { frame, origin } = &input {
            self.stats.lines += 1;
            let expect = match (frame, origin) {
                // The socket serves our uid only, and tells a blank line it carried nothing.
                (_, Origin::Socket { uid, .. }) if *uid != self.config.uid => Some(Expect::Bad),
                (Frame::Text { text, .. }, Origin::Socket { .. })
                    if text.is_empty() || text == "\r" =>
                {
                    Some(Expect::Bad)
                }
                (Frame::Text { text, .. }, Origin::Fifo) if text.is_empty() || text == "\r" => {
                    matches!(before, Phase::Granting { .. }).then_some(Expect::QueuedBlank)
                }
                (Frame::Text { text, .. }, _) => Some(match parse_command(text) {
                    Ok(command) => Expect::Command(command),
                    Err(_) => Expect::Bad,
                }),
                (Frame::NotUtf8 { .. } | Frame::Oversized { .. }, _) => Some(Expect::Bad),
            };
            self.waiting.extend(expect.map(|e| (e, *origin)));
        }
        self.record.push((self.now, input.clone()));
        self.stats.inputs += 1;
        let effects = self.sup.handle(self.now, input);
        let after = self.sup.phase();
        self.check(&mut batch, &before, &after, &effects)?;
        if batch.ignored && (!effects.is_empty() || after != before) {
            return Err(format!(
                "the exit of a pid that holds no grant changed something: {before} -> {after}, {effects:?}"
            ));
        }
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            eprintln!(
                "{} {:?} -> {} effects; waiting {:?}",
                self.now,
                self.record.last().map(|r| r.1.to_string()),
                effects.len(),
                self.waiting
            );
        }
        self.effects.push(effects);
        Ok(())
    }

    /// A stop began or the target exited: from here on nobody holds a grant and no
    /// revocation may begin.
    fn end_session(&mut self) {
        self.ending = true;
        self.holder = None;
        self.expiry = None;
    }

    fn check(
        &mut self,
        batch: &mut Batch,
        before: &Phase,
        after: &Phase,
        effects: &[Effect],
    ) -> Result<(), String> {
        let target = self.config.target_pid;
        let in_grant = matches!(before, Phase::Granting { .. });
        let (mut target_signals, mut terminate_logs, mut tree_kills) = (0, 0, 0);
        for effect in effects {
            match effect {
                Effect::Reply { reply, to } => {
                    self.stats.replies += 1;
                    if in_grant && !matches!(after, Phase::Granting { .. }) {
                        self.stats.queued_answers += 1;
                    }
                    let (expect, origin) = loop {
                        match self.waiting.pop_front() {
                            None => {
                                return Err(format!("reply {reply:?} with no line waiting for one"))
                            }
                            // Worked off without a reply: the reply is for a later line.
                            Some((Expect::QueuedBlank, _)) => continue,
                            Some(line) => break line,
                        }
                    };
                    if matches!(expect, Expect::Command(Command::GrantAccess { .. })) {
                        self.process_asked_at = None;
                    }
                    if *to != origin.reply_to() {
                        return Err(format!(
                            "reply {reply:?} goes to {to:?}; its line {expect:?} came from {origin:?}"
                        ));
                    }
                    if matches!(reply, Reply::Error(m) if m.starts_with("timed out")) {
                        self.stats.grant_timeouts += 1;
                    }
                    let fits = match (reply, expect) {
                        (Reply::Error(_), Expect::Command(Command::RevokeAccess { pid })) => {
                            if self.holder == Some(pid) {
                                return Err(format!(
                                    "{reply:?} to REVOKE_ACCESS {pid}, which holds the grant"
                                ));
                            }
                            self.stats.revoke_errors += 1;
                            true
                        }
                        (Reply::Error(_), _) => true,
                        (Reply::TargetPid(pid), Expect::Command(Command::GetTargetPid)) => {
                            *pid == target
                        }
                        // The legacy dialect answers TERMINATE only on the socket, where a
                        // connection waits for its one reply.
                        (Reply::Ready, Expect::Command(Command::Terminate)) => {
                            self.config.dialect == Dialect::Seed || !origin.is_fifo()
                        }
                        (Reply::Ready, Expect::Command(Command::GrantAccess { pid, .. })) => {
                            self.stats.readies_for_grants += 1;
                            let stranger = origin.asker().is_some() && !self.kin_ok;
                            self.stats.socket_readies += u64::from(origin.asker().is_some());
                            if pid <= 1
                                || pid == target
                                || self.inspected_ok != Some(pid)
                                || stranger
                            {
                                return Err(format!(
                                    "READY for GRANT_ACCESS {pid} from {origin:?}, but the inspection found {:?} running as uid {} (asker's kin: {})",
                                    self.inspected_ok, self.config.uid, self.kin_ok
                                ));
                            }
                            true
                        }
                        (Reply::Ready, Expect::Command(Command::RevokeAccess { pid })) => {
                            if self.holder != Some(pid) {
                                return Err(format!(
                                    "READY to REVOKE_ACCESS {pid}, but the holder is {:?}",
                                    self.holder
                                ));
                            }
                            if self.revoke_due.is_some() {
                                return Err("two revocations due in one input".into());
                            }
                            // Answered at once; the revocation must begin right behind.
                            self.revoke_due = Some(pid);
                            self.stats.revoke_readies += 1;
                            true
                        }
                        (
                            Reply::TargetPid(_)
                            | Reply::Ready
                            // No line of this fuzzer asks about the tree (PS, STACK, TASKS).
                            | Reply::Processes(_)
                            | Reply::Stacks(_)
                            | Reply::Tasks(_),
                            Expect::Command(_) | Expect::Bad | Expect::QueuedBlank,
                        ) => false,
                        // The generator writes no `WAIT`: no line here asks for progress.
                        (Reply::Waiting(_), _) => false,
                    };
                    if !fits {
                        return Err(format!("reply {reply:?} answers a line {expect:?}"));
                    }
                }
                // Where the core handled TERMINATE: the stop begins here (the seed
                // dialect's READY came just before; the legacy dialect never answers it).
                Effect::Log { message } if message.starts_with("TERMINATE requested") => {
                    terminate_logs += 1;
                    self.end_session();
                    // A socket's TERMINATE was answered (and the log names its asker).
                    if self.config.dialect == Dialect::Legacy && !message.contains("asked by") {
                        self.drop_queued_blanks();
                        match self.waiting.pop_front() {
                            Some((Expect::Command(Command::Terminate), Origin::Fifo)) => {}
                            other => {
                                return Err(format!(
                                    "TERMINATE handled, but the line waiting is {other:?}"
                                ))
                            }
                        }
                    }
                }
                Effect::Log { message } if message.contains(" replaces pid ") => {
                    match self.replace_due.take() {
                        Some((new, old))
                            if message.starts_with(&format!("pid {new} replaces pid {old} ")) => {}
                        due => return Err(format!("logged {message:?}, expected {due:?}")),
                    }
                }
                Effect::Log { .. } => {}
                Effect::InspectClient { pid, asker } => {
                    // A grant that named its process began (and was counted) when that
                    // was inspected.
                    match self.process_asked_at.take() {
                        Some(at) => self.grant_asked_at = at,
                        None => {
                            self.grant_asked_at = self.now;
                            self.grants += 1;
                            self.stats.grants += 1;
                        }
                    }
                    self.flight = Some(Flight::Declare(*pid));
                    self.inspected_ok = None;
                    self.kin_ok = false;
                    self.flight_asker = *asker;
                    self.pending_inspect = Some((*pid, *asker));
                    self.drop_queued_blanks();
                    let asked = self.waiting.front().map(|(e, o)| (*e, o.asker()));
                    let names_pid = matches!(
                        asked,
                        Some((Expect::Command(Command::GrantAccess { pid: p, .. }), a))
                            if p == *pid && a == *asker
                    );
                    if !names_pid {
                        return Err(format!(
                            "inspect {pid}, but the line waiting is {:?}",
                            self.waiting.front()
                        ));
                    }
                }
                Effect::Deliver {
                    grant,
                    client,
                    action,
                } => {
                    self.stats.delivers += 1;
                    self.check_deliver(*grant, *client)?;
                    self.pending_deliver = Some((*grant, action.clone()));
                }
                Effect::WatchClient { pid } => {
                    if self.holder != Some(*pid) || self.ending {
                        return Err(format!(
                            "watching pid {pid}, but the holder is {:?}",
                            self.holder
                        ));
                    }
                    if self.watch_due.take() != Some(*pid) {
                        return Err(format!("watching pid {pid}, which was not just granted"));
                    }
                    self.watched.insert(*pid);
                    self.ever_watched.insert(*pid);
                    self.gone.remove(pid);
                }
                Effect::SignalTarget { signal } => {
                    target_signals += 1;
                    if *signal != self.config.stop_signal || self.signalled_target {
                        return Err(format!(
                            "signal {signal} to the target (stop signal {}, sent before: {})",
                            self.config.stop_signal, self.signalled_target
                        ));
                    }
                    self.signalled_target = true;
                }
                Effect::StopTree { signal } => {
                    tree_kills += 1;
                    if *signal != SIGKILL {
                        return Err(format!("signal {signal} to the whole tree"));
                    }
                }
                Effect::Exit { code } => {
                    self.exits += 1;
                    if self.exits > 1 {
                        return Err(format!("a second exit ({code})"));
                    }
                    if *after != (Phase::Terminated { code: *code }) {
                        return Err(format!("exit {code} while {after}"));
                    }
                }
                Effect::InspectProcess { pid } => {
                    // The grant begins with the process it names; its client is the
                    // line's first pid.
                    self.drop_queued_blanks();
                    if let Some((Expect::Command(Command::GrantAccess { pid: client, .. }), _)) =
                        self.waiting.front()
                    {
                        self.flight = Some(Flight::Declare(*client));
                    }
                    self.process_asked_at = Some(self.now);
                    self.grant_asked_at = self.now;
                    self.grants += 1;
                    self.stats.grants += 1;
                    self.pending_process = Some(*pid);
                }
                Effect::AimGrant { grant, .. } => {
                    self.aimed.insert(*grant);
                }
                Effect::ForgetGrant { .. } | Effect::RemovePipes => {}
                Effect::ListTree | Effect::ReadStacks { .. } | Effect::ReadTasks { .. } => {
                    return Err(format!("{effect:?}, but no line asked about the tree"));
                }
            }
        }
        let expected_signals = batch.signals_target.unwrap_or(terminate_logs);
        if target_signals != expected_signals {
            return Err(format!(
                "{target_signals} stop signals to the target, expected {expected_signals}"
            ));
        }
        if batch.kills_tree && tree_kills == 0 {
            return Err("the target exited, but what it left behind was not killed".into());
        }
        if let Some(holder) = self.revoke_due.take() {
            return Err(format!(
                "the revocation of pid {holder}'s grant did not begin"
            ));
        }
        if let Some(pid) = self.watch_due.take() {
            return Err(format!(
                "pid {pid} was granted, but its exit is not watched"
            ));
        }
        if let Some(due) = self.replace_due.take() {
            return Err(format!("the replacement {due:?} was not logged"));
        }
        // A revocation that ended without its acknowledgement leaves the holder its
        // grant, with a fresh expiry (it is tried again then).
        if let Some(Flight::Revoke(h)) = batch.flight_before {
            let over =
                self.grants != batch.grants_before || !matches!(after, Phase::Granting { .. });
            if over && self.holder == Some(h) {
                self.expiry = Some(self.now + self.config.grant_expiry_ms);
                self.stats.revocations_failed += 1;
                // In another process of the tree than the target (a worker that may have
                // exited), a failed revocation ends the holding: no session is open there.
                if self.aimed.contains(&batch.grants_before) {
                    self.holder = None;
                    self.expiry = None;
                }
            }
        }
        match after {
            Phase::Attached { client } => {
                if self.holder != Some(*client) {
                    return Err(format!(
                        "attached({client}) without an acknowledgement (holder {:?})",
                        self.holder
                    ));
                }
                if *before != *after {
                    self.stats.attached_entries += 1;
                }
            }
            Phase::Idle => {
                if let Some(holder) = self.holder {
                    return Err(format!("idle while pid {holder} holds the grant"));
                }
            }
            Phase::Stopping | Phase::Terminated { .. } => {}
            Phase::Granting { client, .. } => {
                let fits = match self.flight {
                    Some(Flight::Declare(c)) => c == *client,
                    Some(Flight::Revoke(h)) => h == *client && self.holder == Some(h),
                    None => false,
                };
                if !fits {
                    return Err(format!(
                        "{after}, but the grant begun is {:?} (holder {:?})",
                        self.flight, self.holder
                    ));
                }
            }
        }
        // Outside a grant the core's queue is empty: every line so far has its reply
        // (blank ones queued behind the grant were dropped without one).
        if !matches!(after, Phase::Granting { .. }) {
            self.waiting.retain(|(e, _)| *e != Expect::QueuedBlank);
            if !self.waiting.is_empty() {
                return Err(format!(
                    "{after}, yet lines wait for replies: {:?}",
                    self.waiting
                ));
            }
        }
        let timeout = self.sup.poll_timeout();
        match (after, timeout) {
            (Phase::Granting { .. }, Some(at)) => {
                if at > self.grant_asked_at + self.config.grant_timeout_ms {
                    return Err(format!(
                        "grant asked at {} with timeout {} waits until {at}",
                        self.grant_asked_at, self.config.grant_timeout_ms
                    ));
                }
            }
            (Phase::Attached { .. }, at) => {
                if at != self.expiry {
                    return Err(format!(
                        "attached with deadline {at:?}; the grant expires at {:?}",
                        self.expiry
                    ));
                }
            }
            (Phase::Stopping, Some(_)) => {}
            (Phase::Idle | Phase::Terminated { .. }, None) => {}
            (phase, timeout) => return Err(format!("{phase} with deadline {timeout:?}")),
        }
        if matches!(after, Phase::Terminated { .. }) && self.exits != 1 {
            return Err("terminated without deciding the exit".into());
        }
        Ok(())
    }

    /// One step of a grant's delivery: it belongs to the grant in flight and names the
    /// pid that grant declares, or begins a revocation of the holder's grant.
    fn check_deliver(&mut self, grant: GrantId, client: u32) -> Result<(), String> {
        if grant == self.grants + 1 {
            // A grant that begins without an inspection: only a revocation does.
            if client != 0 {
                return Err(format!(
                    "grant {grant} delivered to pid {client} without an inspection"
                ));
            }
            let holder = self.holder.filter(|_| !self.ending);
            match (holder, self.revoke_due.take()) {
                (Some(h), Some(due)) if h == due => {
                    self.grants = grant;
                    self.flight = Some(Flight::Revoke(h));
                    self.grant_asked_at = self.now;
                    self.stats.revocations += 1;
                    return Ok(());
                }
                (holder, due) => {
                    return Err(format!(
                        "a revocation (pid 0) begun with holder {holder:?}, asked for {due:?}"
                    ))
                }
            }
        }
        if grant != self.grants {
            return Err(format!(
                "a delivery step for grant {grant}; the latest grant is {}",
                self.grants
            ));
        }
        match self.flight {
            Some(Flight::Declare(c)) => {
                if client != c {
                    return Err(format!(
                        "grant {grant} for pid {c} delivered to pid {client}"
                    ));
                }
                let stranger = self.flight_asker.is_some() && !self.kin_ok;
                if client <= 1
                    || client == self.config.target_pid
                    || self.inspected_ok != Some(client)
                    || stranger
                {
                    return Err(format!(
                        "delivering a grant to pid {client}, but the inspection found {:?} running as uid {} (asker {:?}, kin {})",
                        self.inspected_ok, self.config.uid, self.flight_asker, self.kin_ok
                    ));
                }
                if self.config.grant_injection == GrantInjection::SkippedForDiagnostics {
                    return Err("a grant was delivered in the no-injection mode".into());
                }
            }
            // Every step of a revocation names pid 0, not only its first (finding 3).
            Some(Flight::Revoke(_)) if client == 0 => self.stats.later_revocation_steps += 1,
            flight => {
                return Err(format!(
                    "grant {grant} ({flight:?}) delivered naming pid {client}"
                ))
            }
        }
        Ok(())
    }

    /// Blank lines ahead of the line being handled were worked off without a reply.
    fn drop_queued_blanks(&mut self) {
        while matches!(self.waiting.front(), Some((Expect::QueuedBlank, _))) {
            self.waiting.pop_front();
        }
    }

    /// Who holds the grant (or some client): the pid REVOKE_ACCESS lines name.
    fn some_holder(&self) -> u32 {
        self.holder
            .or_else(|| self.watched.first().copied())
            .unwrap_or(1231)
    }

    /// One request over the control socket: one connection, one line, and the kernel's
    /// word on who sent it (sometimes a process of another uid).
    fn socket_request(&mut self, u: &mut Bytes) -> Result<(), String> {
        let holder = self.some_holder();
        let mut bytes = line_bytes(u, &self.config, holder);
        if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            bytes.truncate(end);
        }
        bytes.push(b'\n');
        let Some(frame) = LineFramer::default().push(&bytes).into_iter().next() else {
            return Err(format!("no frame from {bytes:?}"));
        };
        let origin = Origin::Socket {
            conn: self.next_conn,
            pid: u.pick(&[holder, holder, 1231, 1240, 31_337]),
            uid: if u.below(8) == 0 {
                self.config.uid + 1
            } else {
                self.config.uid
            },
        };
        self.next_conn += 1;
        self.stats.socket_lines += 1;
        self.feed(Input::LineReceived { frame, origin })
    }

    fn lines(&mut self, u: &mut Bytes) -> Result<(), String> {
        if u.below(4) == 0 {
            return self.socket_request(u);
        }
        let holder = self.some_holder();
        // One `read` may carry several lines, or part of one.
        let mut chunk = Vec::new();
        for _ in 0..1 + u.below(3) {
            chunk.extend(line_bytes(u, &self.config, holder));
        }
        let cut = u.below(chunk.len() + 1);
        for part in [&chunk[..cut], &chunk[cut..]] {
            for frame in self.framer.push(part) {
                self.feed(Input::LineReceived {
                    frame,
                    origin: Origin::Fifo,
                })?;
            }
        }
        Ok(())
    }

    fn eof(&mut self) -> Result<(), String> {
        match self.framer.finish() {
            Some(frame) => self.feed(Input::LineReceived {
                frame,
                origin: Origin::Fifo,
            }),
            None => Ok(()),
        }
    }

    fn inspect(&mut self, u: &mut Bytes) -> Result<(), String> {
        let Some((pid, asker)) = self.pending_inspect.take() else {
            return Ok(());
        };
        // The edge reports kinship exactly when the inspection named an asker.
        let kinship = asker.map(|_| {
            u.pick(&[
                Kinship::Asker,
                Kinship::Descendant,
                Kinship::Descendant,
                Kinship::Unrelated,
            ])
        });
        // An inspection outlived by its grant (deadline, exit, stop) is not fed.
        let current = matches!(self.sup.phase(), Phase::Granting { client, step } if client == pid && step == "inspecting");
        if !current {
            return Ok(());
        }
        let facts = match u.below(6) {
            0 => ClientFacts::NotRunning,
            1 => ClientFacts::Running {
                uid: self.config.uid + 1,
                exe: None,
                privilege: TracerPrivilege::Ordinary,
                kinship,
            },
            n => ClientFacts::Running {
                uid: self.config.uid,
                exe: (n == 2).then(|| "/usr/bin/python3.14".into()),
                privilege: if n == 3 {
                    TracerPrivilege::CapSysPtrace
                } else {
                    TracerPrivilege::Ordinary
                },
                kinship,
            },
        };
        self.feed(Input::ClientInspected { pid, facts })
    }

    fn deliver(&mut self, u: &mut Bytes) -> Result<(), String> {
        match self.pending_deliver.take() {
            Some((grant, action)) => {
                let fact = answer(u, &action);
                self.feed(Input::Delivery { grant, fact })
            }
            // Nothing asked: the edge may still see the waiting request taken.
            None => match self.sup.phase() {
                Phase::Granting { step, .. } if step.starts_with("waiting") => {
                    self.feed(Input::Delivery {
                        grant: self.grants,
                        fact: DeliveryFact::PickedUp,
                    })
                }
                _ => Ok(()),
            },
        }
    }

    fn deadline(&mut self, u: &mut Bytes) -> Result<(), String> {
        if let Some(at) = self.sup.poll_timeout() {
            // At the deadline or somewhat late (a busy or coarse driver), never early.
            self.now = self.now.max(at + u.pick(&[0, 0, 0, 1, 7, 500]));
            self.feed(Input::DeadlineReached)?;
        }
        Ok(())
    }

    /// A client's exit, as the watcher reports it: once per watch, mostly the holder's;
    /// sometimes a pid never watched, which the core must ignore.
    fn client_exit(&mut self, u: &mut Bytes) -> Result<(), String> {
        let pid = if u.below(4) == 0 {
            let pid = u.pick(&[1, 1231, 1232, 77_777]);
            if self.ever_watched.contains(&pid) {
                return Ok(());
            }
            pid
        } else {
            let holder = self.holder.filter(|h| self.watched.contains(h));
            let any = (!self.watched.is_empty())
                .then(|| {
                    self.watched
                        .iter()
                        .nth(u.below(self.watched.len()))
                        .copied()
                })
                .flatten();
            match holder.filter(|_| u.below(4) != 0).or(any) {
                Some(pid) => pid,
                None => return Ok(()),
            }
        };
        self.watched.remove(&pid);
        self.gone.insert(pid);
        self.feed(Input::ClientExited { pid })
    }

    fn signal(&mut self, u: &mut Bytes) -> Result<(), String> {
        let signal = u.pick(&[
            StopSignal::Interrupt,
            StopSignal::Terminate,
            StopSignal::Hangup,
        ]);
        self.feed(Input::SignalReceived {
            signal,
            by_kernel: u.bool(),
        })
    }

    fn step(&mut self, u: &mut Bytes) -> Result<(), String> {
        // The edge answers a question as soon as it has carried it out, so an answer
        // mostly comes next; sometimes other facts overtake it.
        if self.pending_inspect.is_some() && u.below(8) != 0 {
            return self.inspect(u);
        }
        if let Some(pid) = self.pending_process.take() {
            // In the tree (below the target), a stranger, or gone.
            let facts = match u.below(3) {
                0 => ProcessFacts::Running {
                    ancestry: vec![self.config.target_pid, 1],
                },
                1 => ProcessFacts::Running { ancestry: vec![1] },
                _ => ProcessFacts::NotRunning,
            };
            let current = matches!(self.sup.phase(), Phase::Granting { step, .. } if step == "inspecting the process");
            if current {
                return self.feed(Input::ProcessInspected { pid, facts });
            }
        }
        if self.pending_deliver.is_some() && u.below(4) != 0 {
            return self.deliver(u);
        }
        // A request delivered mostly runs soon: the target reports prctl's result.
        let delivered = matches!(self.sup.phase(), Phase::Granting { step, .. } if step != "inspecting" && step != "inspecting the process");
        if delivered && self.pending_deliver.is_none() && u.below(3) == 0 {
            let errno = u.pick(&[0, 0, 0, 0, EINVAL, 1]);
            return self.feed(Input::GrantRan {
                grant: self.grants,
                errno,
            });
        }
        match u.below(36) {
            0..=7 => self.lines(u),
            8 => self.eof(),
            9..=12 => self.inspect(u),
            13..=17 => self.deliver(u),
            18..=20 => {
                let grant = match u.below(4) {
                    0 => u.u8() as GrantId,
                    1 => self.grants.saturating_sub(1),
                    _ => self.grants,
                };
                let errno = u.pick(&[0, 0, 0, EINVAL, 1, 3, -1, i32::MAX]);
                self.feed(Input::GrantRan { grant, errno })
            }
            21..=23 => {
                self.now += u.pick(&[0, 1, 5, 20, 100, 1000, 5000]);
                Ok(())
            }
            24..=27 => self.deadline(u),
            // The session's end, rare enough that most cases see several grants first.
            28..=30 => match u.below(24) {
                0 => self.signal(u),
                1 => {
                    let status = match u.below(3) {
                        0 => ExitStatus::Code(u.u8() as i32),
                        1 => ExitStatus::Signal(u.u8() as i32 % 65),
                        _ => ExitStatus::Code(0),
                    };
                    self.feed(Input::TargetExited { status })
                }
                2 => self.feed(Input::AdaptersGone),
                _ => self.inspect(u),
            },
            31..=33 => self.client_exit(u),
            _ => {
                self.now += u.below(3000) as Millis;
                Ok(())
            }
        }
    }

    /// Ends the session one of the ways a session ends, then lets deadlines run out.
    fn finish(&mut self, u: &mut Bytes) -> Result<(), String> {
        self.eof()?;
        match u.below(4) {
            0 => self.feed(Input::TargetExited {
                status: ExitStatus::Code(0),
            })?,
            1 => self.signal(u)?,
            2 => self.feed(Input::AdaptersGone)?,
            _ => {
                for frame in self.framer.push(b"TERMINATE\n") {
                    self.feed(Input::LineReceived {
                        frame,
                        origin: Origin::Fifo,
                    })?;
                }
            }
        }
        for _ in 0..100 {
            if self.sup.is_terminated() {
                break;
            }
            if self.sup.poll_timeout().is_some() {
                self.deadline(u)?;
            } else {
                // Idle with nothing due: the target ends by itself.
                self.feed(Input::TargetExited {
                    status: ExitStatus::Signal(15),
                })?;
            }
        }
        if !self.sup.is_terminated() {
            return Err(format!(
                "not terminated after 100 deadlines: {}",
                self.sup.phase()
            ));
        }
        self.waiting.retain(|(e, _)| *e != Expect::QueuedBlank);
        if !self.waiting.is_empty() {
            return Err(format!(
                "terminated with lines never answered: {:?}",
                self.waiting
            ));
        }
        // A line after the end still gets exactly its one reply.
        for frame in self.framer.push(b"GET_TARGET_PID\n") {
            self.feed(Input::LineReceived {
                frame,
                origin: Origin::Fifo,
            })?;
        }
        if !self.waiting.is_empty() {
            return Err("a line after termination got no reply".into());
        }
        Ok(())
    }

    /// The journal's fold: the same inputs, through JSON, decide the same effects.
    fn replay(&self) -> Result<(), String> {
        let mut again = Supervisor::new(self.config.clone());
        for ((at, input), effects) in self.record.iter().zip(&self.effects) {
            let json = serde_json::to_string(input).map_err(|e| e.to_string())?;
            let back: Input = serde_json::from_str(&json).map_err(|e| format!("{json}: {e}"))?;
            if back != *input {
                return Err(format!("{input:?} comes back from JSON as {back:?}"));
            }
            let replayed = again.handle(*at, back);
            if replayed != *effects {
                return Err(format!(
                    "replay of {input} at {at} decided {replayed:?}, not {effects:?}"
                ));
            }
        }
        Ok(())
    }

    fn transcript(&self) -> String {
        let mut t = Transcribed::new(self.config.clone());
        // Stop at a panic in the core: the transcript so far is what matters.
        for (at, input) in &self.record {
            let _ = t.handle(*at, input.clone());
        }
        t.transcript().to_string()
    }
}

pub fn run(data: &[u8]) -> Result<Stats, String> {
    let mut u = Bytes::new(data);
    let mut driver = Driver::new(config(&mut u));
    let mut outcome = Ok(());
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        outcome = driver.step(&mut u);
        if outcome.is_err() {
            break;
        }
    }
    let outcome = outcome
        .and_then(|()| driver.finish(&mut u))
        .and_then(|()| driver.replay());
    match outcome {
        Ok(()) => {
            let mut stats = driver.stats;
            stats.cases = 1;
            Ok(stats)
        }
        Err(why) => Err(format!(
            "{why}\nconfig: {:?}\ntranscript:\n{}",
            driver.config,
            driver.transcript()
        )),
    }
}
