//! The pipe protocol: one UTF-8 line per message, `\n`-terminated.
//!
//! Client → controller (`control`): `GET_TARGET_PID`, `GRANT_ACCESS <pid>`, `TERMINATE`,
//! accepted in any case. Controller → client (`response`): `TARGET_PID <pid>`, `READY`,
//! `ERROR: <message>` in the seed dialect; `target_pid <pid>`, `ready`, `error : <message>`
//! in the legacy dialect spoken by the published Python helicopter-parent 0.x.
//!
//! This project's extensions (a seed-only client never sends them): `REVOKE_ACCESS <pid>`
//! (answered `READY`); `GRANT_ACCESS <pid> [<process pid>] [WAIT]`: a grant in another
//! process of the supervised tree, and (on the socket) no deadline: `WAITING <text>`
//! progress lines come before the final reply, until the target runs the grant or the
//! client hangs up; and the questions about the supervised tree `PS`, `STACK <pid>`,
//! `STACK ALL` and `TASKS <pid>`, answered with one line `PROCESSES <json>`,
//! `STACKS <json>` or `TASKS <json>` (lower-case words in the legacy dialect).
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest control line accepted, newline excluded. Real commands are < 32 bytes; the
/// bound keeps a runaway writer from growing the controller's memory.
pub const MAX_LINE: usize = 1024;

/// Linux's `PID_MAX_LIMIT` on 64-bit: no pid can be larger.
pub const PID_MAX_LIMIT: u32 = 1 << 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// The words of the seed README: upper case, `ERROR: message`.
    #[default]
    Seed,
    /// The published 0.x wire form: lower case, `error : message`, no reply to terminate.
    Legacy,
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seed" => Ok(Dialect::Seed),
            "legacy" => Ok(Dialect::Legacy),
            other => Err(format!(
                "unknown dialect '{other}' (expected seed or legacy)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    GetTargetPid,
    GrantAccess {
        pid: u32,
        /// The process of the supervised tree that declares `pid` its ptracer; `None`:
        /// the target, as in the seed.
        process: Option<u32>,
        /// No deadline: the asker waits (with `WAITING` progress lines) until the grant
        /// ran or it hangs up. Only the socket can carry it: a FIFO client shares the
        /// response pipe, so progress lines there would reach other clients.
        wait: bool,
    },
    Terminate,
    /// An extension for this project's client: take back the grant `pid` holds (sent after
    /// pdb detaches). Not in the seed's list of commands; a seed-only client never sends it.
    RevokeAccess {
        pid: u32,
    },
    /// An extension: list the supervised tree (`PROCESSES <json>`).
    Ps,
    /// An extension: every thread's Python stack of one process of the tree, or of all
    /// (`STACKS <json>`).
    Stack {
        which: StackTarget,
    },
    /// An extension: the asyncio tasks of one process of the tree (`TASKS <json>`).
    Tasks {
        pid: u32,
    },
}

/// Whose stacks `STACK` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "of", content = "pid", rename_all = "snake_case")]
pub enum StackTarget {
    Pid(u32),
    /// Every Python process of the tree.
    All,
}

/// The word that asks a `GRANT_ACCESS` to wait without a deadline.
pub const WAIT_WORD: &str = "WAIT";

impl Command {
    /// The seed's `GRANT_ACCESS <pid>`: the target declares `pid`, within the controller's
    /// grant timeout.
    pub const fn grant(pid: u32) -> Command {
        Command::GrantAccess {
            pid,
            process: None,
            wait: false,
        }
    }

    /// The line a client sends, without the newline.
    pub fn to_line(self, dialect: Dialect) -> String {
        let (word, argument) = match self {
            Command::GetTargetPid => ("GET_TARGET_PID", None),
            Command::GrantAccess { pid, .. } => ("GRANT_ACCESS", Some(pid.to_string())),
            Command::Terminate => ("TERMINATE", None),
            Command::RevokeAccess { pid } => ("REVOKE_ACCESS", Some(pid.to_string())),
            Command::Ps => ("PS", None),
            Command::Stack {
                which: StackTarget::Pid(pid),
            } => ("STACK", Some(pid.to_string())),
            Command::Stack {
                which: StackTarget::All,
            } => ("STACK", Some("ALL".to_string())),
            Command::Tasks { pid } => ("TASKS", Some(pid.to_string())),
        };
        let cased = |word: &str| match dialect {
            Dialect::Seed => word.to_string(),
            Dialect::Legacy => word.to_ascii_lowercase(),
        };
        let mut line = cased(word);
        if let Some(argument) = argument {
            line.push(' ');
            line.push_str(&cased(&argument));
        }
        if let Command::GrantAccess { process, wait, .. } = self {
            if let Some(process) = process {
                line.push_str(&format!(" {process}"));
            }
            if wait {
                line.push(' ');
                line.push_str(&cased(WAIT_WORD));
            }
        }
        line
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "snake_case")]
pub enum Reply {
    TargetPid(u32),
    Ready,
    Error(String),
    /// `PROCESSES <json>`: the answer to `PS` (a [`super::tree::PsReport`]).
    Processes(String),
    /// `STACKS <json>`: the answer to `STACK` (a [`super::tree::StacksReport`]).
    Stacks(String),
    /// `TASKS <json>`: the answer to `TASKS` (a [`super::tree::TasksReport`]).
    Tasks(String),
    /// A progress line of a waiting `GRANT_ACCESS` (socket only): more lines follow, the
    /// last one is `READY` or `ERROR:`.
    Waiting(String),
}

impl Reply {
    /// Whether more lines follow this one on its connection.
    pub fn is_progress(&self) -> bool {
        matches!(self, Reply::Waiting(_))
    }
}

impl Reply {
    /// The line the controller writes, without the newline.
    pub fn to_line(&self, dialect: Dialect) -> String {
        match (self, dialect) {
            (Reply::TargetPid(pid), Dialect::Seed) => format!("TARGET_PID {pid}"),
            (Reply::TargetPid(pid), Dialect::Legacy) => format!("target_pid {pid}"),
            (Reply::Ready, Dialect::Seed) => "READY".into(),
            (Reply::Ready, Dialect::Legacy) => "ready".into(),
            // A message never spans lines: a newline in it would desynchronise the reader.
            (Reply::Error(msg), Dialect::Seed) => format!("ERROR: {}", one_line(msg)),
            (Reply::Error(msg), Dialect::Legacy) => format!("error : {}", one_line(msg)),
            // JSON from serde_json escapes every newline inside its strings.
            (Reply::Processes(json), Dialect::Seed) => format!("PROCESSES {}", one_line(json)),
            (Reply::Processes(json), Dialect::Legacy) => format!("processes {}", one_line(json)),
            (Reply::Stacks(json), Dialect::Seed) => format!("STACKS {}", one_line(json)),
            (Reply::Stacks(json), Dialect::Legacy) => format!("stacks {}", one_line(json)),
            (Reply::Tasks(json), Dialect::Seed) => format!("TASKS {}", one_line(json)),
            (Reply::Tasks(json), Dialect::Legacy) => format!("tasks {}", one_line(json)),
            (Reply::Waiting(msg), Dialect::Seed) => format!("WAITING {}", one_line(msg)),
            (Reply::Waiting(msg), Dialect::Legacy) => format!("waiting : {}", one_line(msg)),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line(Dialect::Seed))
    }
}

fn one_line(msg: &str) -> String {
    msg.replace(['\n', '\r'], " ")
}

/// What was wrong with a control line; its `Display` is the text of the `ERROR:` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    Blank,
    Unknown {
        word: String,
    },
    MissingPid {
        command: &'static str,
    },
    ExtraArguments {
        command: &'static str,
        extra: String,
    },
    BadPid {
        text: String,
        why: PidProblem,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidProblem {
    NotANumber,
    Signed,
    Zero,
    TooLarge,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Blank => f.write_str("blank command line"),
            CommandError::Unknown { word } => write!(
                f,
                "unknown command '{word}' (expected GET_TARGET_PID, GRANT_ACCESS <pid> [<process pid>] [WAIT], REVOKE_ACCESS <pid> or TERMINATE)"
            ),
            CommandError::MissingPid { command: "STACK" } => {
                f.write_str("STACK needs a pid of the supervised tree, or ALL")
            }
            CommandError::MissingPid { command: "TASKS" } => {
                f.write_str("TASKS needs a pid of the supervised tree")
            }
            CommandError::MissingPid { command } => write!(f, "{command} needs the client's pid"),
            CommandError::ExtraArguments { command, extra } => {
                write!(f, "unexpected argument after {command}: '{extra}'")
            }
            CommandError::BadPid { text, why } => {
                write!(f, "invalid pid '{text}': ")?;
                match why {
                    PidProblem::NotANumber => f.write_str("not a decimal number"),
                    PidProblem::Signed => f.write_str("a pid is plain digits, without a sign"),
                    PidProblem::Zero => {
                        f.write_str("pid 0 is no process (for Yama it would revoke the grant)")
                    }
                    PidProblem::TooLarge => {
                        write!(f, "larger than the largest Linux pid ({PID_MAX_LIMIT})")
                    }
                }
            }
        }
    }
}

/// Parses one control line (newline already removed). Command words in any case.
pub fn parse_command(line: &str) -> Result<Command, CommandError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split_ascii_whitespace();
    let Some(word) = words.next() else {
        return Err(CommandError::Blank);
    };
    let rest: Vec<&str> = words.collect();
    let no_arguments = |command: &'static str, cmd: Command| match rest.as_slice() {
        [] => Ok(cmd),
        extra => Err(CommandError::ExtraArguments {
            command,
            extra: extra.join(" "),
        }),
    };
    match word.to_ascii_uppercase().as_str() {
        "GET_TARGET_PID" => no_arguments("GET_TARGET_PID", Command::GetTargetPid),
        "TERMINATE" => no_arguments("TERMINATE", Command::Terminate),
        "GRANT_ACCESS" => match rest.as_slice() {
            [] => Err(CommandError::MissingPid {
                command: "GRANT_ACCESS",
            }),
            [pid, more @ ..] => {
                let pid = parse_pid(pid)?;
                let (wait, more) = match more {
                    [before @ .., last] if last.eq_ignore_ascii_case(WAIT_WORD) => (true, before),
                    other => (false, other),
                };
                let process = match more {
                    [] => None,
                    [process] => Some(parse_pid(process)?),
                    [_, extra @ ..] => {
                        return Err(CommandError::ExtraArguments {
                            command: "GRANT_ACCESS <pid> [<process pid>] [WAIT]",
                            extra: extra.join(" "),
                        })
                    }
                };
                Ok(Command::GrantAccess { pid, process, wait })
            }
        },
        "PS" => no_arguments("PS", Command::Ps),
        "STACK" => match rest.as_slice() {
            [] => Err(CommandError::MissingPid { command: "STACK" }),
            [all] if all.eq_ignore_ascii_case("ALL") => Ok(Command::Stack {
                which: StackTarget::All,
            }),
            [pid] => parse_pid(pid).map(|pid| Command::Stack {
                which: StackTarget::Pid(pid),
            }),
            [_, extra @ ..] => Err(CommandError::ExtraArguments {
                command: "STACK <pid|ALL>",
                extra: extra.join(" "),
            }),
        },
        "TASKS" => match rest.as_slice() {
            [] => Err(CommandError::MissingPid { command: "TASKS" }),
            [pid] => parse_pid(pid).map(|pid| Command::Tasks { pid }),
            [_, extra @ ..] => Err(CommandError::ExtraArguments {
                command: "TASKS <pid>",
                extra: extra.join(" "),
            }),
        },
        "REVOKE_ACCESS" => match rest.as_slice() {
            [] => Err(CommandError::MissingPid {
                command: "REVOKE_ACCESS",
            }),
            [pid] => parse_pid(pid).map(|pid| Command::RevokeAccess { pid }),
            [_, extra @ ..] => Err(CommandError::ExtraArguments {
                command: "REVOKE_ACCESS <pid>",
                extra: extra.join(" "),
            }),
        },
        _ => Err(CommandError::Unknown {
            word: truncate(word, 40),
        }),
    }
}

/// A pid is plain ASCII digits: `+7`, `-1`, `1_000`, `0x10` are refused so that nothing
/// but the intended process can ever reach `prctl` (-1 would mean "anyone may attach").
pub fn parse_pid(text: &str) -> Result<u32, CommandError> {
    let bad = |why| CommandError::BadPid {
        text: truncate(text, 24),
        why,
    };
    if text.starts_with(['+', '-'])
        && text.len() > 1
        && text[1..].bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(PidProblem::Signed));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(PidProblem::NotANumber));
    }
    let digits = text.trim_start_matches('0');
    if digits.is_empty() {
        return Err(bad(PidProblem::Zero));
    }
    match digits.parse::<u32>() {
        Ok(pid) if pid <= PID_MAX_LIMIT => Ok(pid),
        _ => Err(bad(PidProblem::TooLarge)),
    }
}

/// `s` cut to at most `max` characters, an ellipsis marking a cut (which makes it
/// `max + 1` characters long).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// What was wrong with a reply line (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    pub line: String,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unexpected reply from the controller: '{}'",
            truncate(&self.line, 80)
        )
    }
}

/// Parses a reply line in either dialect (the client accepts both, so it also works
/// against a controller of the other dialect).
pub fn parse_reply(line: &str) -> Result<Reply, ReplyError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let err = || ReplyError {
        line: line.to_string(),
    };
    if let Some(msg) = line
        .strip_prefix("ERROR:")
        .or_else(|| line.strip_prefix("error :"))
    {
        return Ok(Reply::Error(msg.trim().to_string()));
    }
    if let Some(msg) = line
        .strip_prefix("WAITING ")
        .or_else(|| line.strip_prefix("waiting : "))
    {
        return Ok(Reply::Waiting(msg.trim().to_string()));
    }
    let mut words = line.split_ascii_whitespace();
    let word = words.next().ok_or_else(err)?;
    let rest: Vec<&str> = words.collect();
    let json = |prefix: &str| {
        line.get(prefix.len()..)
            .filter(|_| line[..prefix.len()].eq_ignore_ascii_case(prefix))
            .map(|json| json.trim().to_string())
    };
    for (prefix, make) in [
        ("PROCESSES ", Reply::Processes as fn(String) -> Reply),
        ("STACKS ", Reply::Stacks),
        ("TASKS ", Reply::Tasks),
    ] {
        if let Some(json) = json(prefix) {
            return Ok(make(json));
        }
    }
    match (word.to_ascii_uppercase().as_str(), rest.as_slice()) {
        ("READY", []) => Ok(Reply::Ready),
        ("TARGET_PID", [pid]) => parse_pid(pid).map(Reply::TargetPid).map_err(|_| err()),
        _ => Err(err()),
    }
}

/// One framed control line as the reader saw it. Recorded in the journal as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Frame {
    /// A line of valid UTF-8. `terminated` is false for a last line that ended at EOF.
    Text {
        text: String,
        terminated: bool,
    },
    NotUtf8 {
        len: usize,
    },
    Oversized {
        len: usize,
    },
}

/// Splits a byte stream into [`Frame`]s. Pure: the FIFO reader feeds it what `read`
/// returned and calls [`LineFramer::finish`] when all writers have closed.
#[derive(Debug, Default)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Length of the current line when it outgrew [`MAX_LINE`]; its bytes are dropped.
    overflow: Option<usize>,
}

impl LineFramer {
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.take(&bytes[..nl]);
            frames.push(self.emit(true));
            bytes = &bytes[nl + 1..];
        }
        self.take(bytes);
        frames
    }

    /// All writers closed: a pending partial line is a line of its own.
    pub fn finish(&mut self) -> Option<Frame> {
        (!self.buf.is_empty() || self.overflow.is_some()).then(|| self.emit(false))
    }

    fn take(&mut self, bytes: &[u8]) {
        if let Some(len) = self.overflow.as_mut() {
            *len += bytes.len();
        } else if self.buf.len() + bytes.len() > MAX_LINE {
            self.overflow = Some(self.buf.len() + bytes.len());
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn emit(&mut self, terminated: bool) -> Frame {
        if let Some(len) = self.overflow.take() {
            return Frame::Oversized { len };
        }
        let bytes = std::mem::take(&mut self.buf);
        match String::from_utf8(bytes) {
            Ok(text) => Frame::Text { text, terminated },
            Err(e) => Frame::NotUtf8 {
                len: e.as_bytes().len(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("GET_TARGET_PID", Command::GetTargetPid)]
    #[case("get_target_pid", Command::GetTargetPid)]
    #[case("Get_Target_Pid\r", Command::GetTargetPid)]
    #[case("GRANT_ACCESS 4242", Command::grant(4242))]
    #[case("  grant_access   17  ", Command::grant(17))]
    #[case("GRANT_ACCESS 007", Command::grant(7))]
    #[case("GRANT_ACCESS 4194304", Command::grant(PID_MAX_LIMIT))]
    #[case("GRANT_ACCESS 12 34", Command::GrantAccess { pid: 12, process: Some(34), wait: false })]
    #[case("GRANT_ACCESS 12 34 WAIT", Command::GrantAccess { pid: 12, process: Some(34), wait: true })]
    #[case("grant_access 12 wait", Command::GrantAccess { pid: 12, process: None, wait: true })]
    #[case("terminate", Command::Terminate)]
    #[case("PS", Command::Ps)]
    #[case("ps", Command::Ps)]
    #[case("STACK 42", Command::Stack { which: StackTarget::Pid(42) })]
    #[case("stack all", Command::Stack { which: StackTarget::All })]
    #[case("STACK All", Command::Stack { which: StackTarget::All })]
    #[case("TASKS 7", Command::Tasks { pid: 7 })]
    fn parses_commands(#[case] line: &str, #[case] expected: Command) {
        assert_eq!(parse_command(line), Ok(expected));
    }

    #[rstest]
    #[case("", "blank command line")]
    #[case("   ", "blank command line")]
    #[case("HELLO", "unknown command 'HELLO'")]
    #[case("GRANT_ACCESS", "needs the client's pid")]
    #[case(
        "GRANT_ACCESS 1 2 3",
        "unexpected argument after GRANT_ACCESS <pid> [<process pid>] [WAIT]: '3'"
    )]
    #[case("GRANT_ACCESS 1 soon", "invalid pid 'soon': not a decimal number")]
    #[case("GRANT_ACCESS 1 0 WAIT", "invalid pid '0'")]
    #[case("GRANT_ACCESS 1 WAIT 2", "unexpected argument after GRANT_ACCESS")]
    #[case(
        "GET_TARGET_PID now",
        "unexpected argument after GET_TARGET_PID: 'now'"
    )]
    #[case("TERMINATE please", "unexpected argument after TERMINATE")]
    #[case("GRANT_ACCESS abc", "invalid pid 'abc': not a decimal number")]
    #[case("GRANT_ACCESS 0", "invalid pid '0': pid 0 is no process")]
    #[case("GRANT_ACCESS 000", "invalid pid '000': pid 0 is no process")]
    #[case(
        "GRANT_ACCESS -1",
        "invalid pid '-1': a pid is plain digits, without a sign"
    )]
    #[case("GRANT_ACCESS -5", "without a sign")]
    #[case("GRANT_ACCESS +7", "without a sign")]
    #[case("GRANT_ACCESS 1_000", "invalid pid '1_000': not a decimal number")]
    #[case("GRANT_ACCESS 0x10", "not a decimal number")]
    #[case("GRANT_ACCESS 4194305", "larger than the largest Linux pid")]
    #[case(
        "GRANT_ACCESS 99999999999999999999999",
        "larger than the largest Linux pid"
    )]
    #[case("GRANT_ACCESS ４２", "not a decimal number")]
    #[case("PS now", "unexpected argument after PS: 'now'")]
    #[case("STACK", "STACK needs a pid of the supervised tree, or ALL")]
    #[case("STACK 1 2", "unexpected argument after STACK <pid|ALL>: '2'")]
    #[case("STACK 0", "invalid pid '0'")]
    #[case("STACK everything", "invalid pid 'everything'")]
    #[case("TASKS", "TASKS needs a pid of the supervised tree")]
    #[case("TASKS -3", "without a sign")]
    fn refuses_bad_commands(#[case] line: &str, #[case] message_part: &str) {
        let err = parse_command(line).expect_err(line).to_string();
        assert!(err.contains(message_part), "{line:?} gave {err:?}");
    }

    #[test]
    fn replies_in_both_dialects_round_trip() {
        for reply in [
            Reply::TargetPid(12),
            Reply::Ready,
            Reply::Error("it broke".into()),
            Reply::Processes(r#"{"target":1,"processes":[]}"#.into()),
            Reply::Stacks(r#"{"a":"ERROR: not an error"}"#.into()),
            Reply::Tasks("[]".into()),
            Reply::Waiting("1.0 s: the target ran no Python code yet".into()),
        ] {
            for dialect in [Dialect::Seed, Dialect::Legacy] {
                assert_eq!(parse_reply(&reply.to_line(dialect)), Ok(reply.clone()));
            }
        }
        assert_eq!(
            Reply::Error("a\nb".into()).to_line(Dialect::Seed),
            "ERROR: a b"
        );
        assert_eq!(
            Reply::Error("x".into()).to_line(Dialect::Legacy),
            "error : x"
        );
        assert!(parse_reply("TARGET_PID -3").is_err());
        assert!(parse_reply("READY now").is_err());
    }

    #[test]
    fn commands_format_per_dialect() {
        let all = Command::Stack {
            which: StackTarget::All,
        };
        assert_eq!(all.to_line(Dialect::Seed), "STACK ALL");
        assert_eq!(all.to_line(Dialect::Legacy), "stack all");
        assert_eq!(
            Reply::Processes("{}".into()).to_line(Dialect::Legacy),
            "processes {}"
        );
        let grant = Command::grant(9);
        assert_eq!(grant.to_line(Dialect::Seed), "GRANT_ACCESS 9");
        assert_eq!(grant.to_line(Dialect::Legacy), "grant_access 9");
        assert_eq!(parse_command(&grant.to_line(Dialect::Legacy)), Ok(grant));
        let waiting = Command::GrantAccess {
            pid: 9,
            process: Some(10),
            wait: true,
        };
        assert_eq!(waiting.to_line(Dialect::Seed), "GRANT_ACCESS 9 10 WAIT");
        assert_eq!(waiting.to_line(Dialect::Legacy), "grant_access 9 10 wait");
        for dialect in [Dialect::Seed, Dialect::Legacy] {
            assert_eq!(parse_command(&waiting.to_line(dialect)), Ok(waiting));
        }
    }

    fn text(s: &str) -> Frame {
        Frame::Text {
            text: s.into(),
            terminated: true,
        }
    }

    #[test]
    fn framer_splits_joins_and_bounds_lines() {
        let mut framer = LineFramer::default();
        assert_eq!(
            framer.push(b"GET_TARGET_PID\nTERM"),
            vec![text("GET_TARGET_PID")]
        );
        assert_eq!(framer.push(b"INATE\n\n"), vec![text("TERMINATE"), text("")]);
        assert_eq!(framer.push(b"\xff\xfe\n"), vec![Frame::NotUtf8 { len: 2 }]);
        let long = vec![b'A'; MAX_LINE + 10];
        assert_eq!(framer.push(&long), vec![]);
        assert_eq!(
            framer.push(b"BB\nREADY"),
            vec![Frame::Oversized { len: MAX_LINE + 12 }]
        );
        assert_eq!(
            framer.finish(),
            Some(Frame::Text {
                text: "READY".into(),
                terminated: false
            })
        );
        assert_eq!(framer.finish(), None);
        let exactly_max = vec![b'A'; MAX_LINE];
        assert!(matches!(
            &framer.push(&[exactly_max.as_slice(), b"\n"].concat())[..],
            [Frame::Text { .. }]
        ));
    }
}
