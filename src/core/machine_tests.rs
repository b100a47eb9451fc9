//! Transition tests: a simulated clock drives the controller; nothing here touches the OS.
use super::journal::Session;
use super::machine::*;
use super::wire::{Dialect, Frame, Reply};
use rstest::rstest;

const TARGET: u32 = 1000;
const UID: u32 = 501;
const CLIENT: u32 = 2000;

fn config(yama: Yama) -> Config {
    Config::new(TARGET, UID, yama)
}

fn line(text: &str) -> Input {
    Input::LineReceived {
        frame: Frame::Text {
            text: text.into(),
            terminated: true,
        },
    }
}

fn running(uid: u32) -> ClientFacts {
    ClientFacts::Running {
        uid,
        exe: Some("/usr/bin/heli-client".into()),
    }
}

fn replies(effects: &[Effect]) -> Vec<Reply> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { reply } => Some(reply.clone()),
            _ => None,
        })
        .collect()
}

fn error_text(effects: &[Effect]) -> String {
    match replies(effects).as_slice() {
        [Reply::Error(msg)] => msg.clone(),
        other => panic!("expected one ERROR reply, got {other:?} from {effects:?}"),
    }
}

/// Given a controller, when inputs arrive at simulated times, then effects come out.
struct Harness {
    session: Session,
    now: Millis,
}

impl Harness {
    fn new(yama: Yama) -> Harness {
        Harness {
            session: Session::new(config(yama)),
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
    fn state(&self) -> String {
        self.session.controller().state_name()
    }
    /// Drives a grant for `client` up to the point where it sits in thread `tid`.
    fn grant_delivering(&mut self, client: u32, tid: i32) -> GrantId {
        let effects = self.on(line(&format!("GRANT_ACCESS {client}")));
        assert_eq!(effects, vec![Effect::InspectClient { pid: client }]);
        let effects = self.on(Input::ClientInspected {
            pid: client,
            facts: running(UID),
        });
        let [Effect::ScheduleGrant { grant, client: c }] = effects.as_slice() else {
            panic!("expected ScheduleGrant, got {effects:?}")
        };
        assert_eq!(*c, client);
        let grant = *grant;
        assert!(self.on(Input::GrantScheduled { grant, tid }).is_empty());
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
    assert_eq!(h.state(), "idle");
}

#[test]
fn grant_succeeds_when_the_target_reports_prctl_zero() {
    let mut h = Harness::new(Yama::Scope(1));
    let grant = h.grant_delivering(CLIENT, TARGET as i32);
    assert_eq!(h.state(), format!("granting(client {CLIENT})"));
    let effects = h.at(3, Input::GrantRan { grant, errno: 0 });
    assert_eq!(replies(&effects), vec![Reply::Ready]);
    assert_eq!(h.state(), format!("attached(client {CLIENT})"));
    assert_eq!(
        h.session.controller().poll_timeout(),
        None,
        "no timers while attached"
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
    assert_eq!(h.state(), "idle");
}

#[rstest]
#[case::not_running(ClientFacts::NotRunning, "is not a running process")]
#[case::other_user(ClientFacts::Running { uid: 0, exe: None }, "belongs to uid 0")]
fn inspected_client_problems_are_refused(#[case] facts: ClientFacts, #[case] expected: &str) {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected { pid: CLIENT, facts });
    assert!(error_text(&effects).contains(expected));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::ScheduleGrant { .. })),
        "never reaches prctl"
    );
    assert_eq!(h.state(), "idle");
}

#[rstest]
#[case::scope2(Yama::Scope(2), "no grant can help")]
#[case::scope3(Yama::Scope(3), "no grant can help")]
fn high_scopes_refuse_without_injecting(#[case] yama: Yama, #[case] expected: &str) {
    let mut h = Harness::new(yama);
    let effects = h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    assert!(error_text(&effects).contains(expected));
    assert_eq!(h.state(), "idle");
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
    let retarget_at = h.session.controller().poll_timeout().unwrap();
    assert_eq!(retarget_at, 20);
    assert_eq!(
        h.at(retarget_at, Input::DeadlineReached),
        vec![Effect::RetargetGrant { grant }]
    );
    assert!(h.on(Input::GrantMoved { grant, tid: 7 }).is_empty());
    assert_eq!(
        h.session.controller().poll_timeout(),
        Some(40),
        "looks again while not picked up"
    );
    assert_eq!(
        h.at(40, Input::DeadlineReached),
        vec![Effect::RetargetGrant { grant }]
    );
    let threads = "1 (main) S in hrtimer_nanosleep, 7 S in futex_wait".to_string();
    assert!(h
        .on(Input::GrantStayed {
            grant,
            threads: threads.clone()
        })
        .is_empty());
    assert_eq!(
        h.session.controller().poll_timeout(),
        Some(80),
        "backs off when nothing runs"
    );
    assert_eq!(
        h.at(80, Input::DeadlineReached),
        vec![Effect::RetargetGrant { grant }]
    );
    assert!(h
        .on(Input::GrantStayed {
            grant,
            threads: threads.clone()
        })
        .is_empty());
    assert_eq!(h.session.controller().poll_timeout(), Some(160));
    let effects = h.at(1500, Input::DeadlineReached);
    assert_eq!(effects[0], Effect::WithdrawGrant { grant });
    let message = error_text(&effects);
    assert!(
        message.contains("timed out after 1500 ms") && message.contains(&threads),
        "{message}"
    );
    assert_eq!(h.state(), "idle");
    // A late acknowledgement of the withdrawn grant is not taken for anything newer.
    let late = h.at(1600, Input::GrantRan { grant, errno: 0 });
    assert!(replies(&late).is_empty());
}

#[test]
fn a_transient_injection_failure_is_retried_until_the_deadline() {
    let mut h = Harness::new(Yama::Scope(1));
    h.on(line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = h.on(Input::ClientInspected {
        pid: CLIENT,
        facts: running(UID),
    });
    let [Effect::ScheduleGrant { grant, .. }] = effects.as_slice() else {
        panic!("{effects:?}")
    };
    let grant = *grant;
    let starting = "the interpreter is starting up".to_string();
    assert!(h
        .on(Input::GrantNotScheduled {
            grant,
            error: starting.clone(),
            transient: true
        })
        .is_empty());
    let retry_at = h.session.controller().poll_timeout().unwrap();
    assert_eq!(
        h.at(retry_at, Input::DeadlineReached),
        vec![Effect::ScheduleGrant {
            grant,
            client: CLIENT
        }]
    );
    assert!(h.on(Input::GrantScheduled { grant, tid: 1 }).is_empty());
    assert_eq!(
        replies(&h.on(Input::GrantRan { grant, errno: 0 })),
        vec![Reply::Ready]
    );
    // A permanent failure ends the grant at once.
    h.on(line("GRANT_ACCESS 3000"));
    h.on(Input::ClientInspected {
        pid: 3000,
        facts: running(UID),
    });
    let effects = h.on(Input::GrantNotScheduled {
        grant: 2,
        error: "remote debugging is disabled".into(),
        transient: false,
    });
    assert!(error_text(&effects)
        .contains("cannot inject the grant into the target: remote debugging is disabled"));
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
    assert_eq!(h.state(), format!("attached(client {CLIENT})"));
}

#[rstest]
#[case::requested(None, 0)]
#[case::sigterm(Some(StopSignal::Terminate), 143)]
#[case::sigint(Some(StopSignal::Interrupt), 130)]
#[case::sighup(Some(StopSignal::Hangup), 129)]
fn stopping_terms_then_kills_then_exits(#[case] signal: Option<StopSignal>, #[case] code: i32) {
    let mut h = Harness::new(Yama::Scope(1));
    let effects = match signal {
        None => h.on(line("TERMINATE")),
        Some(signal) => h.on(Input::SignalReceived { signal }),
    };
    assert!(effects.contains(&Effect::StopTarget { force: false }));
    assert_eq!(signal.is_none(), replies(&effects) == vec![Reply::Ready]);
    assert_eq!(h.state(), "stopping");
    assert!(error_text(&h.on(line("GET_TARGET_PID"))).contains("shutting down"));
    let kill_at = h.session.controller().poll_timeout().unwrap();
    assert_eq!(
        h.at(kill_at, Input::DeadlineReached).last(),
        Some(&Effect::StopTarget { force: true })
    );
    let effects = h.on(Input::TargetExited {
        status: ExitStatus::Signal(9),
    });
    assert_eq!(
        &effects[effects.len() - 2..],
        &[Effect::RemovePipes, Effect::Exit { code }]
    );
    assert!(h.session.controller().is_terminated());
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
    let mut controller = Controller::new(config);
    let effects = controller.handle(0, line("terminate"));
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
