//! The driver of the client machine ([`crate::core::client`]): it reads the user's lines,
//! exchanges with the controller, inspects the target, runs pdb and prints, and turns
//! each outcome into an input. Every decision is the machine's.
//!
//! Who reads the user's input: on a terminal the client reads only at its prompt (a line
//! editor, see `TerminalLines`) and pdb reads the terminal itself. From a pipe one
//! reader thread owns stdin; its lines wait in a channel and the machine decides which go
//! to pdb, so the lines after pdb's quit are still there for the client.
//!
//! The loop: carry out the machine's effects, then wait for one fact. A request runs on a
//! thread of its own and pdb's exit is awaited by another, so that one `select!` waits
//! for whichever comes first, together with piped lines while the machine wants one.
use super::exchange::{facts_of, ExchangeError};
use super::find_python::resolve_python;
use super::procfs;
use super::socket_exchange::exchange_preferring_socket;
use crate::core::client::trust::ExecutableFacts;
use crate::core::client::{
    Client as Machine, Config, Effect, Input, InputSource, Interpreter, LineWanted, PdbExit,
    RequestFailure, TargetFacts, Tone,
};
use crate::core::supervisor::ClientFacts;
use crate::core::tree::render_answer;
use crate::core::wire::{parse_reply, Command, Dialect, Reply, StackTarget};
use crossbeam_channel::{never, Receiver};
use nix::sys::signal::{
    pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

pub use crate::core::client::{EXIT_COMMAND_FAILED, EXIT_NO_CONTROLLER, EXIT_OK, EXIT_USAGE};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub pipe_dir: PathBuf,
    pub python: Option<PathBuf>,
    pub timeout: Duration,
    pub dialect: Dialect,
}

/// Runs the client session (the REPL); returns its exit status.
pub fn run(opts: ClientOptions) -> i32 {
    run_session(opts, None)
}

/// A one-shot request beside the REPL: `heli-client ps`, `stack`, `tasks`, `terminate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneShot {
    Ps,
    Stack { pid: Option<u32>, all: bool },
    Tasks { pid: Option<u32> },
    Terminate,
}

/// Runs one request and prints its answer on stdout (errors on stderr); returns the
/// exit status: 0 answered, 1 refused or failed, 3 no controller of yours serves the pipes.
pub fn run_one_shot(opts: &ClientOptions, what: OneShot) -> i32 {
    let ask = |command: Command, expect_reply: bool| {
        // The tree's questions take the controller longer (bounded readings).
        let timeout = match command {
            Command::Ps | Command::Stack { .. } | Command::Tasks { .. } => {
                opts.timeout + Duration::from_millis(crate::core::tree::READING_ALLOWANCE_MS)
            }
            Command::GetTargetPid
            | Command::GrantAccess { .. }
            | Command::Terminate
            | Command::RevokeAccess { .. } => opts.timeout,
        };
        exchange_preferring_socket(
            &opts.pipe_dir,
            &command.to_line(opts.dialect),
            timeout,
            expect_reply,
        )
        .map_err(|e| {
            let code = match e {
                ExchangeError::PipesMissing(_)
                | ExchangeError::NotServed(_)
                | ExchangeError::Untrusted(_) => EXIT_NO_CONTROLLER,
                ExchangeError::Timeout { .. }
                | ExchangeError::Truncated(_)
                | ExchangeError::BadReply(_)
                | ExchangeError::Io { .. } => EXIT_COMMAND_FAILED,
            };
            (code, e.to_string())
        })
    };
    let parsed = |line: Option<String>| {
        parse_reply(&line.unwrap_or_default()).map_err(|e| (EXIT_COMMAND_FAILED, e.to_string()))
    };
    let outcome = (|| -> Result<Vec<String>, (i32, String)> {
        let target = || -> Result<u32, (i32, String)> {
            match parsed(ask(Command::GetTargetPid, true)?)? {
                Reply::TargetPid(pid) => Ok(pid),
                other => Err((
                    EXIT_COMMAND_FAILED,
                    render_answer(&other).err().unwrap_or_default(),
                )),
            }
        };
        let command = match &what {
            OneShot::Terminate => {
                // The legacy dialect's FIFO gives no reply to terminate (its socket does).
                let reply = ask(Command::Terminate, opts.dialect == Dialect::Seed)?;
                return match reply.map(|line| parsed(Some(line))).transpose()? {
                    None | Some(Reply::Ready) => {
                        Ok(vec!["Controller is stopping the target".into()])
                    }
                    Some(Reply::Error(message)) => {
                        Err((EXIT_COMMAND_FAILED, format!("Controller error: {message}")))
                    }
                    Some(other) => Err((
                        EXIT_COMMAND_FAILED,
                        format!("unexpected reply to TERMINATE: {other}"),
                    )),
                };
            }
            OneShot::Ps => Command::Ps,
            OneShot::Stack { all: true, .. } => Command::Stack {
                which: StackTarget::All,
            },
            OneShot::Stack { pid, all: false } => Command::Stack {
                which: StackTarget::Pid(match pid {
                    Some(pid) => *pid,
                    None => target()?,
                }),
            },
            OneShot::Tasks { pid } => Command::Tasks {
                pid: match pid {
                    Some(pid) => *pid,
                    None => target()?,
                },
            },
        };
        let reply = parsed(ask(command, true)?)?;
        render_answer(&reply).map_err(|why| (EXIT_COMMAND_FAILED, why))
    })();
    match outcome {
        Ok(lines) => {
            let mut out = io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            EXIT_OK
        }
        Err((code, why)) => {
            eprintln!("heli-client: {why}");
            code
        }
    }
}

/// `heli-client attach [PID] -c CMD...`: the REPL's attach, driven by a script instead of
/// the user: `attach`, the pdb commands in order, pdb's `q`, `quit`. pdb's output comes
/// as it prints it; failures go to stderr. `pid`: which process pdb attaches to; the
/// controller grants access to its target, so another pid is refused here for now.
pub fn run_scripted_attach(opts: ClientOptions, pid: Option<u32>, commands: Vec<String>) -> i32 {
    if let Some(pid) = pid {
        let asked = exchange_preferring_socket(
            &opts.pipe_dir,
            &Command::GetTargetPid.to_line(opts.dialect),
            opts.timeout,
            true,
        );
        let target = match asked {
            Ok(line) => match parse_reply(&line.unwrap_or_default()) {
                Ok(Reply::TargetPid(target)) => target,
                Ok(other) => {
                    eprintln!("heli-client: unexpected reply to GET_TARGET_PID: {other}");
                    return EXIT_COMMAND_FAILED;
                }
                Err(e) => {
                    eprintln!("heli-client: {e}");
                    return EXIT_COMMAND_FAILED;
                }
            },
            Err(e) => {
                eprintln!("heli-client: {e}");
                return match e {
                    ExchangeError::PipesMissing(_)
                    | ExchangeError::NotServed(_)
                    | ExchangeError::Untrusted(_) => EXIT_NO_CONTROLLER,
                    ExchangeError::Timeout { .. }
                    | ExchangeError::Truncated(_)
                    | ExchangeError::BadReply(_)
                    | ExchangeError::Io { .. } => EXIT_COMMAND_FAILED,
                };
            }
        };
        if pid != target {
            eprintln!(
                "heli-client: attaching to pid {pid} is not supported yet: the controller grants access to its target (pid {target}) only"
            );
            return EXIT_COMMAND_FAILED;
        }
    }
    let mut lines = vec!["attach".to_string()];
    // pdb repeats its last command on an empty line: blank lines are not passed on.
    lines.extend(commands.into_iter().filter(|c| !c.trim().is_empty()));
    lines.push("q".into());
    lines.push("quit".into());
    run_session(opts, Some(lines))
}

/// The REPL machine's session, its lines from the user or from `script`.
fn run_session(opts: ClientOptions, script: Option<Vec<String>>) -> i32 {
    let source = if script.is_none() && io::stdin().is_terminal() {
        InputSource::Terminal
    } else {
        InputSource::Piped
    };
    let config = Config {
        dialect: opts.dialect,
        input: source,
        pipe_dir: opts.pipe_dir.display().to_string(),
        request_timeout_ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
        own_pid: std::process::id(),
        uid: nix::unistd::getuid().as_raw(),
        python: opts.python.clone(),
        yama: procfs::yama(),
        privilege: procfs::own_tracer_privilege(),
    };
    let mut machine = Machine::new(config);
    let mut driver = Driver::new(opts, source, script);
    let mut input = Input::Started;
    loop {
        for effect in machine.handle(input) {
            if let Some(code) = driver.carry_out(effect) {
                return code;
            }
        }
        input = driver.next_input(machine.wants_line());
    }
}

/// The OS side of one session: the user's lines, the request out, pdb.
struct Driver {
    opts: ClientOptions,
    lines: Lines,
    colour: bool,
    /// The outcome of the request out, from its exchange thread.
    reply: Option<Receiver<Input>>,
    /// pdb's exit, from its waiter thread.
    pdb_exit: Option<Receiver<Input>>,
    /// pdb's input while the client feeds it (piped input only).
    pdb_stdin: Option<ChildStdin>,
    /// An outcome learnt while carrying out an effect, delivered as the next input.
    learnt: Option<Input>,
    /// The lines come from a script (`attach -c`): no prompts are shown, and failures go
    /// to stderr, so that a pipeline's next command reads pdb's output alone.
    scripted: bool,
}

impl Driver {
    fn new(opts: ClientOptions, source: InputSource, script: Option<Vec<String>>) -> Driver {
        let scripted = script.is_some();
        let lines = match script {
            Some(script) => Lines::scripted(script),
            None => Lines::new(source),
        };
        if source == InputSource::Terminal {
            set_sigint(SigHandler::Handler(interrupt_read));
        }
        Driver {
            opts,
            lines,
            colour: io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()),
            reply: None,
            pdb_exit: None,
            pdb_stdin: None,
            learnt: None,
            scripted,
        }
    }

    fn learnt(&mut self, input: Input) {
        debug_assert!(self.learnt.is_none(), "two outcomes learnt in one step");
        self.learnt = Some(input);
    }

    /// Carries out one effect; `Some(code)` when the session ends.
    fn carry_out(&mut self, effect: Effect) -> Option<i32> {
        match effect {
            Effect::Say { text, tone } => self.say(&text, tone),
            Effect::Warn { text } => eprintln!("{text}"),
            Effect::Send {
                command,
                expect_reply,
                timeout_ms,
            } => self.send(command, expect_reply, Duration::from_millis(timeout_ms)),
            // Reading /proc is quick and never blocks: done in place, the outcome is the
            // next input.
            Effect::InspectTarget { pid } => self.learnt(Input::TargetInspected {
                pid,
                facts: inspect_target(pid),
            }),
            Effect::RunPdb {
                interpreter,
                target,
            } => self.run_pdb(&interpreter, target),
            Effect::FeedPdb { line } => {
                let written = self
                    .pdb_stdin
                    .as_mut()
                    .map(|stdin| stdin.write_all(format!("{line}\n").as_bytes()));
                if let Some(Err(_)) = written {
                    // pdb exited or closed its input: the machine hears of it next.
                    self.pdb_stdin = None;
                    self.learnt(Input::PdbInputBroken);
                }
            }
            Effect::ClosePdbInput => self.pdb_stdin = None,
            Effect::Exit { code } => return Some(code),
        }
        None
    }

    fn say(&self, text: &str, tone: Tone) {
        if self.scripted && tone == Tone::Failure {
            eprintln!("{text}");
            return;
        }
        let mut out = io::stdout().lock();
        let (start, end) = match (self.colour, tone) {
            (true, Tone::Success) => ("\x1b[32m", "\x1b[0m"),
            (true, Tone::Failure) => ("\x1b[31m", "\x1b[0m"),
            (true, Tone::Plain) | (false, Tone::Plain | Tone::Success | Tone::Failure) => ("", ""),
        };
        let _ = writeln!(out, "{start}{text}{end}");
        let _ = out.flush();
    }

    /// Runs the exchange on a thread: its outcome is awaited like any other event.
    fn send(&mut self, command: Command, expect_reply: bool, timeout: Duration) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let dir = self.opts.pipe_dir.clone();
        let line = command.to_line(self.opts.dialect);
        spawn_quiet(move || {
            let input = match exchange_preferring_socket(&dir, &line, timeout, expect_reply) {
                Ok(Some(line)) => Input::Replied { line },
                Ok(None) => Input::Delivered,
                Err(e) => Input::RequestFailed {
                    failure: failure_of(e),
                },
            };
            let _ = tx.send(input);
        });
        self.reply = Some(rx);
    }

    /// Starts pdb on this (the main) thread: `PR_SET_PDEATHSIG` fires when the thread
    /// that forked the child ends, and the main thread lives as long as the client.
    fn run_pdb(&mut self, interpreter: &Interpreter, target: u32) {
        let python = match interpreter {
            Interpreter::Path(path) => path.clone(),
            Interpreter::SearchPath => match resolve_python(None) {
                Ok(python) => python,
                Err(e) => {
                    self.learnt(Input::PdbNotStarted {
                        error: e.to_string(),
                    });
                    return;
                }
            },
        };
        let piped = self.lines.source() == InputSource::Piped;
        let mut command = std::process::Command::new(&python);
        command.args(["-m", "pdb", "-p", &target.to_string()]);
        if piped {
            command.stdin(Stdio::piped());
        }
        let client = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // The client ignores SIGINT while pdb runs; pdb must not inherit that, or
                // Python would not install its KeyboardInterrupt handler.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                // pdb must not outlive the client: a pdb left behind keeps the target
                // stopped at its prompt. Set before the parent check, so that a client
                // that died in between is noticed by one of the two.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != client {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        set_sigint(SigHandler::SigIgn);
        match command.spawn() {
            Ok(mut child) => {
                self.pdb_stdin = child.stdin.take();
                let pdb_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                if !crate::io::wake::disabled_by_env() {
                    // pdb's injection waits in the target like the grant's did: a target
                    // blocked in a system call is woken (see io::wake).
                    let done = pdb_done.clone();
                    spawn_quiet(move || {
                        crate::io::wake::wake_for_pdb(
                            target as i32,
                            &done,
                            crate::io::wake::pdb_wake_after(),
                            Duration::from_secs(60),
                        );
                    });
                }
                let (tx, rx) = crossbeam_channel::bounded(1);
                spawn_quiet(move || {
                    let waited = child.wait();
                    pdb_done.store(true, std::sync::atomic::Ordering::Relaxed);
                    let input = match waited {
                        Ok(status) => match (status.code(), status.signal()) {
                            (Some(code), _) => Input::PdbExited {
                                status: PdbExit::Code(code),
                            },
                            (None, Some(sig)) => Input::PdbExited {
                                status: PdbExit::Signal(sig),
                            },
                            (None, None) => Input::PdbNotStarted {
                                error: format!("pdb ended with {status}"),
                            },
                        },
                        Err(e) => Input::PdbNotStarted {
                            error: format!("waiting for pdb failed: {e}"),
                        },
                    };
                    let _ = tx.send(input);
                });
                self.pdb_exit = Some(rx);
            }
            Err(e) => {
                self.restore_sigint();
                self.learnt(Input::PdbNotStarted {
                    error: e.to_string(),
                });
            }
        }
    }

    fn restore_sigint(&self) {
        set_sigint(match self.lines.source() {
            InputSource::Terminal => SigHandler::Handler(interrupt_read),
            InputSource::Piped => SigHandler::SigDfl,
        });
    }

    /// Waits for the next fact: a line (only if the machine wants one), the request's
    /// outcome or pdb's exit.
    fn next_input(&mut self, wanted: Option<LineWanted>) -> Input {
        if let Some(input) = self.learnt.take() {
            return input;
        }
        let lines = match (&mut self.lines, wanted) {
            // Nothing else is under way at the terminal's prompt (the machine wants a
            // line only when no request is out and pdb does not run).
            (Lines::Terminal(terminal), Some(LineWanted::Prompt(prompt))) => {
                return terminal.read_line(prompt)
            }
            (Lines::Terminal(_), Some(LineWanted::ForPdb)) => {
                debug_assert!(false, "pdb reads the terminal itself");
                never()
            }
            (Lines::Piped(rx), Some(wanted)) => {
                if let (LineWanted::Prompt(prompt), false) = (wanted, self.scripted) {
                    let mut out = io::stdout().lock();
                    let _ = write!(out, "{prompt}");
                    let _ = out.flush();
                }
                rx.clone()
            }
            (Lines::Piped(_) | Lines::Terminal(_), None) => never(),
        };
        if wanted.is_none() && self.reply.is_none() && self.pdb_exit.is_none() {
            // Nothing could ever arrive: a machine bug. End the input rather than hang.
            debug_assert!(false, "the machine waits for nothing");
            return Input::InputEnded;
        }
        let reply = self.reply.clone().unwrap_or_else(never);
        let pdb_exit = self.pdb_exit.clone().unwrap_or_else(never);
        crossbeam_channel::select! {
            recv(lines) -> line => match line {
                Ok(Ok(text)) => Input::LineRead { text },
                Ok(Err(_)) | Err(_) => Input::InputEnded,
            },
            recv(reply) -> outcome => {
                self.reply = None;
                outcome.unwrap_or_else(|_| Input::RequestFailed {
                    failure: RequestFailure::Io("the exchange thread ended without an outcome".into()),
                })
            },
            recv(pdb_exit) -> exit => {
                self.pdb_exit = None;
                self.pdb_stdin = None;
                self.restore_sigint();
                exit.unwrap_or_else(|_| Input::PdbNotStarted {
                    error: "pdb's waiter ended without its status".into(),
                })
            },
        }
    }
}

fn failure_of(error: ExchangeError) -> RequestFailure {
    match error {
        ExchangeError::PipesMissing(_) => RequestFailure::PipesMissing,
        ExchangeError::NotServed(_) => RequestFailure::NotServed,
        ExchangeError::Untrusted(why) => RequestFailure::Untrusted(why),
        ExchangeError::Timeout { waited, .. } => RequestFailure::TimedOut {
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        },
        ExchangeError::Truncated(partial) => RequestFailure::Truncated { partial },
        error @ (ExchangeError::BadReply(_) | ExchangeError::Io { .. }) => {
            RequestFailure::Io(error.to_string())
        }
    }
}

/// Who runs `pid`, what its executable is, and what Yama allows now.
fn inspect_target(pid: u32) -> TargetFacts {
    let uid = match procfs::inspect(pid) {
        ClientFacts::Running { uid, .. } => uid,
        ClientFacts::NotRunning => return TargetFacts::NotRunning,
    };
    TargetFacts::Running {
        uid,
        exe: executable_facts(pid),
        yama: procfs::yama(),
        privilege: procfs::own_tracer_privilege(),
    }
}

/// What `/proc/PID/exe` is: the kernel's name for it, whether that name still leads to
/// the very file the target runs, and `lstat` of every component of the name.
fn executable_facts(pid: u32) -> ExecutableFacts {
    let link = format!("/proc/{pid}/exe");
    let (Ok(name), Ok(running)) = (std::fs::read_link(&link), std::fs::metadata(&link)) else {
        return ExecutableFacts::Unreadable;
    };
    let same_file = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|now| now.dev() == running.dev() && now.ino() == running.ino())
    };
    let text = name.to_string_lossy();
    if !same_file(&name) {
        if let Some(stripped) = text.strip_suffix(" (deleted)") {
            return ExecutableFacts::Deleted {
                path: PathBuf::from(stripped),
            };
        }
    }
    let mut components: Vec<(PathBuf, _)> = name
        .ancestors()
        .map(|p| {
            (
                p.to_path_buf(),
                std::fs::symlink_metadata(p).ok().map(|m| facts_of(&m)),
            )
        })
        .collect();
    components.reverse();
    ExecutableFacts::Found {
        same_file: same_file(&name),
        path: name,
        components,
    }
}

/// Where the user's lines come from.
enum Lines {
    Terminal(Box<TerminalLines>),
    /// One reader thread owns stdin; lines wait in the channel.
    Piped(Receiver<io::Result<String>>),
}

impl Lines {
    fn new(source: InputSource) -> Lines {
        match source {
            InputSource::Terminal => Lines::Terminal(Box::new(TerminalLines::new())),
            InputSource::Piped => {
                let (tx, rx) = crossbeam_channel::unbounded();
                spawn_quiet(move || {
                    for line in io::stdin().lock().lines() {
                        let stop = line.is_err();
                        if tx.send(line).is_err() || stop {
                            return;
                        }
                    }
                });
                Lines::Piped(rx)
            }
        }
    }

    /// The given lines, then the end of input.
    fn scripted(script: Vec<String>) -> Lines {
        let (tx, rx) = crossbeam_channel::unbounded();
        for line in script {
            let _ = tx.send(Ok(line));
        }
        Lines::Piped(rx)
    }

    fn source(&self) -> InputSource {
        match self {
            Lines::Terminal(_) => InputSource::Terminal,
            Lines::Piped(_) => InputSource::Piped,
        }
    }
}

/// The prompt on a terminal: a line editor with history (kept across sessions in the
/// user's state directory) where the terminal supports one.
///
/// The editor puts the terminal in raw mode only inside `readline` and restores it before
/// returning, so pdb, which runs only after the line was read, gets the terminal as the
/// user left it. No line editor on a terminal it cannot drive (`TERM` unset, `dumb`,
/// `cons25`, `emacs`): the line is read byte by byte, so nothing beyond it is taken from
/// the terminal that pdb uses next.
struct TerminalLines {
    editor: Option<rustyline::DefaultEditor>,
    /// The history file, when one can be kept.
    history: Option<PathBuf>,
}

impl TerminalLines {
    fn new() -> TerminalLines {
        let term = std::env::var("TERM").unwrap_or_default();
        if matches!(term.as_str(), "" | "dumb" | "cons25" | "emacs") {
            return TerminalLines {
                editor: None,
                history: None,
            };
        }
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(1000)
            .map(|b| b.build());
        let editor = match config.and_then(rustyline::DefaultEditor::with_config) {
            Ok(editor) => editor,
            Err(e) => {
                eprintln!("heli-client: no line editing ({e}); lines are read plainly");
                return TerminalLines {
                    editor: None,
                    history: None,
                };
            }
        };
        let mut lines = TerminalLines {
            editor: Some(editor),
            history: None,
        };
        match history_file() {
            Ok(path) => {
                if let Some(editor) = lines.editor.as_mut() {
                    match editor.load_history(&path) {
                        Ok(()) => {}
                        Err(rustyline::error::ReadlineError::Io(e))
                            if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            eprintln!("heli-client: history {} not loaded: {e}", path.display())
                        }
                    }
                }
                lines.history = Some(path);
            }
            Err(why) => eprintln!("heli-client: history not kept: {why}"),
        }
        lines
    }

    fn read_line(&mut self, prompt: &str) -> Input {
        use rustyline::error::ReadlineError;
        let Some(editor) = self.editor.as_mut() else {
            let mut out = io::stdout().lock();
            let _ = write!(out, "{prompt}");
            let _ = out.flush();
            return read_terminal_line();
        };
        match editor.readline(prompt) {
            Ok(text) => {
                if !text.trim().is_empty() {
                    let _ = editor.add_history_entry(text.as_str());
                    // Saved at once: a client killed later loses nothing.
                    if let Some(path) = &self.history {
                        if let Err(e) = editor.append_history(path) {
                            eprintln!("heli-client: history {} not saved: {e}", path.display());
                            self.history = None;
                        }
                    }
                }
                Input::LineRead { text }
            }
            Err(ReadlineError::Interrupted) => Input::PromptInterrupted,
            Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                Input::PromptInterrupted
            }
            Err(ReadlineError::Eof) => Input::InputEnded,
            Err(e) => {
                eprintln!("heli-client: reading the terminal failed: {e}");
                Input::InputEnded
            }
        }
    }
}

/// `$XDG_STATE_HOME/helicopter-parent/history`, else
/// `~/.local/state/helicopter-parent/history`; the directory is made 0700 (typed
/// commands are nobody else's business).
fn history_file() -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let state = match std::env::var_os("XDG_STATE_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(_) | None => match std::env::var_os("HOME").map(PathBuf::from) {
            Some(home) if home.is_absolute() => home.join(".local/state"),
            Some(_) | None => return Err("neither XDG_STATE_HOME nor HOME is set".into()),
        },
    };
    let dir = state.join("helicopter-parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    Ok(dir.join("history"))
}

/// One line from the terminal, read byte by byte so that nothing beyond it is taken.
fn read_terminal_line() -> Input {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match io::stdin().lock().read(&mut byte) {
            Ok(0) if bytes.is_empty() => return Input::InputEnded,
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => bytes.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Input::PromptInterrupted,
            Err(_) => return Input::InputEnded,
        }
    }
    Input::LineRead {
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A helper thread with SIGINT blocked, so that Ctrl-C at the prompt interrupts the
/// main thread's read and nothing else.
fn spawn_quiet(work: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let mut block = SigSet::empty();
        block.add(Signal::SIGINT);
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), None);
        work();
    });
}

extern "C" fn interrupt_read(_: libc::c_int) {}

/// At the prompt Ctrl-C interrupts the read (no SA_RESTART) instead of killing the client.
fn set_sigint(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler is async-signal-safe (it does nothing).
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}
