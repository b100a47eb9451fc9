//! The case files: JSON data in `tests/fixtures/conformance/` (built into the binary by
//! `builtin.rs`), so a new case in an existing file needs no code.
//!
//! A file holds a group of cases and a default target script (relative to the file):
//!
//! ```json
//! { "target": "../counter.py",
//!   "cases": [
//!     { "name": "get_target_pid",
//!       "about": "why the case exists",
//!       "steps": [ { "send": "GET_TARGET_PID", "expect": "TARGET_PID {target_pid}", "silent_ms": 200 } ] } ] }
//! ```
//!
//! Steps (each object has exactly one of the step keys):
//! - `send` (a line; the newline is added) or `send_bytes` (a list of parts: text, `{"hex":
//!   "fffe"}`, `{"repeat": "A", "times": 2000}`; nothing is added), with `expect` (a
//!   pattern or a list, in order; `[]` for none), optional `expect_legacy` (replaces the
//!   mapped expectation in the legacy dialect), `silent_ms` (then no further reply for that
//!   long) and `within_ms` (deadline for the replies, default 5000).
//! - `signal_target`: `"SIGKILL"`; the pid comes from the controller's `TARGET_PID` reply.
//! - `close_stdin`: `true`; closes the controller's stdin, which its target inherits.
//! - `expect_output`: `{"text": "counter ready", "within_ms": 10000}`; waits until the
//!   controller's stdout (which its target inherits) holds the text: a target announces
//!   that it is up, instead of the case guessing how long start-up takes.
//! - `expect_exit`: `{"within_ms": 5000, "code": 0}` (`code` optional).
//! - `expect_pipes_removed`, `expect_target_stopped`: `{"within_ms": 5000}`.
//! - `any_of`: a list of step lists; the step holds when one of them does.
//! - `repeat`: `{"times": 200, "steps": [...]}`.
//! - `concurrently`: `{"clients": 4, "rounds": 10, "send": "...", "expect": "..."}`: the
//!   clients send together, each round; every request must get one matching reply.
//!
//! Cases are written in the seed dialect; see [`super::dialect`] for the legacy form.
//! Errors name the file, the case and the step.
use super::pattern::Pattern;
use nix::sys::signal::Signal;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const DEFAULT_WITHIN: Duration = Duration::from_millis(5000);
const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_millis(60_000);

#[derive(Debug, Clone)]
pub struct CaseFile {
    pub path: PathBuf,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub about: Option<String>,
    /// The script the controller runs, as given (resolved against the case file's directory).
    pub target: PathBuf,
    /// Not run in the legacy dialect (e.g. TERMINATE's reply, upper-case commands).
    pub seed_only: bool,
    /// Checks an extension of this project's controller (`PS`, `STACK`, `TASKS`), not
    /// the seed's protocol: skipped with `--no-extensions`.
    pub extension: bool,
    /// Threads kept spinning for the whole case, to starve the controller of CPU.
    pub busy_threads: u32,
    /// Bound on the whole case, whatever its steps say.
    pub timeout: Duration,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Step {
    Exchange(Exchange),
    SignalTarget(Signal),
    CloseStdin,
    ExpectOutput { text: String, within: Duration },
    ExpectExit { within: Duration, code: Option<i32> },
    ExpectPipesRemoved { within: Duration },
    ExpectTargetStopped { within: Duration },
    AnyOf(Vec<Vec<Step>>),
    Repeat { times: u32, steps: Vec<Step> },
    Concurrently(Concurrently),
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub send: Send,
    pub expect: Vec<Pattern>,
    /// Used as written in the legacy dialect instead of the mapped `expect`.
    pub expect_legacy: Option<Vec<Pattern>>,
    /// After the expected replies, no further line may come for this long.
    pub silent: Duration,
    pub within: Duration,
}

#[derive(Debug, Clone)]
pub struct Concurrently {
    pub clients: u32,
    pub rounds: u32,
    pub send: Pattern,
    pub expect: Pattern,
    pub within: Duration,
}

#[derive(Debug, Clone)]
pub enum Send {
    /// One line; the runner adds the `\n`.
    Line(Pattern),
    /// Exactly these bytes, nothing added.
    Bytes(Vec<SendPart>),
}

#[derive(Debug, Clone)]
pub enum SendPart {
    /// Text, with placeholders filled in when sent.
    Text(Pattern),
    Bytes(Vec<u8>),
}

impl Step {
    /// A short description for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Step::Exchange(exchange) => match &exchange.send {
                Send::Line(line) => format!("send {:?}", line.to_string()),
                Send::Bytes(parts) => {
                    let mut shown = String::new();
                    for part in parts {
                        match part {
                            SendPart::Text(text) => shown.push_str(&text.to_string()),
                            SendPart::Bytes(bytes) => {
                                shown.push_str(&bytes.escape_ascii().to_string())
                            }
                        }
                    }
                    if shown.chars().count() > 60 {
                        shown = format!("{}…", shown.chars().take(60).collect::<String>());
                    }
                    format!("send_bytes \"{}\"", shown.replace('\n', "\\n"))
                }
            },
            Step::SignalTarget(signal) => format!("signal_target {signal}"),
            Step::CloseStdin => "close_stdin".into(),
            Step::ExpectOutput { text, .. } => format!("expect_output {text:?}"),
            Step::ExpectExit { .. } => "expect_exit".into(),
            Step::ExpectPipesRemoved { .. } => "expect_pipes_removed".into(),
            Step::ExpectTargetStopped { .. } => "expect_target_stopped".into(),
            Step::AnyOf(_) => "any_of".into(),
            Step::Repeat { times, .. } => format!("repeat {times}"),
            Step::Concurrently(c) => format!("concurrently {} clients", c.clients),
        }
    }
}

/// A case file that cannot be used; `Display` names the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFileError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for CaseFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for CaseFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    target: Option<String>,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    about: Option<String>,
    target: Option<String>,
    #[serde(default)]
    seed_only: bool,
    #[serde(default)]
    extension: bool,
    #[serde(default)]
    busy_threads: u32,
    timeout_ms: Option<u64>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<String>,
    send_bytes: Option<Vec<serde_json::Value>>,
    expect: Option<OneOrMany>,
    expect_legacy: Option<OneOrMany>,
    silent_ms: Option<u64>,
    within_ms: Option<u64>,
    signal_target: Option<String>,
    close_stdin: Option<bool>,
    expect_output: Option<RawExpectOutput>,
    expect_exit: Option<RawExpectExit>,
    expect_pipes_removed: Option<RawWithin>,
    expect_target_stopped: Option<RawWithin>,
    any_of: Option<Vec<Vec<RawStep>>>,
    repeat: Option<RawRepeat>,
    concurrently: Option<RawConcurrently>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectExit {
    within_ms: Option<u64>,
    code: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectOutput {
    text: String,
    within_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWithin {
    within_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepeat {
    times: u32,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrently {
    clients: u32,
    #[serde(default = "one")]
    rounds: u32,
    send: String,
    expect: String,
    within_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

fn millis(ms: Option<u64>, default: Duration) -> Duration {
    ms.map_or(default, Duration::from_millis)
}

/// Parses one case file's text. `path` is used for messages and to resolve targets; no
/// file is read here.
pub fn parse_case_file(path: &Path, text: &str) -> Result<CaseFile, CaseFileError> {
    let error = |message: String| CaseFileError {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawFile = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut cases = Vec::with_capacity(raw.cases.len());
    for (index, raw_case) in raw.cases.into_iter().enumerate() {
        let label = if raw_case.name.is_empty() {
            format!("case {}", index + 1)
        } else {
            format!("case '{}'", raw_case.name)
        };
        let case = parse_case(raw_case, raw.target.as_deref(), base)
            .map_err(|message| error(format!("{label}: {message}")))?;
        cases.push(case);
    }
    if cases.is_empty() {
        return Err(error("no cases".into()));
    }
    Ok(CaseFile {
        path: path.to_path_buf(),
        cases,
    })
}

/// Case names appear alone on output lines and select cases: they must be unique.
pub fn check_unique_names(files: &[CaseFile]) -> Result<(), CaseFileError> {
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for file in files {
        for case in &file.cases {
            if let Some(first) = seen.insert(&case.name, &file.path) {
                return Err(CaseFileError {
                    path: file.path.clone(),
                    message: format!(
                        "case '{}' is also defined in {}; names must be unique",
                        case.name,
                        first.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn parse_case(raw: RawCase, default_target: Option<&str>, base: &Path) -> Result<Case, String> {
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "name {:?} must be non-empty and made of letters, digits, '_', '-', '.'",
            raw.name
        ));
    }
    let target = raw
        .target
        .as_deref()
        .or(default_target)
        .ok_or("no target: set \"target\" in the case or at the top of the file")?;
    if raw.steps.is_empty() {
        return Err("no steps".into());
    }
    if raw.busy_threads > 64 {
        return Err(format!("busy_threads {} is more than 64", raw.busy_threads));
    }
    Ok(Case {
        name: raw.name,
        about: raw.about,
        target: base.join(target),
        seed_only: raw.seed_only,
        extension: raw.extension,
        busy_threads: raw.busy_threads,
        timeout: millis(raw.timeout_ms, DEFAULT_CASE_TIMEOUT),
        steps: parse_steps(raw.steps, "")?,
    })
}

fn parse_steps(raw: Vec<RawStep>, outer: &str) -> Result<Vec<Step>, String> {
    if raw.is_empty() {
        return Err(format!("{outer}empty step list"));
    }
    raw.into_iter()
        .enumerate()
        .map(|(index, step)| {
            let here = format!("{outer}step {}", index + 1);
            parse_step(step, &here).map_err(|message| {
                if message.starts_with(&here) {
                    message
                } else {
                    format!("{here}: {message}")
                }
            })
        })
        .collect()
}

fn parse_patterns(texts: OneOrMany, what: &str) -> Result<Vec<Pattern>, String> {
    texts
        .into_vec()
        .iter()
        .map(|text| Pattern::parse(text).map_err(|e| format!("{what}: {e}")))
        .collect()
}

fn parse_step(raw: RawStep, here: &str) -> Result<Step, String> {
    let kinds: Vec<&str> = [
        ("send", raw.send.is_some()),
        ("send_bytes", raw.send_bytes.is_some()),
        ("signal_target", raw.signal_target.is_some()),
        ("close_stdin", raw.close_stdin.is_some()),
        ("expect_output", raw.expect_output.is_some()),
        ("expect_exit", raw.expect_exit.is_some()),
        ("expect_pipes_removed", raw.expect_pipes_removed.is_some()),
        ("expect_target_stopped", raw.expect_target_stopped.is_some()),
        ("any_of", raw.any_of.is_some()),
        ("repeat", raw.repeat.is_some()),
        ("concurrently", raw.concurrently.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, present)| present.then_some(kind))
    .collect();
    let kind = match kinds.as_slice() {
        [kind] => *kind,
        [] => {
            return Err(
                "no step key (send, send_bytes, signal_target, close_stdin, expect_output, expect_exit, expect_pipes_removed, expect_target_stopped, any_of, repeat or concurrently)"
                    .into(),
            )
        }
        several => return Err(format!("one step key per step, found {}", several.join(" and "))),
    };
    let exchange_keys = [
        ("expect", raw.expect.is_some()),
        ("expect_legacy", raw.expect_legacy.is_some()),
        ("silent_ms", raw.silent_ms.is_some()),
        ("within_ms", raw.within_ms.is_some()),
    ];
    if !matches!(kind, "send" | "send_bytes") {
        if let Some((key, _)) = exchange_keys.iter().find(|(_, present)| *present) {
            return Err(format!(
                "'{key}' belongs to a send or send_bytes step, not {kind}"
            ));
        }
    }
    let step = match kind {
        "send" | "send_bytes" => {
            let send = match (raw.send, raw.send_bytes) {
                (Some(line), _) => {
                    if line.contains('\n') {
                        return Err("a send line cannot contain a newline; use send_bytes".into());
                    }
                    Send::Line(Pattern::parse_send(&line)?)
                }
                (None, Some(parts)) => Send::Bytes(parse_send_parts(parts)?),
                (None, None) => unreachable!("kind is send or send_bytes"),
            };
            let expect = raw
                .expect
                .ok_or("no 'expect' (write \"expect\": [] when no reply is expected)")?;
            Step::Exchange(Exchange {
                send,
                expect: parse_patterns(expect, "expect")?,
                expect_legacy: raw
                    .expect_legacy
                    .map(|e| parse_patterns(e, "expect_legacy"))
                    .transpose()?,
                silent: millis(raw.silent_ms, Duration::ZERO),
                within: millis(raw.within_ms, DEFAULT_WITHIN),
            })
        }
        "signal_target" => {
            let name = raw.signal_target.unwrap_or_default();
            let full = if name.starts_with("SIG") {
                name.clone()
            } else {
                format!("SIG{name}")
            };
            Step::SignalTarget(
                Signal::from_str(&full)
                    .map_err(|_| format!("signal_target: unknown signal {name:?}"))?,
            )
        }
        "close_stdin" => match raw.close_stdin {
            Some(true) => Step::CloseStdin,
            _ => return Err("close_stdin must be true".into()),
        },
        "expect_output" => {
            let output = raw.expect_output.expect("kind is expect_output");
            if output.text.is_empty() {
                return Err("expect_output text is empty".into());
            }
            Step::ExpectOutput {
                text: output.text,
                within: millis(output.within_ms, DEFAULT_WITHIN),
            }
        }
        "expect_exit" => {
            let exit = raw.expect_exit.expect("kind is expect_exit");
            Step::ExpectExit {
                within: millis(exit.within_ms, DEFAULT_WITHIN),
                code: exit.code,
            }
        }
        "expect_pipes_removed" => Step::ExpectPipesRemoved {
            within: millis(
                raw.expect_pipes_removed.and_then(|w| w.within_ms),
                DEFAULT_WITHIN,
            ),
        },
        "expect_target_stopped" => Step::ExpectTargetStopped {
            within: millis(
                raw.expect_target_stopped.and_then(|w| w.within_ms),
                DEFAULT_WITHIN,
            ),
        },
        "any_of" => {
            let alternatives = raw.any_of.unwrap_or_default();
            if alternatives.len() < 2 {
                return Err("any_of needs at least two alternatives".into());
            }
            Step::AnyOf(
                alternatives
                    .into_iter()
                    .enumerate()
                    .map(|(i, steps)| parse_steps(steps, &format!("{here} > any_of {} > ", i + 1)))
                    .collect::<Result<_, _>>()?,
            )
        }
        "repeat" => {
            let repeat = raw.repeat.expect("kind is repeat");
            if !(1..=100_000).contains(&repeat.times) {
                return Err(format!(
                    "repeat times {} is not in 1..=100000",
                    repeat.times
                ));
            }
            Step::Repeat {
                times: repeat.times,
                steps: parse_steps(repeat.steps, &format!("{here} > repeat > "))?,
            }
        }
        "concurrently" => {
            let c = raw.concurrently.expect("kind is concurrently");
            if !(1..=64).contains(&c.clients) {
                return Err(format!(
                    "concurrently clients {} is not in 1..=64",
                    c.clients
                ));
            }
            if !(1..=10_000).contains(&c.rounds) {
                return Err(format!(
                    "concurrently rounds {} is not in 1..=10000",
                    c.rounds
                ));
            }
            Step::Concurrently(Concurrently {
                clients: c.clients,
                rounds: c.rounds,
                send: Pattern::parse_send(&c.send)?,
                expect: Pattern::parse(&c.expect)?,
                within: millis(c.within_ms, DEFAULT_WITHIN),
            })
        }
        other => unreachable!("step kind {other} listed above"),
    };
    Ok(step)
}

fn parse_send_parts(parts: Vec<serde_json::Value>) -> Result<Vec<SendPart>, String> {
    if parts.is_empty() {
        return Err("send_bytes is empty".into());
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(index, part)| {
            parse_send_part(part).map_err(|e| format!("send_bytes part {}: {e}", index + 1))
        })
        .collect()
}

fn parse_send_part(part: serde_json::Value) -> Result<SendPart, String> {
    use serde_json::Value;
    let expected = r#"expected a string, {"hex": "..."} or {"repeat": "...", "times": N}"#;
    let Value::Object(map) = part else {
        return match part {
            Value::String(text) => Ok(SendPart::Text(Pattern::parse_send(&text)?)),
            other => Err(format!("{expected}, found {other}")),
        };
    };
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    match keys.as_slice() {
        ["hex"] => {
            let hex = map["hex"].as_str().ok_or("hex must be a string")?;
            let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
            if digits.len() % 2 != 0 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("hex {hex:?} is not pairs of hex digits"));
            }
            Ok(SendPart::Bytes(
                (0..digits.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&digits[at..at + 2], 16).expect("checked hex"))
                    .collect(),
            ))
        }
        ["repeat", "times"] | ["times", "repeat"] => {
            let text = map["repeat"].as_str().ok_or("repeat must be a string")?;
            let times = map["times"]
                .as_u64()
                .filter(|&n| (1..=1 << 20).contains(&n))
                .ok_or("times must be a number in 1..=1048576")?;
            Ok(SendPart::Bytes(text.repeat(times as usize).into_bytes()))
        }
        _ => Err(format!("{expected}, found keys {keys:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CaseFile, CaseFileError> {
        parse_case_file(Path::new("/cases/group.json"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_step_kind() {
        let file = parse(
            r#"{ "target": "../counter.py", "cases": [
              { "name": "all", "busy_threads": 1, "seed_only": true, "steps": [
                { "send": "GET_TARGET_PID", "expect": "TARGET_PID {target_pid}", "silent_ms": 200 },
                { "send_bytes": ["GRANT_ACCESS ", {"hex": "ff fe"}, {"repeat": "A", "times": 3}, "\n"],
                  "expect": ["ERROR: {any}"], "within_ms": 100 },
                { "send": "TERMINATE", "expect": "READY", "expect_legacy": [] },
                { "signal_target": "KILL" },
                { "close_stdin": true },
                { "expect_output": { "text": "up" } },
                { "expect_exit": { "code": 0 } },
                { "expect_pipes_removed": {} },
                { "expect_target_stopped": { "within_ms": 10 } },
                { "any_of": [[{ "expect_exit": {} }], [{ "send": "X", "expect": "ERROR: {any}" }]] },
                { "repeat": { "times": 3, "steps": [{ "send": "", "expect": [] }] } },
                { "concurrently": { "clients": 4, "send": "GET_TARGET_PID", "expect": "TARGET_PID {target_pid}" } }
              ] } ] }"#,
        )
        .unwrap();
        let case = &file.cases[0];
        assert_eq!(case.target, Path::new("/cases/../counter.py"));
        assert!(case.seed_only);
        assert_eq!(case.steps.len(), 12);
        let Step::Exchange(bytes) = &case.steps[1] else {
            panic!("{:?}", case.steps[1])
        };
        let Send::Bytes(parts) = &bytes.send else {
            panic!()
        };
        assert!(matches!(&parts[1], SendPart::Bytes(b) if b == &[0xff, 0xfe]));
        assert!(matches!(&parts[2], SendPart::Bytes(b) if b == b"AAA"));
        assert_eq!(bytes.within, Duration::from_millis(100));
        assert_eq!(
            case.steps[1].describe(),
            r#"send_bytes "GRANT_ACCESS \xff\xfeAAA\n""#
        );
        assert!(matches!(case.steps[3], Step::SignalTarget(Signal::SIGKILL)));
    }

    #[test]
    fn mistakes_name_the_file_case_and_step() {
        let wrap = |steps: &str| {
            format!(r#"{{ "target": "t.py", "cases": [ {{ "name": "c", "steps": [{steps}] }} ] }}"#)
        };
        let cases = [
            (wrap(r#"{ "sendd": "X" }"#), "unknown field `sendd`"),
            (wrap(r#"{ "send": "X" }"#), "case 'c': step 1: no 'expect'"),
            (
                wrap(r#"{ "send": "X", "expect": "{pid}" }"#),
                "unknown placeholder {pid}",
            ),
            (
                wrap(r#"{ "send": "X", "send_bytes": ["X"], "expect": [] }"#),
                "found send and send_bytes",
            ),
            (
                wrap(r#"{ "expect_exit": {}, "silent_ms": 5 }"#),
                "'silent_ms' belongs to a send",
            ),
            (wrap(r#"{ "signal_target": "SIGNOPE" }"#), "unknown signal"),
            (
                wrap(r#"{ "send_bytes": [{"hex": "f"}], "expect": [] }"#),
                "part 1: hex \"f\"",
            ),
            (
                wrap(r#"{ "send_bytes": [3], "expect": [] }"#),
                "expected a string",
            ),
            (
                wrap(r#"{ "repeat": { "times": 2, "steps": [{ "close_stdin": false }] } }"#),
                "step 1 > repeat > step 1: close_stdin must be true",
            ),
            (
                wrap(r#"{ "any_of": [[{ "close_stdin": true }]] }"#),
                "at least two",
            ),
            (wrap(r#"{ "send": "a\nb", "expect": [] }"#), "newline"),
            (wrap(""), "no steps"),
            (
                r#"{ "cases": [ { "name": "c", "steps": [] } ] }"#.to_string(),
                "no target",
            ),
            (
                r#"{ "target": "t", "cases": [ { "name": "a b", "steps": [] } ] }"#.to_string(),
                "name \"a b\"",
            ),
            ("{".to_string(), "EOF while parsing"),
        ];
        for (text, needle) in cases {
            let message = error(&text);
            assert!(message.starts_with("/cases/group.json: "), "{message}");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = r#"{ "target": "t.py", "cases": [ { "name": "same", "steps": [{ "close_stdin": true }] } ] }"#;
        let a = parse_case_file(Path::new("a.json"), text).unwrap();
        let b = parse_case_file(Path::new("b.json"), text).unwrap();
        let err = check_unique_names(&[a, b]).unwrap_err().to_string();
        assert!(
            err.starts_with("b.json: case 'same' is also defined in a.json"),
            "{err}"
        );
    }
}
