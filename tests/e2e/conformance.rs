//! heli-conformance against real controllers: ours in both dialects (every case passes,
//! with the built-in cases, run from a directory that holds no fixtures) and a
//! deliberately broken one (the suite fails and names the case).
use crate::support::*;
use helicopter_parent::cli::exit::ToolExit;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance")
}

/// Runs heli-conformance with `args`; returns (exit code, stdout lines, stderr).
fn conformance(args: &[&str]) -> (i32, Vec<String>, String) {
    conformance_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Runs heli-conformance in the working directory `cwd`.
fn conformance_in(cwd: &Path, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut child = KillOnDrop(Some(
        Command::new(bin("heli-conformance"))
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heli-conformance"),
    ));
    let running = child.0.as_mut().unwrap();
    let mut out = Lines::spawn(running.stdout.take().unwrap());
    let mut err = Lines::spawn(running.stderr.take().unwrap());
    let status = wait_with_deadline(running, Duration::from_secs(300));
    child.0 = None;
    let out = out.drain().to_vec();
    let err = err.drain().join("\n");
    (status.code().unwrap_or(-1), out, err)
}

fn our_controller(dialect: &str) -> String {
    format!(
        "'{}' --dialect {dialect} --pipe-dir {{pipe_dir}} --python {{python}} {{target}}",
        bin("heli-controller").display()
    )
}

/// The number of cases in the fixture files, counted here from the JSON itself rather
/// than by the suite's own loader, so that a loader that drops cases cannot hide it.
fn case_count() -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(cases_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let file: serde_json::Value = serde_json::from_str(&text).unwrap();
            count += file["cases"].as_array().expect("a cases array").len();
        }
    }
    count
}

/// Runs the built-in cases (no `--cases`) from an empty directory: the binary needs
/// nothing from the source tree.
fn check_all_pass(dialect: &str, seed_only: usize) {
    let template = our_controller(dialect);
    let python = python().to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, lines, stderr) = conformance_in(
        elsewhere.path(),
        &[
            "--controller",
            &template,
            "--dialect",
            dialect,
            "--python",
            python,
            "--verbose",
        ],
    );
    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failures.is_empty(), "{failures:#?}\n{lines:#?}\n{stderr}");
    let run = case_count() - seed_only;
    assert_eq!(
        lines.last().map(String::as_str),
        Some(format!("{run} passed, 0 failed").as_str()),
        "{lines:#?}\n{stderr}"
    );
    assert_eq!(code, i32::from(ToolExit::Ok.code()), "{lines:#?}\n{stderr}");
}

#[test]
fn our_controller_passes_every_case_in_the_seed_dialect() {
    check_all_pass("seed", 0);
}

#[test]
fn our_controller_passes_every_case_in_the_legacy_dialect() {
    // commands_in_any_case is seed-only: the legacy dialect refuses upper-case words.
    check_all_pass("legacy", 1);
}

/// A broken controller that answers every line with READY. It holds `control` open
/// read-write from before it serves, like a correct controller, so that the only thing
/// wrong with it is its replies (a `while read ... < control` loop would reopen `control`
/// after every client and leave a window with no reader, a different failure).
const ALWAYS_READY: &str = r#"sh -c 'mkdir -p "$0" && mkfifo "$0/control" "$0/response" && exec 3<>"$0/control" && while IFS= read -r line <&3; do echo READY > "$0/response"; done' {pipe_dir} {target}"#;

#[rstest::rstest]
#[case::reply_to_bad_pid(
    "pid_zero",
    r#"FAIL pid_zero: expected "ERROR: {any}", got "READY" (at step 1 send "GRANT_ACCESS 0")"#
)]
// Deterministic cases only: a no-reply check ("empty line gets no reply within 500 ms")
// against a slow shell one-liner may see its wrong reply arrive after the window.
#[case::wrong_reply_word(
    "get_target_pid",
    r#"FAIL get_target_pid: expected "TARGET_PID {target_pid}", got "READY" (the suite found no process running "#
)]
fn a_wrong_reply_fails_the_case_by_name(#[case] case: &str, #[case] failure: &str) {
    let cases = cases_dir();
    let (code, lines, stderr) = conformance(&[
        "--controller",
        ALWAYS_READY,
        "--cases",
        cases.to_str().unwrap(),
        "--only",
        case,
    ]);
    assert_eq!(lines.len(), 2, "{lines:?}\n{stderr}");
    assert!(lines[0].starts_with(failure), "{lines:?}\n{stderr}");
    assert_eq!(lines[1], "0 passed, 1 failed");
    assert_eq!(code, i32::from(ToolExit::Failed.code()));
}

#[test]
fn a_controller_that_never_serves_fails_every_case_without_hanging() {
    let cases = cases_dir();
    let (code, lines, _) = conformance(&[
        "--controller",
        r#"sh -c 'exec sleep 3600' {pipe_dir} {target}"#,
        "--cases",
        cases.to_str().unwrap(),
        "--only",
        "get_target_pid",
        "--startup-timeout",
        "300",
    ]);
    assert_eq!(code, i32::from(ToolExit::Failed.code()));
    assert!(
        lines[0].starts_with("FAIL get_target_pid: expected the controller to serve ")
            && lines[0].contains("within 300 ms, got no reader on its control pipe"),
        "{lines:#?}"
    );
    assert_eq!(lines.last().unwrap(), "0 passed, 1 failed");
}

#[test]
fn a_bad_case_file_is_refused_with_its_name_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.json"),
        r#"{ "target": "../counter.py", "cases": [ { "name": "x", "steps": [ { "send": "GET_TARGET_PID", "expect": "TARGET_PID {pid}" } ] } ] }"#,
    )
    .unwrap();
    let (code, lines, stderr) = conformance(&[
        "--controller",
        "ctl {pipe_dir} {target}",
        "--cases",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, i32::from(ToolExit::Usage.code()));
    assert!(lines.is_empty(), "{lines:?}");
    let expected = format!(
        "heli-conformance: case file error: {}: case 'x': step 1: expect: unknown placeholder {{pid}}",
        dir.path().join("broken.json").display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}
