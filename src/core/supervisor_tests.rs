//! Transition tests: a simulated clock drives the supervisor; nothing here touches the OS.
use super::delivery::{
    DeliveryAction, DeliveryFact, InjectFailure, RequestSeen, ThreadChoice, ThreadFact,
};
use super::journal::Transcribed;
use super::ptrace_policy::TracerPrivilege;
use super::supervisor::*;
use super::wire::{Dialect, Frame, Reply};
use rstest::rstest;

const TARGET: u32 = 1000;
const UID: u32 = 501;
const CLIENT: u32 = 2000;
/// A socket peer (the process that connected).
const ASKER: u32 = 1990;
/// A child of the target, and the keeper above the target (the tree's root).
const CHILD: u32 = 1500;
const KEEPER: u32 = 999;

fn config(yama: Yama) -> Config {
    let mut config = Config::new(TARGET, UID, yama);
    config.keeper_pid = Some(KEEPER);
    config
}

fn line(text: &str) -> Input {
    line_from(text, Origin::Fifo)
}

fn line_from(text: &str, origin: Origin) -> Input {
    Input::LineReceived {
        frame: Frame::Text {
            text: text.into(),
            terminated: true,
        },
        origin,
    }
}

/// A socket connection from `pid` running as the target's uid.
fn socket(conn: u64, pid: u32) -> Origin {
    Origin::Socket {
        conn,
        pid,
        uid: UID,
    }
}

fn running(uid: u32) -> ClientFacts {
    ClientFacts::Running {
        uid,
        exe: Some("/usr/bin/heli-client".into()),
        privilege: TracerPrivilege::Ordinary,
        kinship: None,
    }
}

fn running_as(kinship: Kinship) -> ClientFacts {
    ClientFacts::Running {
        uid: UID,
        exe: Some("/usr/bin/python3.14".into()),
        privilege: TracerPrivilege::Ordinary,
        kinship: Some(kinship),
    }
}

fn replies(effects: &[Effect]) -> Vec<Reply> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Reply { reply, .. } = e {
                Some(reply.clone())
            } else {
                None
            }
        })
        .collect()
}

fn error_text(effects: &[Effect]) -> String {
    match replies(effects).as_slice() {
        [Reply::Error(msg)] => msg.clone(),
        other => panic!("expected one ERROR reply, got {other:?} from {effects:?}"),
    }
}

fn delivered(grant: GrantId, fact: DeliveryFact) -> Input {
    Input::Delivery { grant, fact }
}

fn schedule_main(grant: GrantId, client: u32) -> Effect {
    Effect::Deliver {
        grant,
        client,
        action: DeliveryAction::Schedule {
            on: ThreadChoice::Main,
        },
    }
}

fn thread(tid: i32, main: bool, state: char, wchan: Option<&str>) -> ThreadFact {
    ThreadFact {
        frame: None,
        held_by_debugger_at: None,
        tid,
        main,
        python: true,
        state,
        wchan: wchan.map(String::from),
    }
}

fn attached(client: u32) -> Phase {
    Phase::Attached { client }
}

/// Given a supervisor, when inputs arrive at simulated times, then effects come out.
struct Harness {
    session: Transcribed,
    now: Millis,
}

impl Harness {
    fn new(yama: Yama) -> Harness {
        Harness::with(config(yama))
    }
    fn with(config: Config) -> Harness {
        Harness {
            session: Transcribed::new(config),
            now: 0,
        }
    }
    fn at(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        self.now = now;
        self.session.handle(now, input)
    }
    fn on(&mut self, input: Input) -> Vec<Effect> {
        self.at(self.now, input)
    }
    fn state(&self) -> Phase {
        self.session.supervisor().phase()
    }
    fn poll_timeout(&self) -> Option<Millis> {
        self.session.supervisor().poll_timeout()
    }
    /// Drives a grant for `client` up to the point where it sits in thread `tid`.
    fn grant_delivering(&mut self, client: u32, tid: i32) -> GrantId {
        let effects = self.on(line(&format!("GRANT_ACCESS {client}")));
        assert_eq!(
            effects,
            vec![Effect::InspectClient {
                pid: client,
                asker: None
            }]
        );
        let effects = self.on(Input::ClientInspected {
            pid: client,
            facts: running(UID),
        });
        let [Effect::Deliver {
            grant,
            client: c,
            action: DeliveryAction::Schedule {
                on: ThreadChoice::Main,
            },
        }] = effects.as_slice()
        else {
            panic!("expected a schedule on the main thread, got {effects:?}")
        };
        assert_eq!(*c, client);
        let grant = *grant;
        assert!(self
            .on(delivered(grant, DeliveryFact::Scheduled { tid }))
            .is_empty());
        grant
    }
}

#[test]
fn get_target_pid_answers_the_configured_target() {
    let mut h = Harness::new(Yama::Scope(1));
    assert_eq!(
        replies(&h.on(line("get_target_pid"))),
        vec![Reply::TargetPid(TARGET)]
    );
    assert_eq!(h.state(), Phase::Idle);
}

#[test]
fn grant_succeeds_when_the_target_reports_prctl_zero() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, TARGET as i32);
    assert!(
        matches!(h.state(), Phase::Granting { client: CLIENT, .. }),
        "{:?}",
        h.state()
    );
    let effects = h.at(3, Input::GrantRan { grant, errno: 0 });
    assert_eq!(replies(&effects), vec![Reply::Ready]);
    assert_eq!(h.state(), attached(CLIENT));
    assert_eq!(
        h.poll_timeout(),
        Some(3 + 30 * 60 * 1000),
        "the only timer while attached is the grant's expiry"
    );
}

#[test]
fn einval_without_yama_means_classic_rules_and_is_ready() {
    let mut h = Harness::new(Yama::Absent);
    let grant = h.grant_delivering(CLIENT, 1);
    let effects = h.on(Input::GrantRan { grant, errno: 22 });
    assert_eq!(replies(&effects), vec![Reply::Ready]);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Log { message } if message.contains("Yama is not active"))));
}

#[test]
fn einval_under_yama_is_an_error() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    assert!(error_text(&h.on(Input::GrantRan { grant, errno: 22 })).contains("EINVAL"));
    assert_eq!(h.state(), Phase::Idle);
}

#[rstest]
#[case::not_running(ClientFacts::NotRunning, "is not a running process")]
#[case::other_user(ClientFacts::Running { uid: 0, exe: None, privilege: TracerPrivilege::CapSysPtrace, kinship: None }, "belongs to uid 0")]
fn inspected_client_problems_are_refused(#[case] facts: ClientFacts, #[case] expected: &str) {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected { pid: CLIENT, facts });
    assert!(error_text(&effects).contains(expected));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Deliver { .. })),
        "never reaches prctl"
    );
    assert_eq!(h.state(), Phase::Idle);
}

#[rstest]
#[case::scope2_ordinary(Yama::Scope(2), TracerPrivilege::Ordinary, Some("no grant can help"))]
#[case::scope3_ordinary(Yama::Scope(3), TracerPrivilege::Ordinary, Some("no grant can help"))]
#[case::scope3_capable(
    Yama::Scope(3),
    TracerPrivilege::CapSysPtrace,
    Some("no grant can help")
)]
#[case::scope2_capable(Yama::Scope(2), TracerPrivilege::CapSysPtrace, None)]
#[case::scope1_capable(Yama::Scope(1), TracerPrivilege::CapSysPtrace, None)]
fn scopes_where_a_grant_cannot_help_or_is_not_needed_inject_nothing(
    #[case] yama: Yama,
    #[case] privilege: TracerPrivilege,
    #[case] refusal: Option<&str>,
) {
    let mut h = Harness::new(yama);
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: ClientFacts::Running {
            uid: UID,
            exe: None,
            privilege,
            kinship: None,
        },
    });
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Deliver { .. })),
        "{effects:?}"
    );
    match refusal {
        Some(expected) => assert!(error_text(&effects).contains(expected)),
        None => assert_eq!(replies(&effects), vec![Reply::Ready]),
    }
    assert_eq!(
        h.state(),
        Phase::Idle,
        "no grant was declared, so nobody holds one"
    );
}

#[test]
fn granting_the_target_itself_is_refused() {
    let mut h = Harness::new(Yama::Scope(1));
    assert!(
        error_text(&h.on(line(&format!("GRANT_ACCESS {TARGET}")))).contains("the target itself")
    );
}

#[test]
fn a_grant_not_picked_up_moves_to_a_running_thread_then_times_out() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    assert_eq!(h.poll_timeout(), Some(20));
    let survey = |tid| Effect::Deliver {
        grant,
        client: CLIENT,
        action: DeliveryAction::Survey { tid },
    };
    assert_eq!(h.at(20, Input::DeadlineReached), vec![survey(1)]);
    let effects = h.on(delivered(
        grant,
        DeliveryFact::Surveyed {
            request: RequestSeen::Pending,
            threads: vec![
                thread(1, true, 'S', Some("hrtimer_nanosleep")),
                thread(7, false, 'R', None),
            ],
        },
    ));
    assert_eq!(
        effects,
        vec![Effect::Deliver {
            grant,
            client: CLIENT,
            action: DeliveryAction::Move { from: 1, to: 7 }
        }]
    );
    assert!(h
        .on(delivered(grant, DeliveryFact::Moved { tid: 7 }))
        .is_empty());
    assert_eq!(
        h.poll_timeout(),
        Some(40),
        "looks again while not picked up"
    );
    assert_eq!(h.at(40, Input::DeadlineReached), vec![survey(7)]);
    let blocked = vec![
        thread(1, true, 'S', Some("hrtimer_nanosleep")),
        thread(7, false, 'S', Some("futex_wait")),
    ];
    let stays = delivered(
        grant,
        DeliveryFact::Surveyed {
            request: RequestSeen::Pending,
            threads: blocked.clone(),
        },
    );
    assert!(h.on(stays.clone()).is_empty());
    assert_eq!(h.poll_timeout(), Some(80), "backs off when nothing runs");
    assert_eq!(h.at(80, Input::DeadlineReached), vec![survey(7)]);
    assert!(h.on(stays).is_empty());
    assert_eq!(h.poll_timeout(), Some(160));
    let effects = h.at(1500, Input::DeadlineReached);
    assert_eq!(
        effects[0],
        Effect::Deliver {
            grant,
            client: CLIENT,
            action: DeliveryAction::Withdraw { tid: 7 }
        }
    );
    let message = error_text(&effects);
    assert!(
        message.contains("timed out after 1500 ms")
            && message.contains("1 (main) S in hrtimer_nanosleep, 7 S in futex_wait"),
        "{message}"
    );
    assert_eq!(h.state(), Phase::Idle);
    // The withdrawal's outcome, then a late acknowledgement of the withdrawn grant: not
    // taken for anything newer.
    assert_eq!(
        h.on(delivered(grant, DeliveryFact::Withdrawn)),
        vec![Effect::ForgetGrant { grant }]
    );
    let late = h.at(1600, Input::GrantRan { grant, errno: 0 });
    assert!(replies(&late).is_empty());
}

#[test]
fn an_injection_failure_that_may_pass_is_retried_until_the_deadline() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running(UID),
    });
    assert_eq!(effects, vec![schedule_main(1, CLIENT)]);
    let starting = InjectFailure::RemoteDebugOff {
        opted_out: false,
        detail: "remote debugging is disabled".into(),
    };
    assert!(h
        .on(delivered(
            1,
            DeliveryFact::NotScheduled { failure: starting }
        ))
        .is_empty());
    let retry_at = h.poll_timeout().unwrap();
    assert_eq!(
        h.at(retry_at, Input::DeadlineReached),
        vec![schedule_main(1, CLIENT)]
    );
    assert!(h
        .on(delivered(1, DeliveryFact::Scheduled { tid: 1 }))
        .is_empty());
    assert_eq!(
        replies(&h.on(Input::GrantRan { grant: 1, errno: 0 })),
        vec![Reply::Ready]
    );
    // A real opt-out ends the grant at once.
    h.on(line("GRANT_ACCESS 3000"));
    h.on(Input::ClientInspected {
        pid: 3000,
        facts: running(UID),
    });
    let effects = h.on(delivered(
        2,
        DeliveryFact::NotScheduled {
            failure: InjectFailure::RemoteDebugOff {
                opted_out: true,
                detail: "remote debugging is disabled".into(),
            },
        },
    ));
    assert!(error_text(&effects)
        .contains("cannot inject the grant into the target: remote debugging is disabled"));
    assert!(effects.contains(&Effect::ForgetGrant { grant: 2 }));
    assert_eq!(
        h.state(),
        attached(CLIENT),
        "the first client keeps its grant"
    );
}

#[test]
fn a_diagnostic_run_answers_ready_without_injecting_and_says_so() {
    let mut config = config(Yama::Scope(1));
    config.grant_injection = GrantInjection::SkippedForDiagnostics;
    let mut h = Harness::with(config);
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running(UID),
    });
    assert_eq!(replies(&effects), vec![Reply::Ready]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Deliver { .. })));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Log { message } if message.contains("NOT injected"))));
}

#[test]
fn adapters_gone_stop_the_target_and_exit_as_a_controller_failure() {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = h.on(Input::AdaptersGone);
    assert!(effects.contains(&Effect::SignalTarget { signal: 2 }));
    assert_eq!(h.state(), Phase::Stopping);
    let effects = h.on(Input::TargetExited {
        status: ExitStatus::Signal(15),
    });
    assert_eq!(effects.last(), Some(&Effect::Exit { code: 125 }));
}

#[test]
fn lines_during_a_grant_are_answered_in_order_after_it() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    assert!(h.on(line("GET_TARGET_PID")).is_empty());
    assert!(h.on(line("bogus")).is_empty());
    let effects = h.on(Input::GrantRan { grant, errno: 0 });
    let r = replies(&effects);
    assert_eq!(r[0], Reply::Ready);
    assert_eq!(r[1], Reply::TargetPid(TARGET));
    assert!(matches!(&r[2], Reply::Error(m) if m.contains("unknown command 'bogus'")));
}

#[test]
fn a_failed_second_grant_leaves_the_first_client_attached() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    h.on(Input::GrantRan { grant, errno: 0 });
    h.on(line("GRANT_ACCESS 3000"));
    h.on(Input::ClientInspected {
        pid: 3000,
        facts: ClientFacts::NotRunning,
    });
    assert_eq!(h.state(), attached(CLIENT));
}

#[rstest]
#[case::requested(None, 0)]
#[case::sigterm(Some(StopSignal::Terminate), 143)]
#[case::sigint(Some(StopSignal::Interrupt), 130)]
#[case::sighup(Some(StopSignal::Hangup), 129)]
fn stopping_interrupts_the_target_then_kills_the_tree_then_exits(
    #[case] signal: Option<StopSignal>,
    #[case] code: i32,
) {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = match signal {
        None => h.on(line("TERMINATE")),
        Some(signal) => h.on(Input::SignalReceived {
            signal,
            by_kernel: false,
        }),
    };
    // SIGINT by default, whichever signal the controller got: Python's finally and
    // atexit run on KeyboardInterrupt.
    assert!(effects.contains(&Effect::SignalTarget { signal: 2 }));
    assert_eq!(signal.is_none(), replies(&effects) == vec![Reply::Ready]);
    assert_eq!(h.state(), Phase::Stopping);
    assert!(error_text(&h.on(line("GET_TARGET_PID"))).contains("shutting down"));
    let kill_at = h.poll_timeout().unwrap();
    assert_eq!(kill_at, 2000, "the grace period");
    assert_eq!(
        h.at(kill_at, Input::DeadlineReached).last(),
        Some(&Effect::StopTree { signal: 9 })
    );
    let effects = h.on(Input::TargetExited {
        status: ExitStatus::Signal(9),
    });
    assert_eq!(
        &effects[effects.len() - 3..],
        &[
            Effect::StopTree { signal: 9 },
            Effect::RemovePipes,
            Effect::Exit { code }
        ]
    );
    assert!(h.session.supervisor().is_terminated());
}

#[rstest]
#[case::ctrl_c_on_the_terminal(StopSignal::Interrupt, true, false)]
#[case::kill_int(StopSignal::Interrupt, false, true)]
#[case::terminal_hangup(StopSignal::Hangup, true, true)]
fn a_terminal_sigint_is_not_sent_to_the_target_twice(
    #[case] signal: StopSignal,
    #[case] by_kernel: bool,
    #[case] sent: bool,
) {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = h.on(Input::SignalReceived { signal, by_kernel });
    assert_eq!(
        effects.contains(&Effect::SignalTarget { signal: 2 }),
        sent,
        "{effects:?}"
    );
    assert_eq!(h.state(), Phase::Stopping);
    let kill_at = h.poll_timeout().unwrap();
    assert_eq!(
        h.at(kill_at, Input::DeadlineReached).last(),
        Some(&Effect::StopTree { signal: 9 })
    );
}

#[test]
fn the_stop_signal_and_grace_come_from_the_config() {
    let mut config = config(Yama::Scope(1));
    config.stop_signal = 15;
    config.stop_grace_ms = 300;
    let mut h = Harness::with(config);
    let effects = h.at(100, line("TERMINATE"));
    assert!(effects.contains(&Effect::SignalTarget { signal: 15 }));
    assert_eq!(h.poll_timeout(), Some(400));
    let effects = h.at(400, Input::DeadlineReached);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Log { message } if message.contains("300 ms after SIGTERM: sending SIGKILL"))
    ));
}

#[test]
fn a_target_that_survives_sigkill_is_given_up_and_its_tree_was_killed() {
    let mut h = reach("stopping_killed");
    let give_up = h.poll_timeout().unwrap();
    assert_eq!(h.at(give_up - 1, Input::DeadlineReached), vec![]);
    let effects = h.at(give_up, Input::DeadlineReached);
    assert_eq!(effects.last(), Some(&Effect::Exit { code: 0 }));
    assert!(h.session.supervisor().is_terminated());
}

#[rstest]
#[case("INT", Ok(2))]
#[case("sigterm", Ok(15))]
#[case("SIGHUP", Ok(1))]
#[case("kill", Ok(9))]
#[case("2", Ok(2))]
#[case("SIGFOO", Err("unknown signal"))]
#[case("0", Err("unknown signal"))]
#[case("64", Err("unknown signal"))]
fn stop_signals_are_parsed_by_name_or_number(
    #[case] text: &str,
    #[case] expected: Result<i32, &str>,
) {
    match (parse_signal(text), expected) {
        (Ok(n), Ok(m)) => assert_eq!(n, m),
        (Err(e), Err(m)) => assert!(e.contains(m), "{e}"),
        (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
    }
}

#[rstest]
#[case::clean(ExitStatus::Code(0), 0)]
#[case::failed(ExitStatus::Code(3), 3)]
#[case::crashed(ExitStatus::Signal(11), 139)]
fn target_exit_ends_the_session_with_its_status(#[case] status: ExitStatus, #[case] code: i32) {
    let mut h = Harness::new(Yama::Scope(1));
    h.grant_delivering(CLIENT, 1);
    h.on(line("GET_TARGET_PID"));
    let effects = h.on(Input::TargetExited { status });
    let r = replies(&effects);
    assert_eq!(
        r.len(),
        2,
        "the grant in flight and the queued line are both answered: {effects:?}"
    );
    assert!(r.iter().all(|r| matches!(r, Reply::Error(_))));
    // Whatever the target left running (children, grandchildren) ends with it.
    assert!(effects.contains(&Effect::StopTree { signal: 9 }));
    assert_eq!(effects.last(), Some(&Effect::Exit { code }));
}

#[rstest]
#[case::blank(Frame::Text { text: "".into(), terminated: true }, None)]
#[case::spaces(Frame::Text { text: "   ".into(), terminated: true }, Some("blank command line"))]
#[case::not_utf8(Frame::NotUtf8 { len: 3 }, Some("not valid UTF-8"))]
#[case::oversized(Frame::Oversized { len: 5000 }, Some("too long"))]
#[case::unterminated(Frame::Text { text: "GET_TARGET_PID".into(), terminated: false }, None)]
fn malformed_frames_get_one_reply(#[case] frame: Frame, #[case] error: Option<&str>) {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = h.on(Input::LineReceived {
        frame: frame.clone(),
        origin: Origin::Fifo,
    });
    match (error, frame) {
        (Some(expected), _) => assert!(error_text(&effects).contains(expected)),
        (None, Frame::Text { text, .. }) if text.is_empty() => assert!(effects.is_empty()),
        (None, _) => assert_eq!(replies(&effects), vec![Reply::TargetPid(TARGET)]),
    }
}

#[test]
fn legacy_dialect_does_not_answer_terminate() {
    let mut config = config(Yama::Scope(1));
    config.dialect = Dialect::Legacy;
    let mut supervisor = Supervisor::new(config);
    let effects = supervisor.handle(0, line("terminate"));
    assert!(replies(&effects).is_empty());
}

#[test]
fn transcript_of_a_seed_session() {
    let mut h = Harness::new(Yama::Scope(1));
    h.at(5, line("GET_TARGET_PID"));
    let grant = {
        h.now = 120;
        h.grant_delivering(CLIENT, TARGET as i32)
    };
    h.at(121, Input::GrantRan { grant, errno: 0 });
    h.at(900, line("GRANT_ACCESS abc"));
    h.at(2000, line("TERMINATE"));
    h.at(
        2050,
        Input::TargetExited {
            status: ExitStatus::Signal(15),
        },
    );
    insta::assert_snapshot!(h.session.transcript());
}

/// Drives a fresh supervisor into the named state.
fn reach(state: &str) -> Harness {
    let mut h = Harness::new(Yama::Scope(1));
    match state {
        "idle" => {}
        "inspecting" => {
            h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
        }
        "inspecting_socket" => {
            h.on(line_from(
                &format!("GRANT_ACCESS {CLIENT}"),
                socket(1, ASKER),
            ));
        }
        "delivering" => {
            h.grant_delivering(CLIENT, 1);
        }
        "attached" => {
            let grant = h.grant_delivering(CLIENT, 1);
            h.on(Input::GrantRan { grant, errno: 0 });
        }
        "stopping" => {
            h.on(line("TERMINATE"));
        }
        // After the grace: the tree got SIGKILL, the target has not been seen to exit.
        "stopping_killed" => {
            h.on(line("TERMINATE"));
            let kill_at = h.poll_timeout().unwrap();
            h.at(kill_at, Input::DeadlineReached);
        }
        "terminated" => {
            h.on(line("TERMINATE"));
            h.on(Input::TargetExited {
                status: ExitStatus::Signal(15),
            });
        }
        // A socket grant with WAIT whose request sits in thread 1.
        "waiting_socket" => {
            h.on(input_named("socket_grant_wait"));
            h.on(Input::ClientInspected {
                pid: CLIENT,
                facts: running_as(Kinship::Descendant),
            });
            h.on(delivered(1, DeliveryFact::Scheduled { tid: 1 }));
        }
        "inspecting_process" => {
            h.on(input_named("socket_grant_child"));
        }
        "attached_socket" => {
            h.on(input_named("socket_grant"));
            h.on(input_named("inspected_descendant"));
            h.on(delivered(1, DeliveryFact::Scheduled { tid: 1 }));
            h.on(Input::GrantRan { grant: 1, errno: 0 });
        }
        other => panic!("no such state {other}"),
    }
    h
}

fn granting(step: &str) -> Phase {
    Phase::Granting {
        client: CLIENT,
        step: step.into(),
    }
}

fn input_named(name: &str) -> Input {
    match name {
        "get_pid" => line("GET_TARGET_PID"),
        "grant" => line(&format!("GRANT_ACCESS {CLIENT}")),
        "inspected" => Input::ClientInspected {
            pid: CLIENT,
            facts: running(UID),
        },
        "inspected_descendant" => Input::ClientInspected {
            pid: CLIENT,
            facts: running_as(Kinship::Descendant),
        },
        "inspected_unrelated" => Input::ClientInspected {
            pid: CLIENT,
            facts: running_as(Kinship::Unrelated),
        },
        "socket_get_pid" => line_from("GET_TARGET_PID", socket(2, ASKER)),
        "socket_grant" => line_from(&format!("GRANT_ACCESS {CLIENT}"), socket(2, ASKER)),
        "socket_other_uid" => line_from(
            "TERMINATE",
            Origin::Socket {
                conn: 2,
                pid: ASKER,
                uid: UID + 1,
            },
        ),
        "picked_up" => delivered(1, DeliveryFact::PickedUp),
        "stale_withdrawn" => delivered(99, DeliveryFact::Withdrawn),
        "ran" => Input::GrantRan { grant: 1, errno: 0 },
        "stale_ran" => Input::GrantRan {
            grant: 99,
            errno: 0,
        },
        "exited" => Input::TargetExited {
            status: ExitStatus::Code(0),
        },
        "signal" => Input::SignalReceived {
            by_kernel: false,
            signal: StopSignal::Terminate,
        },
        "adapters_gone" => Input::AdaptersGone,
        "deadline" => Input::DeadlineReached,
        "client_exited" => Input::ClientExited { pid: CLIENT },
        "revoke" => line(&format!("REVOKE_ACCESS {CLIENT}")),
        "socket_grant_wait" => line_from(&format!("GRANT_ACCESS {CLIENT} WAIT"), socket(2, ASKER)),
        "socket_grant_child" => line_from(
            &format!("GRANT_ACCESS {CLIENT} {CHILD} WAIT"),
            socket(2, ASKER),
        ),
        "other_asker_grant" => line_from("GRANT_ACCESS 3000", socket(4, 3000)),
        "process_in_tree" => Input::ProcessInspected {
            pid: CHILD,
            facts: ProcessFacts::Running {
                ancestry: vec![TARGET, KEEPER, 1],
            },
        },
        "process_outside" => Input::ProcessInspected {
            pid: CHILD,
            facts: ProcessFacts::Running {
                ancestry: vec![77, 1],
            },
        },
        "hang_up" => Input::ConnectionClosed { conn: 2 },
        other => panic!("no such input {other}"),
    }
}

/// The transition matrix: every state with every input it can meet.
#[rstest]
#[case("idle", "get_pid", Phase::Idle)]
#[case("idle", "grant", granting("inspecting"))]
#[case("idle", "stale_ran", Phase::Idle)]
#[case("idle", "stale_withdrawn", Phase::Idle)]
#[case("idle", "exited", Phase::Terminated { code: 0 })]
#[case("idle", "signal", Phase::Stopping)]
#[case("idle", "adapters_gone", Phase::Stopping)]
#[case("idle", "socket_get_pid", Phase::Idle)]
#[case("idle", "socket_grant", granting("inspecting"))]
#[case("idle", "socket_other_uid", Phase::Idle)]
#[case("inspecting_socket", "inspected_descendant", granting("scheduling"))]
#[case("inspecting_socket", "inspected_unrelated", Phase::Idle)]
#[case("inspecting_socket", "socket_get_pid", granting("inspecting"))]
#[case("inspecting_socket", "exited", Phase::Terminated { code: 0 })]
#[case("inspecting", "get_pid", granting("inspecting"))]
#[case("inspecting", "inspected", granting("scheduling"))]
#[case("inspecting", "stale_ran", granting("inspecting"))]
#[case("inspecting", "exited", Phase::Terminated { code: 0 })]
#[case("inspecting", "signal", Phase::Stopping)]
#[case("inspecting", "adapters_gone", Phase::Stopping)]
#[case("inspecting", "deadline", granting("inspecting"))]
#[case("delivering", "get_pid", granting("waiting in thread 1"))]
#[case("delivering", "picked_up", granting("picked up by thread 1"))]
#[case("delivering", "ran", attached(CLIENT))]
#[case("delivering", "stale_withdrawn", granting("waiting in thread 1"))]
#[case("delivering", "exited", Phase::Terminated { code: 0 })]
#[case("delivering", "signal", Phase::Stopping)]
#[case("delivering", "adapters_gone", Phase::Stopping)]
#[case("delivering", "socket_grant", granting("waiting in thread 1"))]
#[case("attached", "get_pid", attached(CLIENT))]
#[case("attached", "grant", granting("inspecting"))]
#[case("attached", "stale_ran", attached(CLIENT))]
#[case("attached", "exited", Phase::Terminated { code: 0 })]
#[case("attached", "signal", Phase::Stopping)]
#[case("attached", "adapters_gone", Phase::Stopping)]
#[case("attached", "deadline", attached(CLIENT))]
#[case("attached", "client_exited", granting("scheduling"))]
#[case("attached", "revoke", granting("scheduling"))]
#[case("idle", "client_exited", Phase::Idle)]
#[case("idle", "revoke", Phase::Idle)]
#[case("stopping", "client_exited", Phase::Stopping)]
#[case("attached", "socket_grant", granting("inspecting"))]
#[case("attached", "socket_other_uid", attached(CLIENT))]
#[case("stopping", "get_pid", Phase::Stopping)]
#[case("stopping", "grant", Phase::Stopping)]
#[case("stopping", "stale_ran", Phase::Stopping)]
#[case("stopping", "exited", Phase::Terminated { code: 0 })]
#[case("stopping", "signal", Phase::Stopping)]
#[case("stopping", "adapters_gone", Phase::Stopping)]
#[case("stopping", "deadline", Phase::Stopping)]
#[case("stopping_killed", "get_pid", Phase::Stopping)]
#[case("stopping_killed", "grant", Phase::Stopping)]
#[case("stopping_killed", "stale_ran", Phase::Stopping)]
#[case("stopping_killed", "stale_withdrawn", Phase::Stopping)]
#[case("stopping_killed", "exited", Phase::Terminated { code: 0 })]
#[case("stopping_killed", "signal", Phase::Stopping)]
#[case("stopping_killed", "adapters_gone", Phase::Stopping)]
#[case("stopping_killed", "deadline", Phase::Stopping)]
#[case("stopping", "socket_grant", Phase::Stopping)]
#[case("terminated", "get_pid", Phase::Terminated { code: 0 })]
#[case("terminated", "exited", Phase::Terminated { code: 0 })]
#[case("terminated", "signal", Phase::Terminated { code: 0 })]
#[case("terminated", "adapters_gone", Phase::Terminated { code: 0 })]
#[case("terminated", "stale_ran", Phase::Terminated { code: 0 })]
#[case("terminated", "socket_get_pid", Phase::Terminated { code: 0 })]
#[case("idle", "socket_grant_child", granting("inspecting the process"))]
#[case("idle", "hang_up", Phase::Idle)]
#[case("inspecting_process", "process_in_tree", granting("inspecting"))]
#[case("inspecting_process", "process_outside", Phase::Idle)]
#[case("inspecting_process", "hang_up", Phase::Idle)]
#[case("inspecting_process", "exited", Phase::Terminated { code: 0 })]
#[case("waiting_socket", "hang_up", Phase::Idle)]
#[case("waiting_socket", "deadline", granting("waiting in thread 1"))]
#[case("waiting_socket", "socket_get_pid", granting("waiting in thread 1"))]
#[case("waiting_socket", "get_pid", granting("waiting in thread 1"))]
#[case("waiting_socket", "other_asker_grant", granting("waiting in thread 1"))]
#[case("waiting_socket", "picked_up", granting("picked up by thread 1"))]
#[case("waiting_socket", "signal", Phase::Stopping)]
#[case("attached", "hang_up", attached(CLIENT))]
#[case("attached_socket", "other_asker_grant", attached(CLIENT))]
#[case("attached_socket", "socket_grant", granting("inspecting"))]
#[case("stopping", "hang_up", Phase::Stopping)]
fn transition_matrix(#[case] state: &str, #[case] input: &str, #[case] expected: Phase) {
    let mut h = reach(state);
    h.on(input_named(input));
    assert_eq!(h.state(), expected, "{state} + {input}");
}

/// Inputs that cannot come in a state unless the driver broke its contract are bugs,
/// loud in debug builds (the tests' profile; release builds drop debug assertions, so
/// there is nothing to check there).
#[cfg(debug_assertions)]
#[rstest]
#[case("idle", "inspected")]
#[case("attached", "inspected")]
#[case("idle", "deadline")]
#[case("terminated", "deadline")]
#[case::socket_grant_without_kinship("inspecting_socket", "inspected")]
#[case("idle", "process_in_tree")]
#[case("attached", "process_outside")]
#[should_panic(expected = "driver misuse")]
fn driver_misuse_is_caught(#[case] state: &str, #[case] input: &str) {
    let mut h = reach(state);
    h.on(input_named(input));
}

/// The grant a client holds, taken back by the client at detach, when the client exits,
/// and when it expires: the target then declares nobody (`prctl(PR_SET_PTRACER, 0)`).
#[rstest]
#[case::detached(line(&format!("REVOKE_ACCESS {CLIENT}")), Some(Reply::Ready), "its client detached")]
#[case::client_exited(Input::ClientExited { pid: CLIENT }, None, "its client exited")]
#[case::expired(Input::DeadlineReached, None, "it expired")]
fn a_grant_is_taken_back(#[case] trigger: Input, #[case] answer: Option<Reply>, #[case] why: &str) {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    let effects = h.on(Input::GrantRan { grant, errno: 0 });
    assert!(
        effects.contains(&Effect::WatchClient { pid: CLIENT }),
        "{effects:?}"
    );
    let expires_at = h.poll_timeout().expect("a held grant expires");
    assert_eq!(expires_at, 30 * 60 * 1000);
    let at = if trigger == Input::DeadlineReached {
        expires_at
    } else {
        100
    };
    let effects = h.at(at, trigger);
    // The client that asked is answered at once; it need not wait for the target.
    assert_eq!(replies(&effects), answer.into_iter().collect::<Vec<_>>());
    let Some(Effect::Deliver {
        grant: revoke,
        client: 0,
        action: DeliveryAction::Schedule {
            on: ThreadChoice::Main,
        },
    }) = effects.last()
    else {
        panic!("expected a revocation (prctl with pid 0) scheduled, got {effects:?}");
    };
    let revoke = *revoke;
    assert!(h
        .on(delivered(revoke, DeliveryFact::Scheduled { tid: 1 }))
        .is_empty());
    let effects = h.on(Input::GrantRan {
        grant: revoke,
        errno: 0,
    });
    assert!(replies(&effects).is_empty(), "{effects:?}");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Log { message } if message.contains(why))),
        "{effects:?}"
    );
    assert_eq!(h.state(), Phase::Idle);
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn only_the_holder_can_give_its_grant_back_and_a_new_grant_replaces_the_old() {
    let mut h = Harness::new(Yama::Scope(1));
    let first = h.grant_delivering(CLIENT, 1);
    h.on(Input::GrantRan {
        grant: first,
        errno: 0,
    });
    let message = error_text(&h.on(line("REVOKE_ACCESS 3000")));
    assert!(
        message.contains("pid 3000 holds no grant (pid 2000 does)"),
        "{message}"
    );
    assert_eq!(h.state(), attached(CLIENT));
    // A second client: its grant replaces the first one's, and the journal says so.
    let second = h.grant_delivering(3000, 1);
    let effects = h.on(Input::GrantRan {
        grant: second,
        errno: 0,
    });
    assert!(effects.iter().any(|e| matches!(e, Effect::Log { message } if message.contains("pid 3000 replaces pid 2000"))), "{effects:?}");
    // The first client's exit no longer concerns anyone.
    assert!(h.on(Input::ClientExited { pid: CLIENT }).is_empty());
    assert_eq!(h.state(), attached(3000));
}

// The socket: who asked is known, and each reply is addressed to its own connection.

fn reply_to(effects: &[Effect]) -> Vec<(ReplyTo, Reply)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Reply { reply, to } = e {
                Some((*to, reply.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn conn(conn: u64) -> ReplyTo {
    ReplyTo::Socket { conn }
}

#[test]
fn a_socket_reply_goes_to_its_connection() {
    let mut h = Harness::new(Yama::Scope(1));
    assert_eq!(
        reply_to(&h.on(line_from("GET_TARGET_PID", socket(4, ASKER)))),
        vec![(conn(4), Reply::TargetPid(TARGET))]
    );
    assert_eq!(
        reply_to(&h.on(line("GET_TARGET_PID"))),
        vec![(ReplyTo::Fifo, Reply::TargetPid(TARGET))]
    );
}

#[rstest]
#[case::itself(Kinship::Asker)]
#[case::its_child(Kinship::Descendant)]
fn a_socket_grant_for_the_asker_or_its_descendant_is_carried_out(#[case] kinship: Kinship) {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = h.on(line_from(
        &format!("GRANT_ACCESS {CLIENT}"),
        socket(3, ASKER),
    ));
    assert_eq!(
        effects,
        vec![Effect::InspectClient {
            pid: CLIENT,
            asker: Some(ASKER)
        }]
    );
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running_as(kinship),
    });
    assert_eq!(effects, vec![schedule_main(1, CLIENT)]);
    h.on(delivered(1, DeliveryFact::Scheduled { tid: 1 }));
    let effects = h.on(Input::GrantRan { grant: 1, errno: 0 });
    assert_eq!(reply_to(&effects), vec![(conn(3), Reply::Ready)]);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Log { message }
            if message.contains("granted ptrace access to pid 2000") && message.contains("asked by pid 1990, uid 501"))),
        "the log names the real requester: {effects:?}"
    );
    assert_eq!(h.state(), attached(CLIENT));
}

#[test]
fn a_socket_grant_for_a_stranger_is_refused_and_never_reaches_prctl() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line_from(
        &format!("GRANT_ACCESS {CLIENT}"),
        socket(3, ASKER),
    ));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running_as(Kinship::Unrelated),
    });
    assert!(!effects.iter().any(|e| matches!(e, Effect::Deliver { .. })));
    match reply_to(&effects).as_slice() {
        [(to, Reply::Error(why))] => {
            assert_eq!(*to, conn(3));
            assert!(
                why.contains("pid 2000 is neither the asker (pid 1990) nor one of its descendants"),
                "{why}"
            );
        }
        other => panic!("expected one ERROR on connection 3, got {other:?}"),
    }
    assert_eq!(h.state(), Phase::Idle);
}

#[test]
fn fifo_grants_keep_todays_rules_whatever_the_kinship() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running(UID),
    });
    assert_eq!(effects, vec![schedule_main(1, CLIENT)]);
}

#[rstest]
#[case::get_pid("GET_TARGET_PID")]
#[case::grant("GRANT_ACCESS 2000")]
#[case::terminate("TERMINATE")]
fn a_socket_peer_of_another_uid_is_refused_everything(#[case] text: &str) {
    let mut h = Harness::new(Yama::Scope(1));
    let other = Origin::Socket {
        conn: 9,
        pid: ASKER,
        uid: 0,
    };
    let effects = h.on(line_from(text, other));
    match reply_to(&effects).as_slice() {
        [(to, Reply::Error(why))] => {
            assert_eq!(*to, conn(9));
            assert!(
                why.contains("the socket serves uid 501 only; pid 1990 runs as uid 0"),
                "{why}"
            );
        }
        other => panic!("expected one ERROR on connection 9, got {other:?}"),
    }
    assert_eq!(effects.len(), 1, "nothing else happens: {effects:?}");
    assert_eq!(h.state(), Phase::Idle);
}

#[test]
fn lines_queued_behind_a_grant_keep_their_order_and_their_destinations() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, 1);
    assert!(h
        .on(line_from("GET_TARGET_PID", socket(1, ASKER)))
        .is_empty());
    assert!(h.on(line("GET_TARGET_PID")).is_empty());
    assert!(h.on(line_from("bogus", socket(2, ASKER))).is_empty());
    assert!(h.on(line("")).is_empty());
    let effects = h.on(Input::GrantRan { grant, errno: 0 });
    let got = reply_to(&effects);
    assert_eq!(got.len(), 4, "one reply per non-empty line: {got:?}");
    assert_eq!(got[0], (ReplyTo::Fifo, Reply::Ready));
    assert_eq!(got[1], (conn(1), Reply::TargetPid(TARGET)));
    assert_eq!(got[2], (ReplyTo::Fifo, Reply::TargetPid(TARGET)));
    assert!(
        matches!(&got[3], (to, Reply::Error(m)) if *to == conn(2) && m.contains("unknown command 'bogus'"))
    );
}

#[test]
fn a_grant_asked_on_the_socket_is_answered_there_when_the_target_exits() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line_from(
        &format!("GRANT_ACCESS {CLIENT}"),
        socket(5, ASKER),
    ));
    h.on(line_from("GET_TARGET_PID", socket(6, ASKER)));
    let effects = h.on(Input::TargetExited {
        status: ExitStatus::Code(0),
    });
    let got = reply_to(&effects);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(&got[0], (to, Reply::Error(m)) if *to == conn(5) && m.contains("exited")));
    assert!(
        matches!(&got[1], (to, Reply::Error(m)) if *to == conn(6) && m.contains("not running"))
    );
}

#[test]
fn an_empty_socket_line_is_told_and_an_empty_fifo_line_is_not() {
    let mut h = Harness::new(Yama::Scope(1));
    assert!(h.on(line("")).is_empty());
    assert!(matches!(
        reply_to(&h.on(line_from("", socket(1, ASKER)))).as_slice(),
        [(to, Reply::Error(m))] if *to == conn(1) && m.contains("empty line")
    ));
}

#[test]
fn legacy_terminate_is_answered_on_the_socket_only() {
    let mut config = config(Yama::Scope(1));
    config.dialect = Dialect::Legacy;
    let mut supervisor = Supervisor::new(config);
    let effects = supervisor.handle(0, line_from("terminate", socket(1, ASKER)));
    assert_eq!(reply_to(&effects), vec![(conn(1), Reply::Ready)]);
}

#[test]
fn transcript_of_a_socket_session() {
    let mut h = Harness::new(Yama::Scope(1));
    h.at(5, line_from("GET_TARGET_PID", socket(1, ASKER)));
    h.at(
        10,
        line_from(&format!("GRANT_ACCESS {CLIENT}"), socket(2, ASKER)),
    );
    h.at(
        11,
        Input::ClientInspected {
            pid: CLIENT,
            facts: running_as(Kinship::Descendant),
        },
    );
    h.at(12, delivered(1, DeliveryFact::Scheduled { tid: 1 }));
    h.at(30, Input::GrantRan { grant: 1, errno: 0 });
    h.at(40, line_from("GRANT_ACCESS 3000", socket(3, ASKER)));
    h.at(
        41,
        Input::ClientInspected {
            pid: 3000,
            facts: running_as(Kinship::Unrelated),
        },
    );
    insta::assert_snapshot!(h.session.transcript());
}

/// Questions about the tree: `PS`, `STACK`, `TASKS` (issue 11).
mod tree_questions {
    use super::*;
    use crate::core::stacks::{Frame as PyFrame, ProcessStacks, ThreadStack};
    use crate::core::tree::{
        Interpreter, ProcessFacts, PsReport, StacksOutcome, StacksReport, TreeListing,
    };

    const KEEPER: u32 = 999;
    const WORKER: u32 = 1001;
    const SLEEP: u32 = 1002;

    fn process(pid: u32, ppid: u32, interpreter: Interpreter) -> ProcessFacts {
        ProcessFacts {
            pid,
            ppid,
            interpreter,
            threads: 1,
            state: "S (sleeping)".into(),
            cmdline: vec![format!("cmd-{pid}")],
        }
    }

    fn python() -> Interpreter {
        Interpreter::Python {
            version: "3.14.2".into(),
        }
    }

    /// keeper ── target ── worker (Python) ── sleep (not Python)
    fn listing() -> Input {
        Input::TreeListed {
            listing: TreeListing {
                root: KEEPER,
                processes: vec![
                    process(TARGET, KEEPER, python()),
                    process(WORKER, TARGET, python()),
                    process(SLEEP, WORKER, Interpreter::NotPython),
                ],
                truncated: false,
            },
        }
    }

    fn stacks_of(pid: u32) -> ProcessStacks {
        ProcessStacks {
            pid: pid as i32,
            python_version: "3.14.2".into(),
            threads: vec![ThreadStack {
                tid: pid as i32,
                is_main: true,
                frames: vec![PyFrame {
                    filename: "/srv/app.py".into(),
                    line: Some(pid),
                    function: format!("in_{pid}"),
                }],
            }],
        }
    }

    fn read(pids: &[u32]) -> Input {
        Input::StacksRead {
            stacks: pids
                .iter()
                .map(|&pid| StacksOutcome {
                    pid,
                    outcome: Ok(stacks_of(pid)),
                })
                .collect(),
        }
    }

    #[test]
    fn ps_lists_then_reads_the_python_processes_and_lines_meanwhile_wait() {
        let mut h = Harness::new(Yama::Scope(1));
        assert_eq!(h.on(line("PS")), vec![Effect::ListTree]);
        // The FIFO's replies keep their order: this one waits for the PS answer.
        assert_eq!(replies(&h.on(line("GET_TARGET_PID"))), vec![]);
        let effects = h.on(listing());
        assert_eq!(
            effects,
            vec![Effect::ReadStacks {
                pids: vec![TARGET, WORKER]
            }]
        );
        let answers = replies(&h.on(read(&[TARGET, WORKER])));
        let [Reply::Processes(json), Reply::TargetPid(TARGET)] = answers.as_slice() else {
            panic!("{answers:?}");
        };
        let report: PsReport = serde_json::from_str(json).unwrap();
        let pids: Vec<u32> = report.processes.iter().map(|p| p.facts.pid).collect();
        assert_eq!(pids, [TARGET, WORKER, SLEEP]);
        let worker_top = &report.processes[1].frames.as_ref().unwrap()[0];
        assert_eq!(worker_top.frame.as_ref().unwrap().function, "in_1001");
        assert_eq!(report.processes[2].frames, None);
        assert_eq!(h.state(), Phase::Idle);
    }

    #[rstest]
    #[case::init("STACK 1", "pid 1 is not in the supervised tree (target 1000)")]
    #[case::the_keeper("STACK 999", "pid 999 is not in the supervised tree")]
    #[case::a_stranger("TASKS 4242", "pid 4242 is not in the supervised tree")]
    #[case::not_python("STACK 1002", "pid 1002 (cmd-1002) is not a Python process")]
    fn questions_about_pids_outside_the_tree_or_not_python_are_refused_unread(
        #[case] question: &str,
        #[case] message: &str,
    ) {
        let mut h = Harness::new(Yama::Scope(1));
        assert_eq!(h.on(line(question)), vec![Effect::ListTree]);
        let effects = h.on(listing());
        let text = error_text(&effects);
        assert!(text.starts_with(message), "{text}");
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::ReadStacks { .. } | Effect::ReadTasks { .. })),
            "{effects:?}"
        );
    }

    #[test]
    fn stack_all_reads_every_python_process_and_answers_on_its_socket() {
        let mut h = Harness::new(Yama::Scope(1));
        assert_eq!(
            h.on(line_from("STACK ALL", socket(7, ASKER))),
            vec![Effect::ListTree]
        );
        assert_eq!(
            h.on(listing()),
            vec![Effect::ReadStacks {
                pids: vec![TARGET, WORKER]
            }]
        );
        let effects = h.on(read(&[TARGET, WORKER]));
        let [Effect::Reply {
            reply: Reply::Stacks(json),
            to: ReplyTo::Socket { conn: 7 },
        }] = effects.as_slice()
        else {
            panic!("{effects:?}");
        };
        let report: StacksReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.processes.len(), 2);
        assert_eq!(report.processes[1].cmdline, ["cmd-1001"]);
    }

    #[test]
    fn an_unreadable_process_is_an_error_for_stack_and_tasks() {
        let mut h = Harness::new(Yama::Scope(1));
        let _ = h.on(line("STACK 1001"));
        assert_eq!(
            h.on(listing()),
            vec![Effect::ReadStacks { pids: vec![WORKER] }]
        );
        let effects = h.on(Input::StacksRead {
            stacks: vec![StacksOutcome {
                pid: WORKER,
                outcome: Err("it exited".into()),
            }],
        });
        assert_eq!(
            error_text(&effects),
            "cannot read the stacks of pid 1001: it exited"
        );

        let _ = h.on(line("TASKS 1000"));
        assert_eq!(h.on(listing()), vec![Effect::ReadTasks { pid: TARGET }]);
        let effects = h.on(Input::TasksRead {
            pid: TARGET,
            outcome: Err("no asyncio".into()),
        });
        assert_eq!(
            error_text(&effects),
            "cannot read the asyncio tasks of pid 1000: no asyncio"
        );
        let _ = h.on(line("TASKS 1000"));
        let _ = h.on(listing());
        let effects = h.on(Input::TasksRead {
            pid: TARGET,
            outcome: Ok(vec![]),
        });
        assert!(
            matches!(replies(&effects).as_slice(), [Reply::Tasks(json)] if json.contains("\"pid\":1000")),
            "{effects:?}"
        );
    }

    #[test]
    fn a_question_behind_a_grant_waits_for_it() {
        let mut h = Harness::new(Yama::Scope(1));
        let _ = h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
        // Queued behind the grant: nothing is listed yet.
        assert_eq!(h.on(line("PS")), vec![]);
        let effects = h.on(Input::ClientInspected {
            pid: CLIENT,
            facts: ClientFacts::NotRunning,
        });
        let listed_after_reply = effects
            .iter()
            .position(|e| *e == Effect::ListTree)
            .expect("the PS begins once the grant is over");
        assert!(matches!(
            effects[0..listed_after_reply]
                .iter()
                .find(|e| matches!(e, Effect::Reply { .. })),
            Some(Effect::Reply {
                reply: Reply::Error(_),
                ..
            })
        ));
    }

    #[test]
    fn a_question_out_when_the_target_exits_gets_an_error() {
        let mut h = Harness::new(Yama::Scope(1));
        let _ = h.on(line("PS"));
        let effects = h.on(Input::TargetExited {
            status: ExitStatus::Code(0),
        });
        assert_eq!(
            replies(&effects),
            vec![Reply::Error("target process 1000 is not running".into())]
        );
        assert_eq!(h.state(), Phase::Terminated { code: 0 });
    }
}

/// Drives a socket `GRANT_ACCESS CLIENT [CHILD] WAIT` (conn 2) to its request in thread 1.
fn waiting_grant(h: &mut Harness, process: Option<u32>) -> GrantId {
    let text = match process {
        Some(p) => format!("GRANT_ACCESS {CLIENT} {p} WAIT"),
        None => format!("GRANT_ACCESS {CLIENT} WAIT"),
    };
    let effects = h.on(line_from(&text, socket(2, ASKER)));
    if let Some(p) = process {
        assert_eq!(effects, vec![Effect::InspectProcess { pid: p }]);
        let effects = h.on(input_named("process_in_tree"));
        assert_eq!(
            effects,
            vec![Effect::InspectClient {
                pid: CLIENT,
                asker: Some(ASKER)
            }]
        );
    }
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running_as(Kinship::Descendant),
    });
    let grant = effects
        .iter()
        .find_map(|e| {
            if let Effect::Deliver { grant, .. } = e {
                Some(*grant)
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no delivery in {effects:?}"));
    h.on(delivered(grant, DeliveryFact::Scheduled { tid: 1 }));
    grant
}

#[test]
fn a_waiting_grant_never_times_out_and_says_how_it_goes_every_second() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = waiting_grant(&mut h, None);
    // The first WAITING line half a second after the request, then one a second.
    assert_eq!(
        h.poll_timeout(),
        Some(20),
        "the delivery's own survey comes first"
    );
    let mut progress = Vec::new();
    for now in (10..=10_000).step_by(10) {
        for effect in h.at(now, Input::DeadlineReached) {
            match effect {
                Effect::Reply {
                    reply: Reply::Waiting(text),
                    to: ReplyTo::Socket { conn: 2 },
                } => progress.push((now, text)),
                Effect::Reply { reply, .. } => panic!("a final reply {reply:?} at {now} ms"),
                Effect::Deliver {
                    action: DeliveryAction::Survey { tid },
                    ..
                } => {
                    h.on(delivered(
                        grant,
                        DeliveryFact::Surveyed {
                            request: RequestSeen::Pending,
                            threads: vec![thread(tid, true, 'S', Some("hrtimer_nanosleep"))],
                        },
                    ));
                }
                Effect::Deliver { .. }
                | Effect::InspectClient { .. }
                | Effect::InspectProcess { .. }
                | Effect::AimGrant { .. }
                | Effect::ForgetGrant { .. }
                | Effect::WatchClient { .. }
                | Effect::SignalTarget { .. }
                | Effect::StopTree { .. }
                | Effect::RemovePipes
                | Effect::ListTree
                | Effect::ReadStacks { .. }
                | Effect::ReadTasks { .. }
                | Effect::Log { .. }
                | Effect::Exit { .. } => {}
            }
        }
    }
    let times: Vec<Millis> = progress.iter().map(|(at, _)| *at).collect();
    assert_eq!(times[..3], [500, 1500, 2500], "{progress:?}");
    assert_eq!(times.len(), 10, "{progress:?}");
    assert!(
        progress[2].1.starts_with(
            "2500 pid 1000 ran no Python code yet (threads: 1 (main) S in hrtimer_nanosleep)"
        ),
        "{progress:?}"
    );
    assert!(matches!(h.state(), Phase::Granting { .. }));
}

#[test]
fn a_hang_up_withdraws_a_waiting_grant_and_answers_nobody() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = waiting_grant(&mut h, None);
    let effects = h.at(700, Input::ConnectionClosed { conn: 2 });
    assert!(replies(&effects).is_empty(), "{effects:?}");
    assert!(
        effects.contains(&Effect::Deliver {
            grant,
            client: CLIENT,
            action: DeliveryAction::Withdraw { tid: 1 }
        }),
        "{effects:?}"
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Log { message } if message == "grant for pid 2000 cancelled after 700 ms: the client hung up")),
        "{effects:?}"
    );
    assert_eq!(h.state(), Phase::Idle);
    // The withdrawal's answer is a grant that is over: forgotten.
    let effects = h.on(delivered(grant, DeliveryFact::Withdrawn));
    assert_eq!(effects, vec![Effect::ForgetGrant { grant }]);
    // Another connection's hang-up changes nothing.
    assert!(h.on(Input::ConnectionClosed { conn: 9 }).is_empty());
}

#[test]
fn a_grant_taken_as_its_asker_hangs_up_is_taken_back_when_it_reports() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = waiting_grant(&mut h, None);
    h.on(delivered(grant, DeliveryFact::PickedUp));
    let effects = h.at(40, Input::ConnectionClosed { conn: 2 });
    assert!(replies(&effects).is_empty(), "{effects:?}");
    assert!(matches!(h.state(), Phase::Granting { .. }));
    let effects = h.at(45, Input::GrantRan { grant, errno: 0 });
    assert!(replies(&effects).is_empty(), "{effects:?}");
    assert!(
        effects.iter().any(|e| matches!(
            e,
            Effect::Deliver {
                client: 0,
                action: DeliveryAction::Schedule { .. },
                ..
            }
        )),
        "a revocation must begin: {effects:?}"
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Log { message } if message.ends_with("but its client hung up: taking it back"))),
        "{effects:?}"
    );
}

#[test]
fn a_grant_goes_into_a_process_of_the_tree_and_is_taken_back_there() {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = h.on(line_from(
        &format!("GRANT_ACCESS {CLIENT} {CHILD}"),
        socket(2, ASKER),
    ));
    assert_eq!(effects, vec![Effect::InspectProcess { pid: CHILD }]);
    h.on(input_named("process_in_tree"));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running_as(Kinship::Descendant),
    });
    let [Effect::AimGrant { grant, process }, Effect::Deliver {
        grant: delivered_grant,
        client,
        ..
    }] = effects.as_slice()
    else {
        panic!("expected the grant aimed at the child, then delivered: {effects:?}");
    };
    assert_eq!((*process, *client, delivered_grant), (CHILD, CLIENT, grant));
    let grant = *grant;
    h.on(delivered(grant, DeliveryFact::Scheduled { tid: 7 }));
    let effects = h.on(Input::GrantRan { grant, errno: 0 });
    assert_eq!(replies(&effects), vec![Reply::Ready]);
    // Given back: the revocation goes into the same process.
    let effects = h.at(
        100,
        line_from(&format!("REVOKE_ACCESS {CLIENT}"), socket(3, ASKER)),
    );
    assert!(
        matches!(
            effects.as_slice(),
            [
                Effect::Reply {
                    reply: Reply::Ready,
                    ..
                },
                Effect::AimGrant { process: CHILD, .. },
                Effect::Deliver { client: 0, .. }
            ]
        ),
        "{effects:?}"
    );
}

#[rstest]
#[case::a_grandchild(vec![CHILD + 1, TARGET, KEEPER, 1], true)]
#[case::an_orphan_the_keeper_took(vec![KEEPER, 1], true)]
#[case::a_stranger(vec![77, 1], false)]
fn only_processes_of_the_tree_may_declare(#[case] ancestry: Vec<u32>, #[case] in_tree: bool) {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line_from(
        &format!("GRANT_ACCESS {CLIENT} {CHILD}"),
        socket(2, ASKER),
    ));
    let effects = h.on(Input::ProcessInspected {
        pid: CHILD,
        facts: ProcessFacts::Running { ancestry },
    });
    if in_tree {
        assert!(
            matches!(effects.as_slice(), [Effect::InspectClient { .. }]),
            "{effects:?}"
        );
    } else {
        assert_eq!(
            error_text(&effects),
            format!("pid {CHILD} is not in the supervised tree (target {TARGET}; heli-client ps lists it)")
        );
        assert_eq!(h.state(), Phase::Idle);
    }
}

#[test]
fn the_keeper_itself_and_a_gone_process_are_refused() {
    for (pid, facts, why) in [
        (
            KEEPER,
            ProcessFacts::Running { ancestry: vec![1] },
            format!("pid {KEEPER} is not in the supervised tree"),
        ),
        (
            CHILD,
            ProcessFacts::NotRunning,
            format!("pid {CHILD} is not a running process"),
        ),
    ] {
        let mut h = Harness::new(Yama::Scope(1));
        h.on(line_from(
            &format!("GRANT_ACCESS {CLIENT} {pid}"),
            socket(2, ASKER),
        ));
        let message = error_text(&h.on(Input::ProcessInspected { pid, facts }));
        assert!(message.starts_with(&why), "{message}");
    }
    let mut h = Harness::new(Yama::Scope(1));
    assert_eq!(
        error_text(&h.on(line_from(
            &format!("GRANT_ACCESS {CHILD} {CHILD}"),
            socket(2, ASKER)
        ))),
        format!("pid {CHILD} is the process it asks access to")
    );
}

#[test]
fn a_second_client_is_told_whose_session_is_open_and_since_when() {
    let mut config = config(Yama::Scope(1));
    // 2026-12-01 10:00:00 UTC, an hour ahead locally.
    config.clock = Some(WallClock {
        started_unix_ms: 1_796_119_200_000,
        utc_offset_s: 3600,
    });
    let mut h = Harness::with(config);
    h.at(0, input_named("socket_grant"));
    h.on(input_named("inspected_descendant"));
    h.on(delivered(1, DeliveryFact::Scheduled { tid: 1 }));
    h.at(5_000, Input::GrantRan { grant: 1, errno: 0 });
    let message = error_text(&h.at(125_000, input_named("other_asker_grant")));
    assert_eq!(
        message,
        "a debugger session is already attached (client pid 2000, since 11:00:05 (2m ago)); it ends when that client detaches or exits"
    );
    assert_eq!(h.state(), attached(CLIENT));
    // The same asker (the client that holds it) is not refused.
    assert_eq!(
        h.on(input_named("socket_grant")),
        vec![Effect::InspectClient {
            pid: CLIENT,
            asker: Some(ASKER)
        }]
    );
}

#[test]
fn wait_needs_the_socket_and_lines_do_not_queue_behind_a_waiting_grant() {
    let mut h = Harness::new(Yama::Scope(1));
    assert!(
        error_text(&h.on(line(&format!("GRANT_ACCESS {CLIENT} WAIT"))))
            .starts_with("WAIT needs the control socket")
    );
    waiting_grant(&mut h, None);
    // Answered at once, not after a grant that may wait for minutes.
    assert_eq!(
        replies(&h.on(line("GET_TARGET_PID"))),
        vec![Reply::TargetPid(TARGET)]
    );
    assert!(error_text(&h.on(input_named("other_asker_grant")))
        .starts_with("another attach is waiting for pid 1000 (client pid 2000, since "));
    // A FIFO grant waits its turn, and so does every FIFO line after it.
    assert!(h.on(line("GRANT_ACCESS 3000")).is_empty());
    assert!(h.on(line("GET_TARGET_PID")).is_empty());
}

#[test]
fn a_target_held_by_its_own_debugger_is_refused_at_once_and_named() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running(UID),
    });
    let at = crate::core::stacks::Frame {
        filename: "/srv/app.py".into(),
        line: Some(12),
        function: "handle".into(),
    };
    let effects = h.on(delivered(
        1,
        DeliveryFact::NotScheduled {
            failure: InjectFailure::HeldByDebugger {
                tid: 1000,
                at,
                detail: "thread 1000 is stopped in its own debugger".into(),
            },
        },
    ));
    assert_eq!(
        error_text(&effects),
        "a debugger session is already attached to pid 1000: its own (breakpoint() at /srv/app.py:12 in handle, thread 1000), waiting for an answer on its stdin; answer or continue it there, then attach"
    );
    assert!(effects.contains(&Effect::ForgetGrant { grant: 1 }));
    assert_eq!(
        h.state(),
        Phase::Idle,
        "nothing was written: nothing to wait for"
    );
}

#[test]
fn progress_names_a_thread_held_by_its_own_debugger() {
    let frame = |line| crate::core::stacks::Frame {
        filename: "/srv/app.py".into(),
        line: Some(line),
        function: "handle".into(),
    };
    let mut held = thread(7, true, 'S', Some("pipe_read"));
    held.frame = Some(frame(40));
    held.held_by_debugger_at = Some(frame(12));
    let threads = [held, thread(8, false, 'R', None)];
    assert_eq!(
        crate::core::delivery::describe_threads(&threads),
        "7 (main) S in pipe_read at app.py:40 handle, 8 R"
    );
    assert_eq!(
        crate::core::delivery::held_by_debugger(&threads).as_deref(),
        Some("thread 7 is stopped in a debugger of its own (breakpoint() at app.py:12 handle), waiting for an answer on the target's stdin")
    );
}
