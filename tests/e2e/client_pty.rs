//! The client on a terminal: what happens to pdb and the target when the client vanishes.
use crate::support::*;
use std::time::Duration;

/// The last number pdb printed on the screen (the answer to `p NAME`).
fn printed_number(screen: &str) -> u64 {
    screen
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no number on the screen:\n{screen}"))
}

/// Issue 9, defect 7: kill -9 of a client at a `(Pdb)` prompt left its pdb holding the
/// target stopped. pdb must end with its client, and the target run Python again.
#[test]
fn issue9_pdb_does_not_outlive_a_killed_client_and_the_target_runs_again() {
    let mut controller = Controller::start("ticking.py");
    let mut term = PtyClient::start_under_shell(&controller.dir);
    term.wait_for(">>> ");
    term.type_text("attach\n");
    term.wait_for("(Pdb) ");
    let pdb = match children_of(term.pid()).as_slice() {
        [pdb] => Watched::new(*pdb),
        other => panic!("expected pdb as the client's one child, found {other:?}"),
    };
    // The target is stopped in pdb: its tick counter is fixed at the value pdb shows.
    term.mark();
    term.type_text("p tick\n");
    term.wait_for("(Pdb) ");
    let stopped_at = printed_number(term.screen.trim_end_matches("(Pdb) "));

    let client = Watched::new(term.pid());
    // SAFETY: kill by pidfd: the client cannot have been replaced by another process.
    client.kill();
    assert!(
        client.ends_within(TIMEOUT),
        "SIGKILL did not end the client"
    );
    assert!(
        pdb.ends_within(Duration::from_secs(10)),
        "pdb {} still runs 10 s after its client was killed",
        pdb.pid
    );
    // Running Python again: the next tick comes.
    controller
        .stdout
        .wait_for(&format!("tick {}", stopped_at + 1));
    assert!(is_alive(controller.target_pid));
}
