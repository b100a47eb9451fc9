//! The client's REPL as one state machine: what the user typed, what the controller
//! replied, what was found about the target and how pdb ended come in as [`Input`]s
//! (facts, past tense); what to print, send, inspect and run goes out as [`Effect`]s
//! (instructions). No terminal, pipe, process or clock here: `crate::io::client` is the
//! driver that carries the effects out and turns OS events into inputs.
//!
//! # Driver contract
//! 1. Build a [`Client`] from a [`Config`] and feed [`Input::Started`].
//! 2. Carry out the returned effects in order.
//! 3. Wait for the next fact. [`Client::wants_line`] says whether (and with which prompt)
//!    a line of the user's input is wanted now; only then may the driver read one. While
//!    a request is out ([`Effect::Send`]) its outcome is awaited; while pdb runs, its exit.
//! 4. Stop after carrying out [`Effect::Exit`].
//!
//! # Where the next features go
//! - A progress line while waiting: a deadline in the waiting states (`AskingTarget`,
//!   `Granting`), exposed as `poll_timeout()` like the controller's core, and a
//!   `DeadlineReached` input that emits a `Say` and the next deadline. The driver already
//!   waits in one `select!`; it adds `at(deadline)`.
//! - Ctrl-C cancelling an attach: an `InterruptReceived` input in the waiting states that
//!   emits a `CancelRequest` effect and returns to the prompt. The driver turns SIGINT
//!   into a channel event (a self-pipe) and wakes the exchange thread through the wake
//!   descriptor that `ResponseReader::next_line` already takes.
//! - `attach PID`: typed lines are parsed in `Client::on_typed`; a chosen pid enters
//!   [`Attaching::Inspecting`] directly, skipping [`Attaching::AskingTarget`] (the
//!   attaching states already carry the target pid).
//! - One-shot subcommands (`heli-client attach -c CMD`, `ps`, `terminate`): a [`Config`]
//!   field naming the one command, handled as if typed after the probe, and
//!   [`Client::wants_line`] answering `None` at the prompt, where the session then ends.
#![deny(clippy::wildcard_enum_match_arm)]

pub mod trust;

use super::ptrace_policy::{attach_rule, AttachRule, TracerPrivilege};
use super::supervisor::Yama;
use super::tree::render_answer;
use super::wire::{parse_pid, parse_reply, Command, Dialect, Reply, StackTarget};
use std::path::PathBuf;
use trust::{judge_interpreter, ExecutableFacts, InterpreterVerdict};

/// The exit statuses of `heli-client` (README, "Exit status").
/// `heli-client`'s exit status (the README's exit status table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientExit {
    /// Every `attach` and `terminate` succeeded, or none was tried.
    Ok,
    /// An `attach` or `terminate` failed (typos, `help` and blank lines never count).
    CommandFailed,
    /// The command line was wrong.
    Usage,
    /// At start-up, no controller of this user serves the pipes.
    NoController,
}

impl ClientExit {
    pub const fn code(self) -> i32 {
        match self {
            ClientExit::Ok => 0,
            ClientExit::CommandFailed => 1,
            ClientExit::Usage => 2,
            ClientExit::NoController => 3,
        }
    }
}

pub const EXIT_OK: i32 = ClientExit::Ok.code();
pub const EXIT_COMMAND_FAILED: i32 = ClientExit::CommandFailed.code();
pub const EXIT_USAGE: i32 = ClientExit::Usage.code();
pub const EXIT_NO_CONTROLLER: i32 = ClientExit::NoController.code();

/// Where the user's lines come from; it decides who reads pdb's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSource {
    /// A terminal: pdb reads it itself while it runs; the client reads only at its prompt.
    Terminal,
    /// A pipe or file: the client is the only reader and hands pdb its lines.
    Piped,
}

/// Everything the client needs to know about its surroundings, fixed for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub dialect: Dialect,
    pub input: InputSource,
    /// The pipe directory, as the user named it (for messages).
    pub pipe_dir: String,
    /// How long each request may take, opening the pipes included.
    pub request_timeout_ms: u64,
    /// The client's own pid: the one it asks access for.
    pub own_pid: u32,
    /// The client's real uid: the pipes and the target must belong to it.
    pub uid: u32,
    /// `--python`: the user's own choice of interpreter for pdb, run as given.
    pub python: Option<PathBuf>,
    /// Yama and the client's privilege at start-up, for the note when no controller runs.
    pub yama: Yama,
    pub privilege: TracerPrivilege,
    /// How long an attach waits for the target to run the grant and pdb's request
    /// (`--attach-timeout`); `None`: until the user presses Ctrl-C.
    pub attach_timeout_ms: Option<u64>,
    /// A line handled as if typed after the probe, after which the session ends (the
    /// one-shot `heli-client attach [PID]`).
    pub one_shot: Option<String>,
}

/// Why a request to the controller got no reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFailure {
    /// No FIFOs in the pipe directory (or no directory).
    PipesMissing,
    /// The FIFOs exist but no process reads `control`.
    NotServed,
    /// The pipe directory or a FIFO is not safe to use; the text says what and why.
    Untrusted(String),
    TimedOut {
        waited_ms: u64,
    },
    /// The controller closed `response` in the middle of a line.
    Truncated {
        partial: String,
    },
    /// Any other I/O failure, described.
    Io(String),
}

/// What the driver found out about the target pid the controller named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetFacts {
    Running {
        /// The real uid the target runs as.
        uid: u32,
        /// Its executable, which becomes pdb's interpreter unless `--python` is given.
        exe: ExecutableFacts,
        /// Yama and the client's privilege, read now (the scope can change at any time).
        yama: Yama,
        privilege: TracerPrivilege,
    },
    NotRunning,
}

/// How pdb ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbExit {
    Code(i32),
    Signal(i32),
}

/// Facts observed at the edge, past tense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The client process started.
    Started,
    /// The user's input gave one line (without its newline).
    LineRead {
        text: String,
    },
    /// The user's input ended (EOF, or it cannot be read any more).
    InputEnded,
    /// Ctrl-C at the prompt interrupted the read.
    PromptInterrupted,
    /// The reply line to the request out.
    Replied {
        line: String,
    },
    /// The request out was written; none of its kind gets a reply (legacy `terminate`).
    Delivered,
    RequestFailed {
        failure: RequestFailure,
    },
    TargetInspected {
        pid: u32,
        facts: TargetFacts,
    },
    /// pdb could not be started; the text says why.
    PdbNotStarted {
        error: String,
    },
    /// Writing to pdb's input failed: it reads no more.
    PdbInputBroken,
    PdbExited {
        status: PdbExit,
    },
    /// A `WAITING` line of the grant out. The controller's words name each thread's state
    /// and innermost Python frame: it can read them at `ptrace_scope=1`, where the
    /// client, before its grant, cannot.
    GrantProgress {
        /// Milliseconds since the controller got the request.
        elapsed_ms: u64,
        /// The controller's words (what the grant waits for).
        controller: String,
    },
    /// Ctrl-C while an attach is under way (not at the prompt).
    Interrupted,
    /// The request out was given up on [`Effect::CancelRequest`]: its connection closed.
    RequestCancelled,
    /// pdb's wait for the target was cancelled: pdb was stopped and its request taken
    /// back (`withdrawn`), or it had not written one yet. Its exit follows.
    PdbCancelled {
        withdrawn: bool,
    },
    /// pdb's request waited longer than `--attach-timeout`: the driver cancelled it as on
    /// Ctrl-C; its exit follows.
    PdbGaveUp {
        waited_ms: u64,
    },
}

/// How a line of output should look: success and failure lines may be coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Success,
    Failure,
}

/// Which interpreter runs `-m pdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpreter {
    /// This path: `--python`, or the target's own executable after it was judged safe.
    Path(PathBuf),
    /// The target's executable could not be read: look `python3.14` up on `PATH`.
    SearchPath,
}

/// Instructions for the driver, carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Print one line on stdout.
    Say {
        text: String,
        tone: Tone,
    },
    /// Print one line on stderr.
    Warn {
        text: String,
    },
    /// Send this command and report its reply (or [`Input::Delivered`] when
    /// `expect_reply` is false), giving up after `timeout_ms`.
    Send {
        command: Command,
        expect_reply: bool,
        timeout_ms: u64,
    },
    /// Find out who runs `pid` and what its executable is.
    InspectTarget {
        pid: u32,
    },
    /// Run `<interpreter> -m pdb -p <target>` as the client's child, on the terminal or
    /// with its input on a pipe fed by [`Effect::FeedPdb`].
    RunPdb {
        interpreter: Interpreter,
        target: u32,
    },
    /// Write this line (a newline added) to pdb's input.
    FeedPdb {
        line: String,
    },
    /// Close pdb's input: it gets EOF.
    ClosePdbInput,
    /// Send `GRANT_ACCESS ... WAIT` on the socket and report each `WAITING` line as
    /// [`Input::GrantProgress`], then the final reply; the connection is closed after `timeout_ms` (a timeout failure) or on
    /// [`Effect::CancelRequest`]. Without a socket, the seed line on the FIFO instead.
    SendWaiting {
        command: Command,
        timeout_ms: Option<u64>,
    },
    /// Give up the request out: close its connection (the controller then withdraws what
    /// it had started); answered by [`Input::RequestCancelled`] or its outcome if it came
    /// first.
    CancelRequest,
    /// Ctrl-C while pdb runs: if pdb's session is not up yet (its request still waits in
    /// the target), stop pdb and take its request back, then report
    /// [`Input::PdbCancelled`]; once the session is up, Ctrl-C is pdb's own ("Program
    /// interrupted") and nothing is done.
    CancelPdb,
    /// Show the progress line: on a terminal, one line rewritten in place; otherwise a
    /// plain line. Any later output starts on a fresh line.
    Progress {
        text: String,
    },
    Exit {
        code: i32,
    },
}

/// A line of the user's input that the driver should read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineWanted {
    /// At the client's prompt: show this prompt first.
    Prompt(&'static str),
    /// A line meant for pdb (piped input only): no prompt.
    ForPdb,
}

pub const PROMPT: &str = ">>> ";

const HELP: &str = "Available commands:
  attach     - Attach debugger to the target process
  ps         - List the target and every process it started
  stack [PID] [--all]
             - Every thread's Python stack of PID (default: the target), or of
               every Python process of the tree, read without stopping it
  tasks [PID]
             - The asyncio tasks of PID (default: the target)
  attach PID - Attach debugger to another process of the supervised tree
  quit       - Exit client (leave controller running)
  terminate  - Stop controller, target, and exit client
  help       - Show this help message";

/// The request for `ps`, `stack [PID] [--all]` or `tasks [PID]` (REPL and one-shot);
/// `Err` is the usage line to show. `target`: the default pid, when known.
pub fn tree_question(word: &str, args: &[&str], target: Option<u32>) -> Result<Command, String> {
    let usage = match word {
        "ps" => "usage: ps",
        "stack" => "usage: stack [PID] [--all]",
        _ => "usage: tasks [PID]",
    };
    let pid = |text: &str| super::wire::parse_pid(text).map_err(|e| format!("{e} ({usage})"));
    let default = || target.ok_or_else(|| format!("the target's pid is not known yet ({usage})"));
    match (word, args) {
        ("ps", []) => Ok(Command::Ps),
        ("stack", ["--all"] | ["all"]) => Ok(Command::Stack {
            which: StackTarget::All,
        }),
        ("stack", []) => Ok(Command::Stack {
            which: StackTarget::Pid(default()?),
        }),
        ("stack", [one]) if !one.starts_with("--") => Ok(Command::Stack {
            which: StackTarget::Pid(pid(one)?),
        }),
        ("tasks", []) => Ok(Command::Tasks { pid: default()? }),
        ("tasks", [one]) if !one.starts_with("--") => Ok(Command::Tasks { pid: pid(one)? }),
        _ => Err(usage.to_string()),
    }
}

/// A reply as it goes in a message: a long JSON payload is cut.
fn cut_reply(reply: &Reply) -> String {
    cut_line(&reply.to_string())
}

fn cut_line(line: &str) -> String {
    super::wire::truncate(line, 120)
}

/// The steps of one `attach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attaching {
    /// `GET_TARGET_PID` is out; `chosen`: the pid typed after `attach`.
    AskingTarget { chosen: Option<u32> },
    /// The pipes of a controller seen earlier are gone: is its target still running?
    AccountingForGone { target: u32 },
    /// The target's owner and executable are being looked up.
    Inspecting { target: u32 },
    /// `GRANT_ACCESS <own pid>` is out; `interpreter` will run pdb once it is granted.
    /// `target`: the process pdb attaches to (the target or the pid chosen).
    Granting {
        target: u32,
        interpreter: Interpreter,
        /// A `WAITING` line came: the user has been told that the attach waits.
        told_waiting: bool,
    },
    /// Ctrl-C during the grant: the request is being given up; the grant is taken back
    /// afterwards in case the target ran it meanwhile.
    Cancelling,
    /// pdb runs. `feeding`: piped input still goes to pdb (its quit not yet handed over,
    /// input not ended, its input not broken). `quit_fed`: pdb got its quit line.
    PdbRunning {
        interpreter: Interpreter,
        feeding: bool,
        quit_fed: bool,
        /// Ctrl-C (or `--attach-timeout`) stopped pdb before its session was up: its exit
        /// is the cancellation's, not a failure of pdb.
        cancelled: Option<Cancel>,
    },
    /// pdb is gone; `REVOKE_ACCESS <own pid>` is out so the grant ends with the session
    /// (a seed-dialect extension of this project's controller). `ok`: how pdb ended.
    Revoking {
        ok: bool,
        quit_fed: bool,
        cancelled: Option<Cancel>,
    },
}

/// Why an attach was stopped before pdb's session was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The user pressed Ctrl-C.
    Interrupted,
    /// `--attach-timeout` ran out while pdb's request waited in the target.
    GaveUp { waited_ms: u64 },
}

/// The session.
///
/// ```text
///            Started                 reply TARGET_PID
///   (new) ──────────▶ ┌─────────┐ ─────────────────────▶ ┌──────────┐ ◀─────────────────┐
///                     │ Probing │                        │ AtPrompt │  help, typo, ""   │
///                     └─────────┘                        └──────────┘ ──────────────────┘
///                          │ no controller                │   │   │ ▲  ▲
///                          ▼                       attach │   │   │ │  │ pdb's quit line
///                     ┌──────────┐ ◀── quit, q, EOF ──────┼───┘   │ │  │
///                     │ Finished │                        ▼       │ │ ┌────────────────┐
///                     └──────────┘  ┌──────────────────────────┐  │ │ │ SkippingPdb-   │
///                          ▲        │ Attaching:               │  │ │ │ Lines (piped;  │
///                          │        │ AskingTarget             │──┼─┘ │ pdb never got  │
///                          │        │  (→ AccountingForGone)   │  │   │ its quit line) │
///                          │        │ → Inspecting             │  │   └────────────────┘
///                          │        │ → Granting               │──┼──────────▶ ▲
///                          │        │ → PdbRunning             │  │
///                          │        └──────────────────────────┘  │ terminate
///                          │   reply, no reply, failure   ┌─────────────┐
///                          └───────────────────────────── │ Terminating │
///                                                         └─────────────┘
/// ```
/// An attach ends at the prompt, or (piped input, pdb never got its quit line) in
/// `SkippingPdbLines`. `AccountingForGone`: the pipes of a controller seen earlier are
/// gone, and the target it served is looked at to say why.
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `GET_TARGET_PID` at start-up, to learn whether a controller serves the pipes.
    Probing,
    /// Waiting for a command at the prompt.
    AtPrompt,
    Attaching(Attaching),
    /// After an attach whose pdb never got its quit line (piped input): the lines meant
    /// for pdb, up to its quit, are dropped rather than run as client commands.
    SkippingPdbLines,
    /// `TERMINATE` is out.
    Terminating,
    /// `PS`, `STACK` or `TASKS` is out; its answer is printed at the prompt.
    Asking,
    Finished,
}

/// pdb's own ways to end a session: after one of these the client takes its input back.
pub fn is_pdb_quit(line: &str) -> bool {
    matches!(
        line.split_whitespace().next(),
        Some("q" | "quit" | "exit" | "EOF")
    )
}

/// The client REPL's state machine.
#[derive(Debug)]
pub struct Client {
    config: Config,
    state: State,
    /// Attaches and terminates that failed so far.
    failures: u32,
    /// The target pid the controller last named: when its pipes are gone later, whether
    /// this process still runs tells why.
    known_target: Option<u32>,
}

impl Client {
    pub fn new(config: Config) -> Client {
        Client {
            config,
            state: State::Probing,
            failures: 0,
            known_target: None,
        }
    }

    /// The state's name, for tests and diagnostics.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            State::Probing => "Probing",
            State::AtPrompt => "AtPrompt",
            State::Attaching(Attaching::AskingTarget { .. }) => "AskingTarget",
            State::Attaching(Attaching::Cancelling) => "Cancelling",
            State::Attaching(Attaching::AccountingForGone { .. }) => "AccountingForGone",
            State::Attaching(Attaching::Inspecting { .. }) => "Inspecting",
            State::Attaching(Attaching::Granting { .. }) => "Granting",
            State::Attaching(Attaching::PdbRunning { .. }) => "PdbRunning",
            State::Attaching(Attaching::Revoking { .. }) => "Revoking",
            State::SkippingPdbLines => "SkippingPdbLines",
            State::Terminating => "Terminating",
            State::Asking => "Asking",
            State::Finished => "Finished",
        }
    }

    /// Whether the driver should read a line of the user's input now, and how.
    pub fn wants_line(&self) -> Option<LineWanted> {
        match &self.state {
            State::AtPrompt => Some(LineWanted::Prompt(PROMPT)),
            State::SkippingPdbLines => Some(LineWanted::ForPdb),
            State::Attaching(Attaching::PdbRunning { feeding: true, .. }) => {
                Some(LineWanted::ForPdb)
            }
            State::Attaching(Attaching::PdbRunning { feeding: false, .. })
            | State::Attaching(
                Attaching::AskingTarget { .. }
                | Attaching::Cancelling
                | Attaching::AccountingForGone { .. }
                | Attaching::Inspecting { .. }
                | Attaching::Granting { .. }
                | Attaching::Revoking { .. },
            )
            | State::Probing
            | State::Terminating
            | State::Asking
            | State::Finished => None,
        }
    }

    /// The session's exit status so far (README, "Exit status"): 0 while every `attach`
    /// and `terminate` succeeded (or none was tried), 1 once one failed. Typos, `help` and
    /// blank lines never change it: a script that pipes commands wants to know whether
    /// its debugging happened, and a typo is shown on the spot and does nothing. Any
    /// failed attach counts, not only the last: a script that attached twice and got one
    /// pdb session has lost the output of the other.
    pub fn exit_code(&self) -> i32 {
        if self.failures == 0 {
            EXIT_OK
        } else {
            EXIT_COMMAND_FAILED
        }
    }

    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Out(Vec::new());
        let state = std::mem::replace(&mut self.state, State::Finished);
        self.state = self.step(state, input, &mut out);
        out.0
    }

    fn step(&mut self, state: State, input: Input, out: &mut Out) -> State {
        match (state, input) {
            (State::Probing, Input::Started) => {
                out.say("Helicopter Parent - Debug Client");
                out.send(&self.config, Command::GetTargetPid);
                State::Probing
            }
            (State::Probing, Input::Replied { line }) => match parse_reply(&line) {
                Ok(Reply::TargetPid(pid)) => {
                    self.known_target = Some(pid);
                    match self.config.one_shot.clone() {
                        Some(line) => self.on_typed(&line, out),
                        None => {
                            out.say("Type 'help' for available commands");
                            State::AtPrompt
                        }
                    }
                }
                Ok(Reply::Error(msg)) => {
                    self.no_controller(out, format!("Controller error: {msg}"))
                }
                Ok(
                    other @ (Reply::Ready
                    | Reply::Waiting(_)
                    | Reply::Processes(_)
                    | Reply::Stacks(_)
                    | Reply::Tasks(_)),
                ) => self.no_controller(
                    out,
                    format!("unexpected reply to GET_TARGET_PID: {}", cut_reply(&other)),
                ),
                Err(e) => self.no_controller(out, e.to_string()),
            },
            (State::Probing, Input::RequestFailed { failure }) => {
                let asked = Command::GetTargetPid.to_line(self.config.dialect);
                let text = self.describe_failure(&failure, &asked);
                self.no_controller(out, text)
            }
            (State::AtPrompt, Input::LineRead { text }) => self.on_typed(&text, out),
            (State::AtPrompt, Input::InputEnded) => {
                out.say("\nGoodbye!");
                self.finish(out)
            }
            (State::AtPrompt, Input::PromptInterrupted) => {
                out.say("\nInterrupted (type 'quit' to exit)");
                State::AtPrompt
            }
            (State::Attaching(step), input) => self.attaching(step, input, out),
            (State::SkippingPdbLines, Input::LineRead { text }) => {
                out.warn(format!(
                    "heli-client: not run (meant for pdb, which is not attached): {text}"
                ));
                if is_pdb_quit(&text) {
                    State::AtPrompt
                } else {
                    State::SkippingPdbLines
                }
            }
            // The prompt then meets the end of input too, and says goodbye.
            (State::SkippingPdbLines, Input::InputEnded) => State::AtPrompt,
            (State::Terminating, Input::Replied { line }) => match parse_reply(&line) {
                Ok(Reply::Ready) => {
                    out.say_tone("✅ Controller is stopping the target", Tone::Success);
                    self.finish(out)
                }
                Ok(Reply::Error(msg)) => {
                    self.terminate_failed(out, format!("Controller error: {msg}"))
                }
                Ok(
                    Reply::TargetPid(_)
                    | Reply::Waiting(_)
                    | Reply::Processes(_)
                    | Reply::Stacks(_)
                    | Reply::Tasks(_),
                )
                | Err(_) => self.terminate_failed(
                    out,
                    format!("unexpected reply to TERMINATE: {}", cut_line(&line)),
                ),
            },
            (State::Terminating, Input::Delivered) => self.finish(out),
            (State::Asking, Input::Replied { line }) => {
                let answer = parse_reply(&line)
                    .map_err(|e| e.to_string())
                    .and_then(|reply| render_answer(&reply));
                match answer {
                    Ok(lines) => {
                        for text in lines {
                            out.say(&text);
                        }
                    }
                    Err(why) => {
                        out.fail(why);
                        self.failures += 1;
                    }
                }
                State::AtPrompt
            }
            (State::Asking, Input::RequestFailed { failure }) => {
                let text = self.describe_failure(&failure, "the request");
                out.fail(text);
                self.failures += 1;
                State::AtPrompt
            }
            (State::Terminating, Input::RequestFailed { failure }) => {
                let asked = Command::Terminate.to_line(self.config.dialect);
                let text = self.describe_failure(&failure, &asked);
                self.terminate_failed(out, text)
            }
            (state @ State::Finished, _) => state,
            // Ctrl-C outside an attach: the prompt's own is PromptInterrupted; a request
            // in these states is short and bounded by --timeout.
            (
                state @ (State::Probing
                | State::AtPrompt
                | State::SkippingPdbLines
                | State::Terminating
                | State::Asking),
                Input::Interrupted,
            ) => state,
            (
                state @ (State::Probing
                | State::AtPrompt
                | State::SkippingPdbLines
                | State::Terminating
                | State::Asking),
                input @ (Input::Started
                | Input::LineRead { .. }
                | Input::InputEnded
                | Input::PromptInterrupted
                | Input::Replied { .. }
                | Input::Delivered
                | Input::RequestFailed { .. }
                | Input::TargetInspected { .. }
                | Input::PdbNotStarted { .. }
                | Input::PdbInputBroken
                | Input::PdbExited { .. }
                | Input::GrantProgress { .. }
                | Input::RequestCancelled
                | Input::PdbCancelled { .. }
                | Input::PdbGaveUp { .. }),
            ) => {
                debug_assert!(false, "driver bug: {input:?} in state {state:?}");
                state
            }
        }
    }

    /// A line typed at the prompt.
    fn on_typed(&mut self, text: &str, out: &mut Out) -> State {
        let lowered = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = lowered.split_whitespace().collect();
        if let Some(first @ ("ps" | "stack" | "tasks")) = words.first().copied() {
            return match tree_question(first, &words[1..], self.known_target) {
                Ok(command) => {
                    out.push(Effect::Send {
                        command,
                        expect_reply: true,
                        timeout_ms: self
                            .config
                            .request_timeout_ms
                            .saturating_add(super::tree::READING_ALLOWANCE_MS),
                    });
                    State::Asking
                }
                // Like a typo: shown, and nothing was asked.
                Err(usage) => {
                    out.say(&usage);
                    State::AtPrompt
                }
            };
        }
        if let Some(pid) = lowered.strip_prefix("attach ") {
            return match parse_pid(pid.trim()) {
                Ok(pid) => {
                    out.send(&self.config, Command::GetTargetPid);
                    State::Attaching(Attaching::AskingTarget { chosen: Some(pid) })
                }
                Err(e) => {
                    out.say(&format!(
                        "attach: {e} (attach PID, with a pid that heli-client ps lists)"
                    ));
                    if self.config.one_shot.is_some() {
                        self.failures += 1;
                        return self.finish(out);
                    }
                    State::AtPrompt
                }
            };
        }
        match lowered.as_str() {
            "" => State::AtPrompt,
            "attach" => {
                out.send(&self.config, Command::GetTargetPid);
                State::Attaching(Attaching::AskingTarget { chosen: None })
            }
            "quit" | "exit" | "q" => {
                out.say("Goodbye!");
                self.finish(out)
            }
            "terminate" => {
                out.say("Terminating controller and target...");
                out.push(Effect::Send {
                    command: Command::Terminate,
                    // The legacy dialect's terminate gets no reply.
                    expect_reply: self.config.dialect == Dialect::Seed,
                    timeout_ms: self.config.request_timeout_ms,
                });
                State::Terminating
            }
            "help" => {
                out.say(HELP);
                State::AtPrompt
            }
            other => {
                // A typo does nothing and is shown at once: it is not a failure of the
                // session (see the exit status rule on `exit_code`).
                out.say(&format!(
                    "Unknown command: {other}. Type 'help' for available commands"
                ));
                State::AtPrompt
            }
        }
    }

    fn attaching(&mut self, step: Attaching, input: Input, out: &mut Out) -> State {
        match (step, input) {
            (Attaching::AskingTarget { chosen }, Input::Replied { line }) => {
                match parse_reply(&line) {
                    Ok(Reply::TargetPid(pid)) => {
                        self.known_target = Some(pid);
                        let target = chosen.unwrap_or(pid);
                        out.push(Effect::InspectTarget { pid: target });
                        State::Attaching(Attaching::Inspecting { target })
                    }
                    Ok(Reply::Error(msg)) => {
                        self.attach_failed(out, format!("Controller error: {msg}"), false)
                    }
                    Ok(
                        other @ (Reply::Ready
                        | Reply::Waiting(_)
                        | Reply::Processes(_)
                        | Reply::Stacks(_)
                        | Reply::Tasks(_)),
                    ) => self.attach_failed(
                        out,
                        format!("unexpected reply to GET_TARGET_PID: {}", cut_reply(&other)),
                        false,
                    ),
                    Err(e) => self.attach_failed(out, e.to_string(), false),
                }
            }
            (Attaching::Inspecting { target }, Input::TargetInspected { pid, facts })
                if pid == target =>
            {
                self.inspected(target, facts, out)
            }
            (
                Attaching::Granting {
                    target,
                    interpreter,
                    told_waiting,
                },
                Input::GrantProgress {
                    elapsed_ms,
                    controller,
                },
            ) => {
                if !told_waiting {
                    out.say(&format!(
                        "⏳ pid {target} has not run the grant yet: waiting for it (Ctrl-C cancels{})",
                        match self.config.attach_timeout_ms {
                            Some(ms) => format!(", gives up after {}", seconds(ms)),
                            None => String::new(),
                        }
                    ));
                }
                let what = controller
                    .split_once(' ')
                    .map_or(controller.as_str(), |(_, what)| what);
                let text = format!("   waiting {}: {what}", seconds(elapsed_ms));
                out.push(Effect::Progress { text });
                State::Attaching(Attaching::Granting {
                    target,
                    interpreter,
                    told_waiting: true,
                })
            }
            (
                Attaching::Granting {
                    target,
                    interpreter,
                    ..
                },
                Input::Replied { line },
            ) => match parse_reply(&line) {
                Ok(Reply::Ready) => {
                    out.say_tone("✅ Permission granted", Tone::Success);
                    out.say(&format!("\nAttaching pdb to target PID {target}..."));
                    out.say("Type pdb commands (list, next, print, etc.) or 'quit' to detach\n");
                    out.push(Effect::RunPdb {
                        interpreter: interpreter.clone(),
                        target,
                    });
                    State::Attaching(Attaching::PdbRunning {
                        interpreter,
                        feeding: self.config.input == InputSource::Piped,
                        quit_fed: false,
                        cancelled: None,
                    })
                }
                Ok(Reply::Error(msg)) => self.attach_failed(out, refusal_heading(&msg), false),
                Ok(
                    other @ (Reply::TargetPid(_)
                    | Reply::Waiting(_)
                    | Reply::Processes(_)
                    | Reply::Stacks(_)
                    | Reply::Tasks(_)),
                ) => self.attach_failed(
                    out,
                    format!("unexpected reply to GRANT_ACCESS: {}", cut_reply(&other)),
                    false,
                ),
                Err(e) => self.attach_failed(out, e.to_string(), false),
            },
            (
                Attaching::AskingTarget { .. },
                Input::RequestFailed {
                    failure: RequestFailure::PipesMissing,
                },
            ) if self.known_target.is_some() => {
                let target = self.known_target.unwrap_or_default();
                out.push(Effect::InspectTarget { pid: target });
                State::Attaching(Attaching::AccountingForGone { target })
            }
            (Attaching::AccountingForGone { target }, Input::TargetInspected { pid, facts })
                if pid == target =>
            {
                let dir = &self.config.pipe_dir;
                let why = match facts {
                    TargetFacts::NotRunning => format!(
                        "Controller not running any more: its pipes in {dir} are gone, and its target (PID {target}) has exited; a controller ends with its target. Start it again"
                    ),
                    TargetFacts::Running { .. } => format!(
                        "Controller not running any more: its pipes in {dir} are gone, yet its target (PID {target}) still runs. Was the controller stopped, or its pipes removed? Start it again"
                    ),
                };
                self.attach_failed(out, why, false)
            }
            (Attaching::AskingTarget { .. }, Input::RequestFailed { failure }) => {
                let asked = Command::GetTargetPid.to_line(self.config.dialect);
                let text = self.describe_failure(&failure, &asked);
                self.attach_failed(out, text, false)
            }
            (
                Attaching::Granting { target, .. },
                Input::RequestFailed {
                    failure: RequestFailure::TimedOut { waited_ms },
                },
            ) if self.config.attach_timeout_ms.is_some() => self.attach_failed(
                out,
                format!(
                    "Not attached: pid {target} did not run the grant within {} (--attach-timeout); the controller took its request back",
                    seconds(waited_ms)
                ),
                false,
            ),
            (Attaching::Granting { .. }, Input::RequestFailed { failure }) => {
                let asked = Command::grant(self.config.own_pid).to_line(self.config.dialect);
                let text = self.describe_failure(&failure, &asked);
                self.attach_failed(out, text, false)
            }
            // Ctrl-C during a request: it is given up. A grant the target ran meanwhile is
            // taken back once the request has ended, whatever its outcome.
            (
                Attaching::AskingTarget { .. } | Attaching::Granting { .. },
                Input::Interrupted,
            ) => {
                out.push(Effect::CancelRequest);
                State::Attaching(Attaching::Cancelling)
            }
            (
                Attaching::Cancelling,
                Input::RequestCancelled
                | Input::Replied { .. }
                | Input::RequestFailed { .. },
            ) => self.give_back_grant(false, false, Some(Cancel::Interrupted), out),
            (step @ Attaching::Cancelling, Input::Interrupted | Input::GrantProgress { .. }) => {
                State::Attaching(step)
            }
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    cancelled: None,
                },
                Input::Interrupted,
            ) => {
                out.push(Effect::CancelPdb);
                State::Attaching(Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    cancelled: None,
                })
            }
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    cancelled,
                },
                Input::PdbCancelled { .. },
            ) => self.pdb_cancelled(interpreter, feeding, quit_fed, cancelled, Cancel::Interrupted, out),
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    cancelled,
                },
                Input::PdbGaveUp { waited_ms },
            ) => self.pdb_cancelled(
                interpreter,
                feeding,
                quit_fed,
                cancelled,
                Cancel::GaveUp { waited_ms },
                out,
            ),
            (
                step @ (Attaching::PdbRunning {
                    cancelled: Some(_), ..
                }
                | Attaching::Revoking { .. }),
                Input::Interrupted,
            ) => State::Attaching(step),
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding: true,
                    quit_fed,
                    cancelled,
                },
                Input::LineRead { text },
            ) => {
                let quit = is_pdb_quit(&text);
                out.push(Effect::FeedPdb { line: text });
                if quit {
                    out.push(Effect::ClosePdbInput);
                }
                State::Attaching(Attaching::PdbRunning {
                    interpreter,
                    feeding: !quit,
                    quit_fed: quit_fed || quit,
                    cancelled,
                })
            }
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    cancelled,
                },
                Input::InputEnded | Input::PdbInputBroken,
            ) => {
                if feeding {
                    out.push(Effect::ClosePdbInput);
                }
                State::Attaching(Attaching::PdbRunning {
                    interpreter,
                    feeding: false,
                    quit_fed,
                    cancelled,
                })
            }
            (
                Attaching::PdbRunning {
                    interpreter,
                    feeding,
                    quit_fed,
                    ..
                },
                Input::PdbNotStarted { error },
            ) => {
                if feeding {
                    out.push(Effect::ClosePdbInput);
                }
                let python = match &interpreter {
                    Interpreter::Path(path) => path.display().to_string(),
                    Interpreter::SearchPath => "python3.14".into(),
                };
                out.fail(format!("cannot run {python} -m pdb: {error}"));
                out.say("\nDebugger detached");
                self.give_back_grant(false, quit_fed, None, out)
            }
            (
                Attaching::PdbRunning {
                    feeding,
                    quit_fed,
                    cancelled: Some(cancel),
                    ..
                },
                Input::PdbExited { .. },
            ) => {
                if feeding {
                    out.push(Effect::ClosePdbInput);
                }
                self.give_back_grant(false, quit_fed, Some(cancel), out)
            }
            (
                Attaching::PdbRunning {
                    feeding,
                    quit_fed,
                    cancelled: None,
                    ..
                },
                Input::PdbExited { status },
            ) => {
                if feeding {
                    out.push(Effect::ClosePdbInput);
                }
                let ok = match status {
                    PdbExit::Code(0) => true,
                    PdbExit::Code(code) => {
                        out.fail(format!("pdb exited with status {code}"));
                        false
                    }
                    PdbExit::Signal(sig) => {
                        out.fail(format!("pdb was killed by signal {sig}"));
                        false
                    }
                };
                out.say("\nDebugger detached");
                self.give_back_grant(ok, quit_fed, None, out)
            }
            (
                Attaching::Revoking {
                    ok,
                    quit_fed,
                    cancelled,
                },
                Input::Replied { line },
            ) => {
                // A grant replaced by another client's, or never needed (CAP_SYS_PTRACE),
                // is not ours to give back: only other errors are worth a word.
                if let Ok(Reply::Error(msg)) = parse_reply(&line) {
                    if !msg.contains("holds no grant") {
                        out.warn(format!("heli-client: the grant was not taken back: {msg}"));
                    }
                }
                self.revoked(ok, quit_fed, cancelled, out)
            }
            (
                Attaching::Revoking {
                    ok,
                    quit_fed,
                    cancelled,
                },
                Input::RequestFailed { failure },
            ) => {
                let asked = Command::RevokeAccess {
                    pid: self.config.own_pid,
                }
                .to_line(self.config.dialect);
                let text = self.describe_failure(&failure, &asked);
                out.warn(format!("heli-client: the grant was not taken back: {text}"));
                self.revoked(ok, quit_fed, cancelled, out)
            }
            (
                step @ (Attaching::AskingTarget { .. }
                | Attaching::AccountingForGone { .. }
                | Attaching::Inspecting { .. }
                | Attaching::Granting { .. }
                | Attaching::Cancelling
                | Attaching::PdbRunning { .. }
                | Attaching::Revoking { .. }),
                input @ (Input::Started
                | Input::LineRead { .. }
                | Input::InputEnded
                | Input::PromptInterrupted
                | Input::Replied { .. }
                | Input::Delivered
                | Input::RequestFailed { .. }
                | Input::TargetInspected { .. }
                | Input::PdbNotStarted { .. }
                | Input::PdbInputBroken
                | Input::PdbExited { .. }
                | Input::GrantProgress { .. }
                | Input::Interrupted
                | Input::RequestCancelled
                | Input::PdbCancelled { .. }
                | Input::PdbGaveUp { .. }),
            ) => {
                debug_assert!(false, "driver bug: {input:?} while attaching ({step:?})");
                State::Attaching(step)
            }
        }
    }

    /// pdb was stopped before its session came up: its exit, which follows, ends the
    /// attach as cancelled.
    fn pdb_cancelled(
        &mut self,
        interpreter: Interpreter,
        feeding: bool,
        quit_fed: bool,
        cancelled: Option<Cancel>,
        cancel: Cancel,
        out: &mut Out,
    ) -> State {
        if feeding {
            out.push(Effect::ClosePdbInput);
        }
        State::Attaching(Attaching::PdbRunning {
            interpreter,
            feeding: false,
            quit_fed,
            cancelled: cancelled.or(Some(cancel)),
        })
    }

    /// The grant is back (or was never ours): the attach ends, said how if it was cut.
    fn revoked(
        &mut self,
        ok: bool,
        quit_fed: bool,
        cancelled: Option<Cancel>,
        out: &mut Out,
    ) -> State {
        match cancelled {
            None => {}
            Some(Cancel::Interrupted) => out.say("\nattach cancelled"),
            Some(Cancel::GaveUp { waited_ms }) => out.fail(format!(
                "Not attached: the target did not run pdb's request within {} (--attach-timeout); it was taken back",
                seconds(waited_ms)
            )),
        }
        self.attach_done(ok, quit_fed, out)
    }

    /// The facts about the target decide whether to ask for access, and for which pdb.
    fn inspected(&mut self, target: u32, facts: TargetFacts, out: &mut Out) -> State {
        let TargetFacts::Running {
            uid,
            exe,
            yama,
            privilege,
        } = facts
        else {
            return self.attach_failed(
                out,
                format!("target process {target} is not running"),
                false,
            );
        };
        if uid != self.config.uid {
            // Only a controller of another user names such a target: refuse before
            // anything of it runs (the pipes were checked too; this is the second line).
            return self.attach_failed(
                out,
                format!(
                    "refusing to attach: target process {target} belongs to uid {uid}, not to you (uid {}). The controller at {} is not yours",
                    self.config.uid, self.config.pipe_dir
                ),
                false,
            );
        }
        if let AttachRule::Forbidden(why) = attach_rule(yama, privilege) {
            return self.attach_failed(out, why, false);
        }
        let interpreter = match &self.config.python {
            Some(path) => Interpreter::Path(path.clone()),
            None => match judge_interpreter(&exe, self.config.uid) {
                InterpreterVerdict::Run(path) => Interpreter::Path(path),
                InterpreterVerdict::Unknown => Interpreter::SearchPath,
                InterpreterVerdict::Refuse(why) => {
                    return self.attach_failed(
                        out,
                        format!("{why}. Pass --python PATH to choose pdb's interpreter"),
                        false,
                    )
                }
            },
        };
        out.say(&format!(
            "Requesting ptrace permission for client PID {}...",
            self.config.own_pid
        ));
        // The socket's waiting grant: the client, not the controller's fixed timeout,
        // decides how long to wait, and hears how it goes. The process is named only
        // when it is not the target, so the line stays the seed's in the common case.
        let process = (Some(target) != self.known_target).then_some(target);
        out.push(Effect::SendWaiting {
            command: Command::GrantAccess {
                pid: self.config.own_pid,
                process,
                wait: true,
            },
            timeout_ms: self.config.attach_timeout_ms,
        });
        State::Attaching(Attaching::Granting {
            target,
            interpreter,
            told_waiting: false,
        })
    }

    /// An attach that failed before pdb ran.
    fn attach_failed(&mut self, out: &mut Out, text: String, quit_fed: bool) -> State {
        out.fail(text);
        self.attach_done(false, quit_fed, out)
    }

    /// After pdb: take the grant back (seed dialect; a 0.x controller knows no such
    /// request), then the attach is done.
    fn give_back_grant(
        &mut self,
        ok: bool,
        quit_fed: bool,
        cancelled: Option<Cancel>,
        out: &mut Out,
    ) -> State {
        if self.config.dialect != Dialect::Seed {
            return self.revoked(ok, quit_fed, cancelled, out);
        }
        out.send(
            &self.config,
            Command::RevokeAccess {
                pid: self.config.own_pid,
            },
        );
        State::Attaching(Attaching::Revoking {
            ok,
            quit_fed,
            cancelled,
        })
    }

    fn attach_done(&mut self, ok: bool, quit_fed: bool, out: &mut Out) -> State {
        if !ok {
            self.failures += 1;
        }
        if self.config.one_shot.is_some() {
            return self.finish(out);
        }
        // Piped lines meant for pdb that it never took are not client commands.
        if self.config.input == InputSource::Piped && !quit_fed {
            State::SkippingPdbLines
        } else {
            State::AtPrompt
        }
    }

    fn no_controller(&mut self, out: &mut Out, text: String) -> State {
        out.fail(text);
        // The controller refuses to start at these scopes: say why none is running.
        if let AttachRule::Forbidden(why) = attach_rule(self.config.yama, self.config.privilege) {
            out.say(&format!("   note: {why}"));
        }
        out.push(Effect::Exit {
            code: EXIT_NO_CONTROLLER,
        });
        State::Finished
    }

    fn terminate_failed(&mut self, out: &mut Out, text: String) -> State {
        out.fail(text);
        self.failures += 1;
        self.finish(out)
    }

    fn finish(&mut self, out: &mut Out) -> State {
        out.push(Effect::Exit {
            code: self.exit_code(),
        });
        State::Finished
    }

    /// The user-facing text of a failed request.
    fn describe_failure(&self, failure: &RequestFailure, asked: &str) -> String {
        let dir = &self.config.pipe_dir;
        match failure {
            RequestFailure::PipesMissing => format!(
                "Controller not running (pipes not found) in {dir}. Start heli-controller first, or point to its pipes with --pipe-dir DIR"
            ),
            RequestFailure::NotServed => format!(
                "Controller not responding: the pipes in {dir} exist but no controller reads them (left over from a controller that was killed?). Start the controller again; it replaces stale pipes"
            ),
            RequestFailure::TimedOut { waited_ms } => format!(
                "Timeout waiting for response to {asked} after {:.1} s (is the controller stuck or stopped?)",
                *waited_ms as f64 / 1000.0
            ),
            RequestFailure::Truncated { partial } => format!(
                "the controller closed the response pipe after a partial reply '{partial}'"
            ),
            RequestFailure::Untrusted(why) | RequestFailure::Io(why) => why.clone(),
        }
    }
}

/// The effects of one step, with shorthands.
struct Out(Vec<Effect>);

impl Out {
    fn push(&mut self, effect: Effect) {
        self.0.push(effect);
    }
    fn say(&mut self, text: &str) {
        self.say_tone(text, Tone::Plain);
    }
    fn say_tone(&mut self, text: &str, tone: Tone) {
        self.push(Effect::Say {
            text: text.into(),
            tone,
        });
    }
    fn fail(&mut self, text: String) {
        self.push(Effect::Say {
            text: format!("❌ {text}"),
            tone: Tone::Failure,
        });
    }
    fn warn(&mut self, text: String) {
        self.push(Effect::Warn { text });
    }
    fn send(&mut self, config: &Config, command: Command) {
        self.push(Effect::Send {
            command,
            expect_reply: true,
            timeout_ms: config.request_timeout_ms,
        });
    }
}

/// The line for an `ERROR:` reply to `GRANT_ACCESS`. A timeout is no refusal: the target
/// ran no Python code in time, and saying "Permission denied" would send the user
/// looking for a permission problem; nor is a session already open or a pid outside
/// the tree.
pub fn refusal_heading(msg: &str) -> String {
    if msg.starts_with("timed out") {
        format!("Not attached, the target did not run the grant: {msg}")
    } else if msg.starts_with("a debugger session is already attached")
        || msg.starts_with("another attach is waiting")
        || msg.contains("is not in the supervised tree")
    {
        format!("Not attached: {msg}")
    } else {
        format!("Permission denied: {msg}")
    }
}

/// "0.8 s", "12.0 s", "3m 05s": a wait, for people.
pub fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod refusal_tests {
    use super::refusal_heading;

    #[test]
    fn a_timeout_is_not_called_a_permission_problem() {
        assert_eq!(
            refusal_heading("timed out after 300 ms: the target ran no Python code"),
            "Not attached, the target did not run the grant: timed out after 300 ms: \
             the target ran no Python code"
        );
        assert_eq!(
            refusal_heading("pid 5 belongs to uid 7, not to uid 0 of the target"),
            "Permission denied: pid 5 belongs to uid 7, not to uid 0 of the target"
        );
    }
}
