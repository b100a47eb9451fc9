//! Fuzz target: the supervisor, driven as the controller drives it, with every choice the
//! driver contract leaves open taken from the fuzz input: the configuration, the bytes on
//! the control pipe and how `read` splits them, what an inspection finds, what each
//! delivery step finds, which grant reports back with which errno, when signals, target
//! exits and adapter loss happen, and how late the clock is.
//!
//! The contract itself is kept (the core's debug assertions call anything else a driver
//! bug): `ClientInspected` only answers a pending `InspectClient` of the grant in flight,
//! a `Delivery` fact only answers an `Effect::Deliver` (with a fact that action can
//! produce) or reports the pickup of a request waiting in a thread, `DeadlineReached`
//! only at or after `poll_timeout`.
//!
//! Checked after every input:
//! - no `Deliver` and no `READY` to a GRANT_ACCESS for pid <= 1, the target, or a pid the
//!   last inspection did not find running as the controller's uid;
//! - `attached(c)` only after an acknowledgement for a grant to `c` (GrantRan errno 0, or
//!   EINVAL with Yama absent), or from the diagnostic no-injection mode, or as the
//!   previous holder kept (a failed grant, or one that needed none);
//! - replies answer lines one for one in arrival order (queued lines included), each of
//!   a kind its line allows; legacy TERMINATE is the one line without a reply;
//! - a deadline is pending exactly in granting and stopping, and a grant's never lies
//!   beyond its timeout; exit is decided once.
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
    ClientFacts, Config, Effect, ExitStatus, GrantId, GrantInjection, Input, Millis, Phase,
    StopSignal, Supervisor, Yama,
};
use helicopter_parent::core::wire::{
    parse_command, Command, Dialect, Frame, LineFramer, Reply, MAX_LINE, PID_MAX_LIMIT,
};
use std::collections::VecDeque;

const EINVAL: i32 = 22;
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
    /// Replies to queued blank lines at termination (finding 1).
    pub blank_replies: u64,
    /// Grant steps and READYs for pid 1 (finding 2).
    pub pid1_grants: u64,
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
        self.blank_replies += other.blank_replies;
        self.pid1_grants += other.pid1_grants;
    }
}

/// What a line still waiting for its reply allows as an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Command(Command),
    /// Unparsable, not UTF-8, or too long: only `ERROR:` fits.
    Bad,
    /// A blank line that arrived during a grant: it waits in the core's queue, and is
    /// dropped without a reply when the queue is worked off, except (finding 1) when the
    /// target exits or the controller stops first: `terminate` answers every queued frame.
    QueuedBlank,
}

/// Finding 1 (see the README): `Supervisor::terminate` answers a blank line that waited
/// behind a grant with `ERROR: target process … is not running`, a reply nobody waits
/// for. Tolerated (and counted) until the core is fixed; `FUZZ_STRICT=1` shows it.
fn tolerate_finding_1() -> bool {
    false
}

/// Finding 2 (see the README): `GRANT_ACCESS 1` is accepted, and when the inspection finds
/// pid 1 running as the controller's uid (a controller run as root, or a container whose
/// init is the user's) the target declares init its ptracer. Tolerated and counted until
/// the core refuses pid 1; `FUZZ_STRICT=1` shows it.
fn pid_is_grantable(pid: u32, stats: &mut Stats) -> bool {
    let _ = stats;
    pid > 1
}

struct Driver {
    sup: Supervisor,
    config: Config,
    now: Millis,
    framer: LineFramer,
    /// Every input fed, for the replay check and for the transcript of a failure.
    record: Vec<(Millis, Input)>,
    effects: Vec<Vec<Effect>>,
    /// Non-blank lines in arrival order, not yet answered.
    waiting: VecDeque<Expect>,
    /// Grants begun so far; the core numbers grants 1, 2, ... so this is the current id.
    grants: GrantId,
    grant_asked_at: Millis,
    pending_inspect: Option<u32>,
    /// The pid the current grant's inspection found running as our uid.
    inspected_ok: Option<u32>,
    pending_deliver: Option<(GrantId, DeliveryAction)>,
    /// Who may be attached: set only by what justifies it.
    holder: Option<u32>,
    exits: usize,
    stats: Stats,
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

/// The bytes of one write on the control pipe.
fn line_bytes(u: &mut Bytes, config: &Config) -> Vec<u8> {
    let mut out: Vec<u8> = match u.below(14) {
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
            .pick(&["HELLO", "READY", "GRANT_ACCESS", "GRANT_ACCESS +7"])
            .into(),
        _ => format!("  Grant_Access\t{}  ", pid(u, config)).into_bytes(),
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
            grants: 0,
            grant_asked_at: 0,
            pending_inspect: None,
            inspected_ok: None,
            pending_deliver: None,
            holder: None,
            exits: 0,
            stats: Stats::default(),
        }
    }

    fn feed(&mut self, input: Input) -> Result<(), String> {
        let before = self.sup.phase();
        // What this input justifies, decided from the facts alone (not from the core).
        if let Input::ClientInspected {
            pid,
            facts: ClientFacts::Running { uid, .. },
        } = &input
        {
            if *uid == self.config.uid {
                self.inspected_ok = Some(*pid);
            }
        }
        let acked = match (&input, &before) {
            (Input::GrantRan { grant, errno }, Phase::Granting { client, step })
                if *grant == self.grants && step != "inspecting" =>
            {
                let ack = *errno == 0 || (*errno == EINVAL && self.config.yama == Yama::Absent);
                ack.then_some(*client)
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
                && attach_rule(self.config.yama, *privilege) == AttachRule::Grant =>
            {
                Some(*pid)
            }
            _ => None,
        };
        if let Some(client) = acked {
            self.holder = Some(client);
        }
        if let Input::LineReceived { frame } = &input {
            self.stats.lines += 1;
            let expect = match frame {
                Frame::Text { text, .. } if text.is_empty() || text == "\r" => {
                    matches!(before, Phase::Granting { .. }).then_some(Expect::QueuedBlank)
                }
                Frame::Text { text, .. } => Some(match parse_command(text) {
                    Ok(command) => Expect::Command(command),
                    Err(_) => Expect::Bad,
                }),
                Frame::NotUtf8 { .. } | Frame::Oversized { .. } => Some(Expect::Bad),
            };
            self.waiting.extend(expect);
        }
        self.record.push((self.now, input.clone()));
        self.stats.inputs += 1;
        let effects = self.sup.handle(self.now, input);
        let after = self.sup.phase();
        self.check(&before, &after, &effects)?;
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

    fn check(&mut self, before: &Phase, after: &Phase, effects: &[Effect]) -> Result<(), String> {
        let target = self.config.target_pid;
        let in_grant = matches!(before, Phase::Granting { .. });
        for effect in effects {
            match effect {
                Effect::Reply { reply } => {
                    self.stats.replies += 1;
                    if in_grant && !matches!(after, Phase::Granting { .. }) {
                        self.stats.queued_answers += 1;
                    }
                    // The batch in which the session ends: `terminate` drains the queue.
                    let terminating = matches!(after, Phase::Terminated { .. })
                        && !matches!(before, Phase::Terminated { .. });
                    let expect = loop {
                        match self.waiting.pop_front() {
                            None => {
                                return Err(format!("reply {reply:?} with no line waiting for one"))
                            }
                            Some(Expect::QueuedBlank)
                                if terminating && matches!(reply, Reply::Error(_)) =>
                            {
                                if !tolerate_finding_1() {
                                    return Err(format!(
                                        "a blank line queued behind a grant got {reply:?} at termination"
                                    ));
                                }
                                self.stats.blank_replies += 1;
                                break None;
                            }
                            // Worked off without a reply: the reply is for a later line.
                            Some(Expect::QueuedBlank) => continue,
                            Some(expect) => break Some(expect),
                        }
                    };
                    let Some(expect) = expect else { continue };
                    if matches!(reply, Reply::Error(m) if m.starts_with("timed out")) {
                        self.stats.grant_timeouts += 1;
                    }
                    let fits = match (reply, expect) {
                        (Reply::Error(_), _) => true,
                        (Reply::TargetPid(pid), Expect::Command(Command::GetTargetPid)) => {
                            *pid == target
                        }
                        (Reply::Ready, Expect::Command(Command::Terminate)) => {
                            self.config.dialect == Dialect::Seed
                        }
                        (Reply::Ready, Expect::Command(Command::GrantAccess { pid })) => {
                            self.stats.readies_for_grants += 1;
                            if !pid_is_grantable(pid, &mut self.stats)
                                || pid == target
                                || self.inspected_ok != Some(pid)
                            {
                                return Err(format!(
                                    "READY for GRANT_ACCESS {pid}, but the inspection found {:?} running as uid {}",
                                    self.inspected_ok, self.config.uid
                                ));
                            }
                            true
                        }
                        (
                            Reply::TargetPid(_) | Reply::Ready,
                            Expect::Command(_) | Expect::Bad | Expect::QueuedBlank,
                        ) => false,
                    };
                    if !fits {
                        return Err(format!("reply {reply:?} answers a line {expect:?}"));
                    }
                }
                // The legacy dialect never answers TERMINATE; the log line marks where
                // the core handled it (the seed dialect's READY came just before).
                Effect::Log { message }
                    if self.config.dialect == Dialect::Legacy
                        && message.starts_with("TERMINATE requested") =>
                {
                    self.drop_queued_blanks();
                    match self.waiting.pop_front() {
                        Some(Expect::Command(Command::Terminate)) => {}
                        other => {
                            return Err(format!(
                                "TERMINATE handled, but the line waiting is {other:?}"
                            ))
                        }
                    }
                }
                Effect::Log { .. } => {}
                Effect::InspectClient { pid } => {
                    self.grants += 1;
                    self.stats.grants += 1;
                    self.grant_asked_at = self.now;
                    self.inspected_ok = None;
                    self.pending_inspect = Some(*pid);
                    self.drop_queued_blanks();
                    if self.waiting.front()
                        != Some(&Expect::Command(Command::GrantAccess { pid: *pid }))
                    {
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
                    if !pid_is_grantable(*client, &mut self.stats)
                        || *client == target
                        || self.inspected_ok != Some(*client)
                    {
                        return Err(format!(
                            "delivering a grant to pid {client}, but the inspection found {:?} running as uid {}",
                            self.inspected_ok, self.config.uid
                        ));
                    }
                    if self.config.grant_injection == GrantInjection::SkippedForDiagnostics {
                        return Err("a grant was delivered in the no-injection mode".into());
                    }
                    self.pending_deliver = Some((*grant, action.clone()));
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
                Effect::ForgetGrant { .. } | Effect::StopTarget { .. } | Effect::RemovePipes => {}
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
            Phase::Idle | Phase::Stopping | Phase::Terminated { .. } => self.holder = None,
            Phase::Granting { .. } => {}
        }
        // Outside a grant the core's queue is empty: every line so far has its reply
        // (blank ones queued behind the grant were dropped without one).
        if !matches!(after, Phase::Granting { .. }) {
            self.waiting.retain(|e| *e != Expect::QueuedBlank);
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
            (Phase::Stopping, Some(_)) => {}
            (Phase::Idle | Phase::Attached { .. } | Phase::Terminated { .. }, None) => {}
            (phase, timeout) => return Err(format!("{phase} with deadline {timeout:?}")),
        }
        if matches!(after, Phase::Terminated { .. }) && self.exits != 1 {
            return Err("terminated without deciding the exit".into());
        }
        Ok(())
    }

    /// Blank lines ahead of the line being handled were worked off without a reply.
    fn drop_queued_blanks(&mut self) {
        while self.waiting.front() == Some(&Expect::QueuedBlank) {
            self.waiting.pop_front();
        }
    }

    fn lines(&mut self, u: &mut Bytes) -> Result<(), String> {
        // One `read` may carry several lines, or part of one.
        let mut chunk = Vec::new();
        for _ in 0..1 + u.below(3) {
            chunk.extend(line_bytes(u, &self.config));
        }
        let cut = u.below(chunk.len() + 1);
        for part in [&chunk[..cut], &chunk[cut..]] {
            for frame in self.framer.push(part) {
                self.feed(Input::LineReceived { frame })?;
            }
        }
        Ok(())
    }

    fn eof(&mut self) -> Result<(), String> {
        match self.framer.finish() {
            Some(frame) => self.feed(Input::LineReceived { frame }),
            None => Ok(()),
        }
    }

    fn inspect(&mut self, u: &mut Bytes) -> Result<(), String> {
        let Some(pid) = self.pending_inspect.take() else {
            return Ok(());
        };
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
            },
            n => ClientFacts::Running {
                uid: self.config.uid,
                exe: (n == 2).then(|| "/usr/bin/python3.14".into()),
                privilege: if n == 3 {
                    TracerPrivilege::CapSysPtrace
                } else {
                    TracerPrivilege::Ordinary
                },
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

    fn step(&mut self, u: &mut Bytes) -> Result<(), String> {
        // The edge answers a question as soon as it has carried it out, so an answer
        // mostly comes next; sometimes other facts overtake it.
        if self.pending_inspect.is_some() && u.below(8) != 0 {
            return self.inspect(u);
        }
        if self.pending_deliver.is_some() && u.below(4) != 0 {
            return self.deliver(u);
        }
        match u.below(32) {
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
                0 => {
                    let signal = u.pick(&[
                        StopSignal::Interrupt,
                        StopSignal::Terminate,
                        StopSignal::Hangup,
                    ]);
                    self.feed(Input::SignalReceived { signal })
                }
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
            1 => self.feed(Input::SignalReceived {
                signal: StopSignal::Terminate,
            })?,
            2 => self.feed(Input::AdaptersGone)?,
            _ => {
                for frame in self.framer.push(b"TERMINATE\n") {
                    self.feed(Input::LineReceived { frame })?;
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
                // Idle or attached with nothing due: the target ends by itself.
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
        self.waiting.retain(|e| *e != Expect::QueuedBlank);
        if !self.waiting.is_empty() {
            return Err(format!(
                "terminated with lines never answered: {:?}",
                self.waiting
            ));
        }
        // A line after the end still gets exactly its one reply.
        for frame in self.framer.push(b"GET_TARGET_PID\n") {
            self.feed(Input::LineReceived { frame })?;
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
