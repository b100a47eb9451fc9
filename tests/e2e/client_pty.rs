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

/// Issue 13: at the `>>>` prompt on a terminal, lines are edited, history is searched
/// with Ctrl-R and kept across sessions in the user's state directory, `q` quits, and a
/// typo no longer fails the session.
/// What the line editor writes as it enters raw mode (bracketed paste on).
const EDITOR_READY: &str = "\x1b[?2004h";

#[test]
fn issue13_the_prompt_edits_lines_and_keeps_history_across_sessions() {
    let controller = Controller::start("counter.py");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let envs = [("TERM", "xterm"), ("XDG_STATE_HOME", state_dir)];

    let mut term = PtyClient::start(&controller.dir, &envs);
    term.wait_for(">>> ");
    term.type_text("\x03"); // Ctrl-C at the prompt: not the end of the client
    term.wait_for("Interrupted (type 'quit' to exit)");
    term.type_text("hlep\r");
    term.mark_after("Unknown command: hlep");
    // Keys wait for the editor's raw mode (it turns bracketed paste on as it enters it):
    // an escape sequence typed while the terminal is still cooked would be echoed as text.
    term.mark_after(EDITOR_READY);
    // Up brings the typo back; three backspaces and "elp" make it `help`.
    term.type_text("\x1b[A\x7f\x7f\x7felp\r");
    term.mark_after("Available commands:");
    term.mark_after(EDITOR_READY);
    term.type_text("\x04"); // Ctrl-D on an empty line: the end of input
    term.wait_for("Goodbye!");
    assert_eq!(term.wait(), Some(0), "a typo must not fail the session");
    let history = std::fs::read_to_string(state.path().join("helicopter-parent/history"))
        .expect("history file in $XDG_STATE_HOME/helicopter-parent");
    assert!(
        history.lines().any(|l| l == "hlep") && history.lines().any(|l| l == "help"),
        "{history}"
    );

    // A new session finds the old one's lines with Ctrl-R.
    let mut term = PtyClient::start(&controller.dir, &envs);
    term.mark_after(EDITOR_READY);
    term.type_text("\x12hel");
    term.wait_for("help");
    term.mark();
    term.type_text("\r");
    term.mark_after("Available commands:");
    term.mark_after(EDITOR_READY);
    term.type_text("q\r");
    term.wait_for("Goodbye!");
    assert_eq!(term.wait(), Some(0));
}

/// With the line editor active, pdb still gets the terminal (the editor's raw mode is
/// off while pdb runs), and success lines are coloured unless NO_COLOR is set.
#[test]
fn issue13_pdb_gets_the_terminal_from_the_line_editor_and_colours_follow_no_color() {
    let controller = Controller::start("counter.py");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    for no_color in [None, Some("1")] {
        let mut envs = vec![("TERM", "xterm"), ("XDG_STATE_HOME", state_dir)];
        envs.extend(no_color.map(|v| ("NO_COLOR", v)));
        let mut term = PtyClient::start(&controller.dir, &envs);
        term.wait_for(">>> ");
        term.type_text("attach\r");
        term.wait_for("(Pdb) ");
        let granted_in_green = term.screen.contains("\x1b[32m✅ Permission granted\x1b[0m");
        assert_eq!(granted_in_green, no_color.is_none(), "{:?}", term.screen);
        term.mark();
        term.type_text("p 6 * 7\r");
        term.wait_for("42");
        term.type_text("q\r");
        term.wait_for("Debugger detached");
        term.wait_for(">>> ");
        term.type_text("quit\r");
        term.wait_for("Goodbye!");
        assert_eq!(term.wait(), Some(0));
        assert!(
            term.is_cooked(),
            "the line editor left the terminal in raw mode"
        );
    }
}

/// The line editor's raw mode is off while pdb runs: an interpreter given with --python
/// that only reports the terminal's mode sees it cooked (canonical input, echo).
#[test]
fn issue13_the_line_editor_hands_pdb_a_cooked_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let controller = Controller::start("counter.py");
    let tmp = tempfile::tempdir().unwrap();
    let reporter = tmp.path().join("report-tty");
    std::fs::write(
        &reporter,
        "#!/bin/sh\nif stty -a | grep -qw -e -icanon -e -echo; then echo TTY-RAW; else echo TTY-COOKED; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&reporter, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let envs = [
        ("TERM", "xterm"),
        ("XDG_STATE_HOME", state.path().to_str().unwrap()),
    ];
    let mut term = PtyClient::start_with(
        &controller.dir,
        &["--python", reporter.to_str().unwrap()],
        &envs,
    );
    term.wait_for(">>> ");
    term.type_text("attach\r");
    term.wait_for("Debugger detached");
    assert!(term.screen.contains("TTY-COOKED"), "{:?}", term.screen);
    term.type_text("q\r");
    term.wait_for("Goodbye!");
    assert_eq!(term.wait(), Some(0));
}
