//! What the fuzzer found, as plain regression tests named after the finding. They fail
//! on the current core, so they are ignored until it is fixed; then drop the `ignore`
//! and the matching tolerance in `core.rs` (or run the fuzzer with `FUZZ_STRICT=1`).
use helicopter_parent::core::supervisor::{Config, Effect, ExitStatus, Input, Supervisor, Yama};
use helicopter_parent::core::wire::Frame;

fn line(text: &str) -> Input {
    Input::LineReceived {
        frame: Frame::Text {
            text: text.into(),
            terminated: true,
        },
    }
}

fn replies(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { reply } => Some(reply.to_string()),
            _ => None,
        })
        .collect()
}

/// Finding 1: a blank line that waits behind a grant is answered when the session ends
/// (`Supervisor::terminate` replies to every queued frame), although a blank line never
/// gets a reply otherwise: the extra `ERROR:` would be read by the next client as its own.
#[test]
fn finding_1_blank_line_queued_behind_a_grant_gets_no_reply_at_the_end() {
    let mut sup = Supervisor::new(Config::new(4242, 1000, Yama::Scope(1)));
    assert!(matches!(
        &sup.handle(0, line("GRANT_ACCESS 1234"))[..],
        [Effect::InspectClient { pid: 1234 }]
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
    let mut sup = Supervisor::new(Config::new(4242, 0, Yama::Scope(1)));
    let effects = sup.handle(0, line("GRANT_ACCESS 1"));
    assert!(
        matches!(&effects[..], [Effect::Reply { .. }])
            && replies(&effects)[0].starts_with("ERROR:"),
        "{effects:?}"
    );
}
