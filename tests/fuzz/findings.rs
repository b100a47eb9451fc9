//! What the fuzzer found, as plain regression tests named after the finding. All four
//! are fixed in the core, and the fuzzer tolerates none of them. A new finding the core
//! has not fixed yet goes here as an ignored test until it is.
use helicopter_parent::core::delivery::{DeliveryAction, DeliveryFact};
use helicopter_parent::core::ptrace_policy::TracerPrivilege;
use helicopter_parent::core::supervisor::{
    ClientFacts, Config, Effect, ExitStatus, GrantId, Input, Origin, StopSignal, Supervisor, Yama,
};
use helicopter_parent::core::wire::{Frame, Reply};

const TARGET: u32 = 4242;
const UID: u32 = 1000;
const CLIENT: u32 = 2000;

fn line(text: &str) -> Input {
    Input::LineReceived {
        frame: Frame::Text {
            text: text.into(),
            terminated: true,
        },
        origin: Origin::Fifo,
    }
}

fn replies(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { reply, .. } => Some(reply.to_string()),
            _ => None,
        })
        .collect()
}

/// Finding 1: a blank line that waits behind a grant is answered when the session ends
/// (`Supervisor::terminate` replies to every queued frame), although a blank line never
/// gets a reply otherwise: the extra `ERROR:` would be read by the next client as its own.
#[test]
fn finding_1_blank_line_queued_behind_a_grant_gets_no_reply_at_the_end() {
    let mut sup = Supervisor::new(Config::new(TARGET, UID, Yama::Scope(1)));
    assert!(matches!(
        &sup.handle(0, line("GRANT_ACCESS 1234"))[..],
        [Effect::InspectClient {
            pid: 1234,
            asker: None
        }]
    ));
    assert!(
        sup.handle(0, line("")).is_empty(),
        "queued behind the grant"
    );
    let effects = sup.handle(
        5,
        Input::TargetExited {
            status: ExitStatus::Code(0),
        },
    );
    // One line asked something (the grant): one reply.
    assert_eq!(replies(&effects), ["ERROR: target process 4242 exited"]);
}

/// Finding 2: `GRANT_ACCESS 1` is taken as a client, so a controller running as root (or
/// in a container whose init runs as the user) has the target declare init its ptracer
/// (or answers READY to it); pid 1 is never a debugger client.
#[test]
fn finding_2_grant_access_1_is_refused() {
    let mut sup = Supervisor::new(Config::new(TARGET, 0, Yama::Scope(1)));
    let effects = sup.handle(0, line("GRANT_ACCESS 1"));
    assert!(
        matches!(&effects[..], [Effect::Reply { .. }])
            && replies(&effects)[0].starts_with("ERROR:"),
        "{effects:?}"
    );
}

/// A supervisor at time 10 in which `CLIENT` holds the grant, and its READY.
fn attached() -> Supervisor {
    let mut sup = Supervisor::new(Config::new(TARGET, UID, Yama::Scope(1)));
    let _ = sup.handle(0, line(&format!("GRANT_ACCESS {CLIENT}")));
    let effects = sup.handle(
        1,
        Input::ClientInspected {
            pid: CLIENT,
            facts: ClientFacts::Running {
                uid: UID,
                exe: None,
                privilege: TracerPrivilege::Ordinary,
                kinship: None,
            },
        },
    );
    let Some(&Effect::Deliver { grant, .. }) = effects.first() else {
        panic!("expected the grant's delivery, got {effects:?}");
    };
    let _ = sup.handle(
        2,
        Input::Delivery {
            grant,
            fact: DeliveryFact::Scheduled { tid: 1 },
        },
    );
    let effects = sup.handle(10, Input::GrantRan { grant, errno: 0 });
    assert_eq!(replies(&effects), ["READY"]);
    sup
}

/// The client gives its grant back: READY at once, and the revocation's first step.
fn revoking(sup: &mut Supervisor) -> GrantId {
    let effects = sup.handle(20, line(&format!("REVOKE_ACCESS {CLIENT}")));
    assert_eq!(replies(&effects), ["READY"]);
    match effects.last() {
        Some(&Effect::Deliver {
            grant, client: 0, ..
        }) => grant,
        _ => panic!("expected a revocation (pid 0), got {effects:?}"),
    }
}

/// Finding 3: a revocation's first delivery step named pid 0 (the target declares
/// nobody), but every later step (survey, move, retry, withdraw) named the holder: the
/// core built them from `grant.client` (`on_delivery_fact`, `on_grant_deadline`,
/// `abandon_grant`) instead of `Grant::declared()`. The edge writes a grant's script once,
/// at its first step, so the target still ran prctl(PR_SET_PTRACER, 0); but the effect
/// said "prctl(PR_SET_PTRACER, holder)", the journal recorded that, and an edge that
/// (re)wrote the script at a later step (the first one failed before the script was made)
/// would have declared the holder again instead of taking its grant back.
#[test]
fn finding_3_every_step_of_a_revocation_names_pid_0() {
    let mut sup = attached();
    let revoke = revoking(&mut sup);
    let effects = sup.handle(
        21,
        Input::Delivery {
            grant: revoke,
            fact: DeliveryFact::Scheduled { tid: 1 },
        },
    );
    assert!(effects.is_empty(), "{effects:?}");
    // Not taken yet when the survey is due: the core asks for a survey of the request.
    let at = sup.poll_timeout().expect("the survey is due");
    let effects = sup.handle(at, Input::DeadlineReached);
    let steps: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { client, action, .. } => Some((*client, action.clone())),
            _ => None,
        })
        .collect();
    assert!(
        matches!(steps[..], [(_, DeliveryAction::Survey { .. })]),
        "{effects:?}"
    );
    assert_eq!(steps[0].0, 0, "the survey of a revocation: {effects:?}");
}

/// Finding 4: when the controller stopped (a signal, its adapters gone) or the target
/// exited while a revocation was in flight, the core answered the revocation with
/// `ERROR:` as if a line waited for it. None does: REVOKE_ACCESS is answered READY when
/// the revocation begins, and an exit or an expiry has no line at all. The extra reply on
/// the shared response pipe would be read by the next client as the answer to its own
/// line, and that client's real answer left for the one after it.
#[test]
fn finding_4_a_revocation_cut_short_gets_no_reply() {
    for end in [
        Input::SignalReceived {
            signal: StopSignal::Terminate,
            by_kernel: false,
        },
        Input::AdaptersGone,
        Input::TargetExited {
            status: ExitStatus::Code(0),
        },
    ] {
        let mut sup = attached();
        revoking(&mut sup);
        let effects = sup.handle(30, end.clone());
        assert_eq!(
            replies(&effects),
            Vec::<String>::new(),
            "{end}: {effects:?}"
        );
    }
    // The same for a revocation nobody asked for: the holder's exit.
    let mut sup = attached();
    let effects = sup.handle(20, Input::ClientExited { pid: CLIENT });
    assert!(
        matches!(effects.last(), Some(Effect::Deliver { client: 0, .. })),
        "{effects:?}"
    );
    let effects = sup.handle(30, Input::AdaptersGone);
    assert_eq!(replies(&effects), Vec::<String>::new(), "{effects:?}");
}

/// What the revocation findings do not cover: a REVOKE_ACCESS that came during the
/// revocation is answered (once) after it, and the revocation's own READY was the
/// answer to the line that asked for it. Passes on the current core.
#[test]
fn a_revoke_access_queued_behind_a_revocation_gets_one_reply() {
    let mut sup = attached();
    let revoke = revoking(&mut sup);
    assert!(sup
        .handle(21, line(&format!("REVOKE_ACCESS {CLIENT}")))
        .is_empty());
    let effects = sup.handle(
        22,
        Input::GrantRan {
            grant: revoke,
            errno: 0,
        },
    );
    assert_eq!(
        replies(&effects),
        [Reply::Error(format!("pid {CLIENT} holds no grant")).to_string()]
    );
}
