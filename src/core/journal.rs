//! The journal: versioned JSON Lines, one header then one record per input handled and
//! one per batch of effects decided. The controller's state is the fold of its inputs, so
//! replaying the inputs through a fresh [`Supervisor`] must decide the recorded effects.
use super::supervisor::{Config, Effect, Input, Millis, Supervisor};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Bumped when a record's meaning changes; replay refuses versions it does not know.
///
/// Format 3 adds the socket: a line's `origin` (connection, peer pid and uid), a reply's
/// destination `to`, the `asker` of an inspection and the `kinship` it found. Each field
/// is absent for a FIFO request, so a format-2 journal is a format-3 journal without
/// socket requests and still replays; a format-2 reader must refuse format 3, since it
/// would take socket lines for FIFO lines.
///
/// Format 3 also carries the tree's questions (`PS`, `STACK`, `TASKS`): the inputs
/// `tree_listed`, `stacks_read`, `tasks_read` and the effects `list_tree`, `read_stacks`,
/// `read_tasks`. They are new kinds of records, not new meanings of old ones: a journal
/// without them is unchanged, and an older reader names the kind it does not know.
pub const JOURNAL_FORMAT: u32 = 3;

/// The formats this version replays.
pub const READABLE_FORMATS: [u32; 2] = [2, JOURNAL_FORMAT];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub tool_version: String,
    /// The target's command line as the controller started it.
    pub target_argv: Vec<String>,
    pub controller_pid: u32,
    /// Wall-clock start (Unix epoch, ms): the anchor for every record's relative `at`.
    pub started_unix_ms: u64,
    pub config: Config,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    /// Written (and flushed) before the input is handled.
    Input {
        at: Millis,
        #[serde(flatten)]
        input: Input,
    },
    /// What the controller decided for the input just before.
    Effects {
        at: Millis,
        effects: Vec<Effect>,
    },
    /// The input and effects just before happened `count` more times, the last at
    /// `last_at` (a flood of the same line is journaled once, not a million times).
    Repeated {
        count: u64,
        last_at: Millis,
    },
    /// The journal reached its size limit here; nothing after this was recorded.
    Capped {
        at: Millis,
        limit_bytes: u64,
    },
}

/// A [`Supervisor`] that also writes the human transcript: one line per input, state
/// transition and effect, stamped with the session's relative milliseconds. Only replay
/// and tests keep one; the live controller does not (its memory stays flat).
#[derive(Debug)]
pub struct Transcribed {
    supervisor: Supervisor,
    transcript: String,
}

impl Transcribed {
    pub fn new(config: Config) -> Transcribed {
        let mut transcript = String::new();
        let _ = writeln!(
            transcript,
            "[{:>6} ms] start  target {}, uid {}, {}, dialect {:?}",
            0, config.target_pid, config.uid, config.yama, config.dialect
        );
        Transcribed {
            supervisor: Supervisor::new(config),
            transcript,
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn transcript(&self) -> &str {
        &self.transcript
    }

    /// Handles one input and records it, the transition it caused and its effects.
    #[must_use]
    pub fn handle(&mut self, at: Millis, input: Input) -> Vec<Effect> {
        let before = self.supervisor.phase();
        let _ = writeln!(self.transcript, "[{at:>6} ms] input  {input}");
        let effects = self.supervisor.handle(at, input);
        let after = self.supervisor.phase();
        if before != after {
            let _ = writeln!(self.transcript, "[{at:>6} ms] state  {before} -> {after}");
        }
        for effect in &effects {
            let _ = writeln!(self.transcript, "[{at:>6} ms] effect {effect}");
        }
        effects
    }
}

impl Header {
    /// What a reader of a transcript needs first: who ran what, when, under which rules.
    pub fn describe(&self) -> String {
        format!(
            "journal format {} of heli-controller {} (pid {})\nstarted {} UTC\ntarget {}: {}\n{}, dialect {:?}, grant timeout {} ms\n",
            self.format,
            self.tool_version,
            self.controller_pid,
            utc_time(self.started_unix_ms),
            self.config.target_pid,
            self.target_argv.join(" "),
            self.config.yama,
            self.config.dialect,
            self.config.grant_timeout_ms,
        )
    }
}

/// `2026-12-01 07:05:09.123` for milliseconds since the Unix epoch (proleptic Gregorian
/// calendar, the civil-from-days conversion).
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Folds runs of a repeating block of transcript lines (a grant's surveys while the target
/// waits, say) into the first block and one line that says how often it repeated. Lines
/// are compared without their time stamps.
pub fn collapse_repeats(transcript: &str) -> String {
    const MAX_BLOCK: usize = 6;
    let lines: Vec<&str> = transcript.lines().collect();
    let body = |line: &str| {
        line.split_once("] ")
            .map_or(line, |(_, rest)| rest)
            .to_string()
    };
    let stamp = |line: &str| {
        line.split_once("] ")
            .map_or("", |(t, _)| t)
            .trim_start_matches('[')
            .trim()
            .to_string()
    };
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let mut folded = false;
        for block in 1..=MAX_BLOCK {
            if i + 2 * block > lines.len() {
                break;
            }
            let same =
                |a: usize, b: usize| (0..block).all(|k| body(lines[a + k]) == body(lines[b + k]));
            let mut repeats = 0;
            while i + (repeats + 2) * block <= lines.len() && same(i, i + (repeats + 1) * block) {
                repeats += 1;
            }
            // Worth folding only when it saves lines.
            if repeats >= 2 {
                for line in &lines[i..i + block] {
                    out.push_str(line);
                    out.push('\n');
                }
                let last = i + (repeats + 1) * block - 1;
                let _ = writeln!(
                    out,
                    "[  ...   ] the {} line{} above repeated {repeats} more times, until {}",
                    block,
                    if block == 1 { "" } else { "s" },
                    stamp(lines[last]),
                );
                i += (repeats + 1) * block;
                folded = true;
                break;
            }
        }
        if !folded {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
        }
    }
    out
}

/// Why a journal cannot be replayed; always names the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    Empty,
    MissingHeader {
        line: usize,
    },
    UnknownFormat {
        line: usize,
        found: u32,
    },
    Truncated {
        line: usize,
    },
    Malformed {
        line: usize,
        why: String,
    },
    /// Effects with no input before them.
    UnexpectedEffects {
        line: usize,
    },
    /// Replay decided other effects than the live controller recorded.
    Diverged {
        line: usize,
        input: String,
        recorded: Vec<Effect>,
        replayed: Vec<Effect>,
    },
    /// `--check`: the journal ends between an input and its effects.
    MissingEffects {
        line: usize,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |effects: &[Effect]| {
            if effects.is_empty() {
                "(none)".to_string()
            } else {
                effects
                    .iter()
                    .map(|e| format!("\n    {e}"))
                    .collect::<String>()
            }
        };
        match self {
            ReplayError::Empty => f.write_str("the journal is empty"),
            ReplayError::MissingHeader { line } => write!(f, "line {line}: expected the journal header first"),
            ReplayError::UnknownFormat { line, found } => write!(
                f,
                "line {line}: journal format {found} is not known to this version (it reads formats {} and {})",
                READABLE_FORMATS[0],
                READABLE_FORMATS[1]
            ),
            ReplayError::Truncated { line } => {
                write!(f, "line {line}: truncated (the last line is incomplete: the writer stopped mid-line)")
            }
            ReplayError::Malformed { line, why } => write!(f, "line {line}: not a journal record: {why}"),
            ReplayError::UnexpectedEffects { line } => write!(f, "line {line}: effects without an input before them"),
            ReplayError::Diverged { line, input, recorded, replayed } => write!(
                f,
                "line {line}: replay diverged after input '{input}'\n  recorded:{}\n  replayed:{}",
                list(recorded),
                list(replayed)
            ),
            ReplayError::MissingEffects { line } => write!(
                f,
                "line {line}: the journal ends before the effects of this input (the controller stopped while handling it)"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::delivery::DeliveryFact;
    use crate::core::ptrace_policy::TracerPrivilege;
    use crate::core::supervisor::{ClientFacts, Kinship, Origin, Yama};
    use crate::core::wire::Frame;

    fn line(text: &str) -> Input {
        Input::LineReceived {
            frame: Frame::Text {
                text: text.into(),
                terminated: true,
            },
            origin: Origin::Fifo,
        }
    }

    /// A journal written the way the controller writes it: input, then its effects.
    fn journal(inputs: Vec<(Millis, Input)>) -> String {
        let config = Config::new(10, 500, Yama::Scope(1));
        let header = Header {
            format: JOURNAL_FORMAT,
            tool_version: "test".into(),
            target_argv: vec!["python3.14".into(), "t.py".into()],
            controller_pid: 9,
            started_unix_ms: 1_700_000_000_000,
            config: config.clone(),
        };
        let mut supervisor = Supervisor::new(config);
        let mut out = serde_json::to_string(&Record::Header(header)).unwrap() + "\n";
        for (at, input) in inputs {
            out += &(serde_json::to_string(&Record::Input {
                at,
                input: input.clone(),
            })
            .unwrap()
                + "\n");
            let effects = supervisor.handle(at, input);
            out += &(serde_json::to_string(&Record::Effects { at, effects }).unwrap() + "\n");
        }
        out
    }

    fn sample() -> String {
        journal(vec![
            (1, line("GET_TARGET_PID")),
            (2, line("GRANT_ACCESS 20")),
            (
                2,
                Input::ClientInspected {
                    pid: 20,
                    facts: ClientFacts::Running {
                        uid: 500,
                        exe: None,
                        privilege: TracerPrivilege::Ordinary,
                        kinship: None,
                    },
                },
            ),
            (
                3,
                Input::Delivery {
                    grant: 1,
                    fact: DeliveryFact::Scheduled { tid: 10 },
                },
            ),
            (4, Input::GrantRan { grant: 1, errno: 0 }),
        ])
    }

    #[test]
    fn repeating_blocks_fold_into_one_line_and_single_lines_stay() {
        let text = "[     1 ms] input  a\n[    20 ms] input  deadline reached\n[    20 ms] effect survey\n[    40 ms] input  deadline reached\n[    40 ms] effect survey\n[    80 ms] input  deadline reached\n[    80 ms] effect survey\n[    90 ms] input  b\n";
        assert_eq!(
            collapse_repeats(text),
            "[     1 ms] input  a\n[    20 ms] input  deadline reached\n[    20 ms] effect survey\n[  ...   ] the 2 lines above repeated 2 more times, until 80 ms\n[    90 ms] input  b\n"
        );
        let plain = "[     1 ms] input  a\n[     2 ms] input  b\n";
        assert_eq!(collapse_repeats(plain), plain);
    }

    #[test]
    fn utc_times_are_civil_dates() {
        // Expected values from GNU date: date -u -d @1795705441 and @951782400.
        assert_eq!(utc_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_time(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(utc_time(1_795_705_441_113), "2026-11-26 15:04:01.113");
    }

    #[test]
    fn a_journal_replays_clean_with_check() {
        let done = replay(&sample(), true).unwrap();
        assert_eq!(done.inputs, 5);
        assert_eq!(
            done.session.supervisor().phase(),
            crate::core::supervisor::Phase::Attached { client: 20 }
        );
    }

    #[test]
    fn a_changed_effect_is_a_divergence_naming_the_line_and_both_sides() {
        let tampered = sample().replacen(
            r#""reply":"target_pid","value":10"#,
            r#""reply":"target_pid","value":11"#,
            1,
        );
        assert_ne!(tampered, sample());
        let err = replay(&tampered, true).unwrap_err();
        assert!(
            matches!(err, ReplayError::Diverged { line: 3, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("TARGET_PID 11") && text.contains("TARGET_PID 10"),
            "{text}"
        );
        assert!(
            replay(&tampered, false).is_ok(),
            "without --check only the inputs matter"
        );
    }

    #[test]
    fn a_truncated_last_line_is_named() {
        let text = sample();
        let cut = &text[..text.len() - 10];
        let lines = cut.lines().count();
        assert_eq!(
            replay(cut, false).unwrap_err(),
            ReplayError::Truncated { line: lines }
        );
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let text = sample().replacen(
            &format!(r#""format":{JOURNAL_FORMAT}"#),
            r#""format":99"#,
            1,
        );
        assert_ne!(text, sample());
        assert_eq!(
            replay(&text, false).unwrap_err(),
            ReplayError::UnknownFormat { line: 1, found: 99 }
        );
    }

    #[test]
    fn a_malformed_line_is_named() {
        let mut lines: Vec<String> = sample().lines().map(String::from).collect();
        lines[3] = "{\"record\":\"input\",\"at\":5,\"input\":\"warp_drive\"}".into();
        let err = replay(&(lines.join("\n") + "\n"), false).unwrap_err();
        assert!(
            matches!(err, ReplayError::Malformed { line: 4, .. }),
            "{err:?}"
        );
        assert!(replay("", false).unwrap_err() == ReplayError::Empty);
        assert_eq!(
            replay("{\"record\":\"effects\",\"at\":0,\"effects\":[]}\n", false).unwrap_err(),
            ReplayError::MissingHeader { line: 1 }
        );
    }

    #[test]
    fn a_journal_cut_between_input_and_effects_fails_check_only() {
        let text = sample();
        let without_last: String = text
            .lines()
            .take(text.lines().count() - 1)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(replay(&without_last, false).is_ok());
        assert!(matches!(
            replay(&without_last, true).unwrap_err(),
            ReplayError::MissingEffects { .. }
        ));
    }

    /// Format 3 writes the socket fields only for socket requests: a FIFO session's
    /// records are the format-2 records, so format-2 journals replay unchanged.
    #[test]
    fn fifo_records_are_format_2_records_and_format_2_still_replays() {
        let text = sample();
        for field in [r#""origin""#, r#""to""#, r#""asker""#, r#""kinship""#] {
            assert!(
                !text.contains(field),
                "{field} in a FIFO-only journal: {text}"
            );
        }
        let old = text.replacen(&format!(r#""format":{JOURNAL_FORMAT}"#), r#""format":2"#, 1);
        assert_ne!(old, text);
        assert_eq!(replay(&old, true).unwrap().header.format, 2);
    }

    /// A socket request journals its real requester, and replays with it.
    #[test]
    fn a_socket_request_records_its_requester_and_replays() {
        let socket = Origin::Socket {
            conn: 7,
            pid: 20,
            uid: 500,
        };
        let text = journal(vec![
            (
                1,
                Input::LineReceived {
                    frame: Frame::Text {
                        text: "GRANT_ACCESS 21".into(),
                        terminated: true,
                    },
                    origin: socket,
                },
            ),
            (
                2,
                Input::ClientInspected {
                    pid: 21,
                    facts: ClientFacts::Running {
                        uid: 500,
                        exe: None,
                        privilege: TracerPrivilege::Ordinary,
                        kinship: Some(Kinship::Unrelated),
                    },
                },
            ),
        ]);
        assert!(
            text.contains(r#""origin":{"via":"socket","conn":7,"pid":20,"uid":500}"#),
            "{text}"
        );
        assert!(text.contains(r#""to":{"via":"socket","conn":7}"#), "{text}");
        let done = replay(&text, true).unwrap();
        let transcript = done.session.transcript();
        assert!(
            transcript.contains("on connection 7 from pid 20, uid 500")
                && transcript.contains("neither the asker (pid 20) nor one of its descendants"),
            "{transcript}"
        );
    }
}

/// The result of folding a journal through a fresh controller.
#[derive(Debug)]
pub struct Replay {
    pub header: Header,
    pub session: Transcribed,
    pub inputs: usize,
    /// `(line, at, limit)` when the journal hit its size limit: replay stops there.
    pub capped: Option<(usize, Millis, u64)>,
}

/// Folds a journal's text through a fresh [`Supervisor`]. With `check`, every recorded
/// batch of effects must equal what the replay decides, else the first divergence is
/// returned with both sides.
pub fn replay(text: &str, check: bool) -> Result<Replay, ReplayError> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let parse = |index: usize| -> Result<Record, ReplayError> {
        let line = index + 1;
        serde_json::from_str(lines[index]).map_err(|e| {
            if index + 1 == lines.len() && !complete && e.is_eof() {
                ReplayError::Truncated { line }
            } else {
                ReplayError::Malformed {
                    line,
                    why: e.to_string(),
                }
            }
        })
    };
    if lines.is_empty() {
        return Err(ReplayError::Empty);
    }
    let header = match parse(0) {
        Ok(Record::Header(header)) => header,
        // An unknown format may not even parse as our header: look at the number alone.
        Err(e) => {
            let format = serde_json::from_str::<serde_json::Value>(lines[0])
                .ok()
                .and_then(|v| v.get("format").and_then(|f| f.as_u64()));
            return Err(match format {
                Some(found) if !READABLE_FORMATS.iter().any(|&f| u64::from(f) == found) => {
                    ReplayError::UnknownFormat {
                        line: 1,
                        found: found as u32,
                    }
                }
                Some(_) | None => e,
            });
        }
        Ok(_) => return Err(ReplayError::MissingHeader { line: 1 }),
    };
    if !READABLE_FORMATS.contains(&header.format) {
        return Err(ReplayError::UnknownFormat {
            line: 1,
            found: header.format,
        });
    }
    let mut session = Transcribed::new(header.config.clone());
    let mut inputs = 0;
    let mut index = 1;
    let mut capped = None;
    // The last input with its recorded effects, for `Repeated` records.
    let mut last_step: Option<(Input, Vec<Effect>)> = None;
    while index < lines.len() {
        let line = index + 1;
        match parse(index)? {
            Record::Header(_) => {
                return Err(ReplayError::Malformed {
                    line,
                    why: "a second header".into(),
                })
            }
            Record::Effects { .. } => return Err(ReplayError::UnexpectedEffects { line }),
            Record::Capped { at, limit_bytes } => {
                capped = Some((line, at, limit_bytes));
                break;
            }
            Record::Repeated { count, last_at } => {
                let Some((input, recorded)) = last_step.clone() else {
                    return Err(ReplayError::Malformed {
                        line,
                        why: "a repeat with no input before it".into(),
                    });
                };
                for _ in 0..count {
                    inputs += 1;
                    let replayed = session.handle(last_at, input.clone());
                    if check && replayed != recorded {
                        return Err(ReplayError::Diverged {
                            line,
                            input: input.to_string(),
                            recorded: recorded.clone(),
                            replayed,
                        });
                    }
                }
                index += 1;
            }
            Record::Input { at, input } => {
                inputs += 1;
                let kept = input.clone();
                let shown = input.to_string();
                let replayed = session.handle(at, input);
                index += 1;
                if index < lines.len() {
                    if let Record::Effects {
                        effects: recorded, ..
                    } = parse(index)?
                    {
                        index += 1;
                        last_step = Some((kept, recorded.clone()));
                        if check && recorded != replayed {
                            return Err(ReplayError::Diverged {
                                line: line + 1,
                                input: shown,
                                recorded,
                                replayed,
                            });
                        }
                    }
                } else if check {
                    return Err(ReplayError::MissingEffects { line });
                }
            }
        }
    }
    Ok(Replay {
        header,
        session,
        inputs,
        capped,
    })
}
