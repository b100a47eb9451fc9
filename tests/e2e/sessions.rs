//! Recorded real sessions (`tests/fixtures/sessions/*.jsonl`): each replays through the
//! core with every effect matching the recording, and its transcript is snapshot-tested.
//! `just record-sessions` records them again by running the real controller.
use crate::support::*;
use helicopter_parent::cli::exit::ToolExit;
use helicopter_parent::core::client::ClientExit;
use helicopter_parent::core::journal::replay;
use std::path::PathBuf;

fn sessions_dir() -> PathBuf {
    fixture("sessions")
}

#[test]
fn recorded_sessions_replay_clean_and_match_their_transcripts() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(sessions_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            names.push(path);
        }
    }
    names.sort();
    assert!(
        names.len() >= 6,
        "expected the recorded sessions, found {names:?}"
    );
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let done = replay(&text, true).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, done.session.transcript());
    }
}

#[test]
fn heli_replay_check_reports_a_divergence_with_both_sides() {
    let text = std::fs::read_to_string(sessions_dir().join("terminate.jsonl")).unwrap();
    let tampered = text.replacen(
        r#""reply":"ready""#,
        r#""reply":"error","value":"tampered""#,
        1,
    );
    assert_ne!(
        tampered, text,
        "the fixture has a READY reply to tamper with"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tampered.jsonl");
    std::fs::write(&path, tampered).unwrap();
    let out = output_within(
        std::process::Command::new(bin("heli-replay"))
            .arg("--check")
            .arg(&path),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(i32::from(ToolExit::Failed.code())));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replay diverged")
            && err.contains("recorded:")
            && err.contains("ERROR: tampered"),
        "{err}"
    );
    let ok = output_within(
        std::process::Command::new(bin("heli-replay"))
            .arg("--check")
            .arg(sessions_dir().join("terminate.jsonl")),
        TIMEOUT,
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Records one session: starts the controller with a journal on `script` (a fixture,
/// then its arguments, separated by spaces), runs `drive`, waits for
/// the controller to end, and copies the journal into the fixtures. With
/// `HELI_RECORD_ONLY=NAME` only that session is recorded (the others stay as they are).
fn record(name: &str, script: &str, extra: &[&str], drive: impl FnOnce(&mut Controller)) {
    if std::env::var("HELI_RECORD_ONLY").is_ok_and(|only| only != name) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal.jsonl");
    let journal_arg = journal.to_str().unwrap().to_string();
    let mut args = vec!["--journal", journal_arg.as_str()];
    args.extend_from_slice(extra);
    let mut words = script.split(' ');
    let script = words.next().unwrap_or_default();
    let script_args: Vec<&str> = words.collect();
    let mut controller = Controller::start_args(&args, script, &script_args);
    drive(&mut controller);
    controller.wait();
    std::fs::copy(&journal, sessions_dir().join(format!("{name}.jsonl"))).unwrap();
}

#[test]
#[ignore = "records tests/fixtures/sessions again; run with `just record-sessions`"]
fn record_sessions() {
    std::fs::create_dir_all(sessions_dir()).unwrap();
    record("seed_two_cycles", "counter.py", &[], |c| {
        let (code, out) = c.client("attach\np counter\nq\nattach\np counter\nq\nterminate\n");
        assert_eq!(code, ClientExit::Ok.code(), "{out}");
    });
    record("bad_inputs", "counter.py", &[], |c| {
        let dead = reaped_pid();
        for line in [
            "FLY_AWAY",
            "GRANT_ACCESS",
            "GRANT_ACCESS 1 2 3",
            "GET_TARGET_PID x",
            "GRANT_ACCESS abc",
            "GRANT_ACCESS 0",
            "GRANT_ACCESS -1",
            "GRANT_ACCESS +7",
            "GRANT_ACCESS 1_000",
            "GRANT_ACCESS 99999999",
            &format!("GRANT_ACCESS {dead}"),
            "   ",
        ] {
            c.send(line);
        }
        raw(c, b"GRANT_ACCESS \xff\n", 1);
        raw(c, &[[b'A'; 2000].as_slice(), b"\n"].concat(), 1);
        raw(c, b"get_target_pid\nGET_TARGET_PID", 2);
        assert_eq!(c.send("TERMINATE"), "READY");
    });
    record(
        "grant_timeout",
        "stuck_in_c.py",
        &["--no-wake", "--grant-timeout", "300"],
        |c| {
            c.stdout.wait_for("sleeping in C");
            wait_until_asleep(c.target_pid as i32, c.target_pid as i32);
            let reply = c.send(&format!("GRANT_ACCESS {}", std::process::id()));
            assert!(reply.starts_with("ERROR: timed out"), "{reply}");
            assert_eq!(c.send("TERMINATE"), "READY");
        },
    );
    record("target_crash", "exit_on_request.py", &[], |c| {
        c.send("GET_TARGET_PID");
        std::fs::write(c.dir.join("../exit-now"), "abort").unwrap();
    });
    record("terminate", "counter.py", &[], |c| {
        c.send("GET_TARGET_PID");
        assert_eq!(c.send("TERMINATE"), "READY");
    });
    record("yama_absent_grant", "blocked_main.py", &[], |c| {
        c.stdout.wait_for("main thread blocking in join");
        assert_eq!(
            c.send(&format!("GRANT_ACCESS {}", std::process::id())),
            "READY"
        );
        c.signal(libc::SIGTERM);
    });
    record("socket_requests", "counter.py", &[], |c| {
        use helicopter_parent::io::socket_exchange::exchange_socket_raw;
        c.stdout.wait_for("counter ready");
        let ask = |line: &str| {
            exchange_socket_raw(&c.dir, line, std::time::Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"))
        };
        assert!(ask("GET_TARGET_PID").starts_with("TARGET_PID "));
        assert_eq!(
            ask(&format!("GRANT_ACCESS {}", std::process::id())),
            "READY"
        );
        // Our parent (cargo, a shell) is not our descendant: refused.
        let parent = unsafe { libc::getppid() };
        let reply = ask(&format!("GRANT_ACCESS {parent}"));
        assert!(reply.contains("is neither the asker"), "{reply}");
        assert!(c.send("GET_TARGET_PID").starts_with("TARGET_PID "));
        assert_eq!(ask("TERMINATE"), "READY");
    });
    // The tree's questions (issue 11): their listings and readings are journaled as
    // inputs, so the replies replay without /proc.
    record("tree_questions", "counter.py", &[], |c| {
        c.stdout.wait_for("counter ready");
        assert!(c.send("PS").starts_with("PROCESSES {"));
        assert!(c
            .send("STACK 1")
            .starts_with("ERROR: pid 1 is not in the supervised tree"));
        c.send(&format!("STACK {}", c.target_pid));
        c.send("STACK ALL");
        c.send(&format!("TASKS {}", c.target_pid));
        assert_eq!(c.send("TERMINATE"), "READY");
    });
    // Issues 10 and 11: a waiting grant into a child of the target that cannot run it
    // (a fresh interpreter asleep), its progress lines, the client hanging up; a pid
    // outside the tree.
    record(
        "waiting_grant_in_a_child",
        "spawned_child.py sleeps",
        &["--no-wake"],
        |c| {
            use helicopter_parent::io::socket_exchange::exchange_socket_raw;
            use std::io::{BufRead, BufReader, Write};
            let line = c.stdout.wait_for(" ready");
            let child: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            let me = std::process::id();
            let mut stream =
                std::os::unix::net::UnixStream::connect(c.dir.join("control.sock")).unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            stream
                .write_all(format!("GRANT_ACCESS {me} {child} WAIT\n").as_bytes())
                .unwrap();
            let mut progress = String::new();
            BufReader::new(&stream).read_line(&mut progress).unwrap();
            assert!(progress.starts_with("WAITING "), "{progress}");
            drop(stream);
            c.stderr.wait_for("cancelled after");
            let parent = unsafe { libc::getppid() };
            let reply = exchange_socket_raw(
                &c.dir,
                &format!("GRANT_ACCESS {me} {parent}"),
                std::time::Duration::from_secs(10),
            )
            .unwrap();
            assert!(reply.contains("is not in the supervised tree"), "{reply}");
            assert_eq!(c.send("TERMINATE"), "READY");
        },
    );
}

#[test]
fn every_session_snapshot_belongs_to_a_recorded_session() {
    // A fixture removed or renamed must not leave its snapshot behind.
    let snapshots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/snapshots");
    for entry in std::fs::read_dir(snapshots).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(session) = name
            .strip_prefix("e2e__sessions__")
            .and_then(|n| n.strip_suffix(".snap"))
        {
            let fixture = sessions_dir().join(format!("{session}.jsonl"));
            assert!(
                fixture.exists(),
                "snapshot {name} has no session {}",
                fixture.display()
            );
        } else {
            panic!("unexpected file in tests/e2e/snapshots: {name} (a stray .snap.new?)");
        }
    }
}
