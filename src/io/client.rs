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
use super::inject::PythonProcess;
use super::procfs;
use super::socket_exchange::{exchange_preferring_socket, exchange_waiting, WaitOutcome};
use crate::core::client::trust::ExecutableFacts;
use crate::core::client::{
    Client as Machine, Config, Effect, Input, InputSource, Interpreter, LineWanted, PdbExit,
    RequestFailure, TargetFacts, Tone,
};
use crate::core::supervisor::ClientFacts;
use crate::core::tree::render_answer;
use crate::core::wire::{parse_reply, Command, Dialect, Reply, StackTarget};
use crossbeam_channel::{never, Receiver, Sender};
use nix::sys::signal::{
    pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::core::client::{EXIT_COMMAND_FAILED, EXIT_NO_CONTROLLER, EXIT_OK, EXIT_USAGE};

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub pipe_dir: PathBuf,
    pub python: Option<PathBuf>,
    pub timeout: Duration,
    pub dialect: Dialect,
    /// How long an attach waits for the target (`--attach-timeout`): `None` for the
    /// default (until Ctrl-C on a terminal, [`PIPED_ATTACH_TIMEOUT`] otherwise);
    /// `Some(None)`: no limit.
    pub attach_timeout: Option<Option<Duration>>,
}

/// How long an attach waits for the target when the client's input is not a terminal
/// (a script, CI): nobody can press Ctrl-C there, so the wait must end by itself.
pub const PIPED_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the client session (the REPL); returns its exit status.
pub fn run(opts: ClientOptions) -> i32 {
    run_session(opts, None, None)
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

/// `heli-client attach [PID] -c CMD...`: the REPL's `attach [PID]`, driven by a script
/// instead of the user: the attach, then the pdb commands in order, then pdb's `q`.
/// pdb's output comes as it prints it; failures go to stderr. The session ends with the
/// attach: 0 once pdb has detached, 1 when the attach failed or was cancelled.
pub fn run_scripted_attach(opts: ClientOptions, pid: Option<u32>, commands: Vec<String>) -> i32 {
    let attach = match pid {
        Some(pid) => format!("attach {pid}"),
        None => "attach".into(),
    };
    // pdb repeats its last command on an empty line: blank lines are not passed on.
    let mut lines: Vec<String> = commands
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .collect();
    lines.push("q".into());
    run_session(opts, Some(attach), Some(lines))
}

/// The REPL machine's session: its lines from the user, or, for a scripted attach, the
/// attach (`one_shot`) and then pdb's lines from `script`.
fn run_session(opts: ClientOptions, one_shot: Option<String>, script: Option<Vec<String>>) -> i32 {
    let source = if script.is_none() && io::stdin().is_terminal() {
        InputSource::Terminal
    } else {
        InputSource::Piped
    };
    let attach_timeout = match (opts.attach_timeout, source) {
        (Some(chosen), _) => chosen,
        (None, InputSource::Terminal) => None,
        (None, InputSource::Piped) => Some(PIPED_ATTACH_TIMEOUT),
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
        attach_timeout_ms: attach_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        one_shot,
    };
    let mut machine = Machine::new(config);
    let mut driver = Driver::new(opts, source, script, attach_timeout);
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
    /// stdout is a terminal: the progress line is rewritten in place.
    terminal_out: bool,
    /// The outcome of the request out (and its progress lines), from its exchange thread.
    reply: Option<Receiver<Input>>,
    /// Set to give up the waiting request out ([`Effect::CancelRequest`]).
    cancel_request: Option<Arc<AtomicBool>>,
    /// pdb's exit, from its waiter thread.
    pdb_exit: Option<Receiver<Input>>,
    /// pdb's input while the client feeds it (piped input only).
    pdb_stdin: Option<ChildStdin>,
    /// The pdb that runs, and what is known of its request in the target.
    pdb: Option<PdbRun>,
    /// Ctrl-C, from the SIGINT handler's self-pipe.
    interrupts: Receiver<()>,
    attach_timeout: Option<Duration>,
    /// A progress line is on screen without its newline.
    progress_open: Arc<AtomicBool>,
    /// An outcome learnt while carrying out an effect, delivered as the next input.
    learnt: Option<Input>,
    /// The lines come from a script (`attach -c`): no prompts are shown, and failures go
    /// to stderr, so that a pipeline's next command reads pdb's output alone.
    scripted: bool,
}

/// pdb while it runs: its pid, the process it attaches to, and a watcher of its request.
struct PdbRun {
    pid: i32,
    target: u32,
    watch: Arc<PdbWatch>,
    /// What the watcher reports (it gave up after `--attach-timeout`).
    events: Receiver<Input>,
    /// Kept so that `events` never reads as disconnected: the watcher ends (its sender
    /// dropped) as soon as pdb's request was taken, and a disconnected channel would be
    /// ready at every select, an event that is none.
    _events_open: Sender<Input>,
}

impl Driver {
    fn new(
        opts: ClientOptions,
        source: InputSource,
        script: Option<Vec<String>>,
        attach_timeout: Option<Duration>,
    ) -> Driver {
        let scripted = script.is_some();
        let lines = match script {
            Some(script) => Lines::scripted(script),
            None => Lines::new(source),
        };
        let interrupts = interrupt_channel();
        Driver {
            opts,
            lines,
            colour: io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()),
            terminal_out: io::stdout().is_terminal(),
            reply: None,
            cancel_request: None,
            pdb_exit: None,
            pdb_stdin: None,
            pdb: None,
            interrupts,
            attach_timeout,
            progress_open: Arc::new(AtomicBool::new(false)),
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
            Effect::Warn { text } => {
                end_progress(&self.progress_open);
                eprintln!("{text}")
            }
            Effect::Send {
                command,
                expect_reply,
                timeout_ms,
            } => self.send(command, expect_reply, Duration::from_millis(timeout_ms)),
            Effect::SendWaiting {
                command,
                timeout_ms,
            } => self.send_waiting(command, timeout_ms.map(Duration::from_millis)),
            Effect::CancelRequest => {
                if let Some(cancel) = &self.cancel_request {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            Effect::CancelPdb => {
                if let Some(pdb) = &self.pdb {
                    if let Some(withdrawn) = cancel_pdb(pdb.pid, pdb.target, &pdb.watch) {
                        self.learnt(Input::PdbCancelled { withdrawn });
                    }
                }
            }
            Effect::Progress { text } => {
                show_progress(&self.progress_open, self.terminal_out, &text)
            }
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
        end_progress(&self.progress_open);
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
        self.cancel_request = None;
    }

    /// The waiting grant: its `WAITING` lines become [`Input::GrantProgress`] (with what
    /// the client itself sees of the process: its Python frames, once they can be
    /// read), then the outcome. Without a socket (an older controller), the seed line on
    /// the FIFOs, which the controller's own timeout bounds.
    fn send_waiting(&mut self, command: Command, timeout: Option<Duration>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let dir = self.opts.pipe_dir.clone();
        let dialect = self.opts.dialect;
        let request_timeout = self.opts.timeout;
        let stop = cancel.clone();
        spawn_quiet(move || {
            let progress_tx = tx.clone();
            let on_progress = move |text: String| {
                let (elapsed_ms, controller) = match text.split_once(' ') {
                    Some((ms, _)) => (ms.parse().unwrap_or(0), text.clone()),
                    None => (0, text.clone()),
                };
                let _ = progress_tx.send(Input::GrantProgress {
                    elapsed_ms,
                    controller,
                });
            };
            let outcome = exchange_waiting(
                &dir,
                &command.to_line(dialect),
                request_timeout,
                timeout,
                &stop,
                on_progress,
            );
            let input = match outcome {
                Ok(WaitOutcome::Reply(line)) => Input::Replied { line },
                Ok(WaitOutcome::Cancelled) => Input::RequestCancelled,
                Ok(WaitOutcome::NoSocket) => {
                    let seed = match command {
                        Command::GrantAccess { pid, process, .. } => Command::GrantAccess {
                            pid,
                            process,
                            wait: false,
                        },
                        other => other,
                    };
                    match exchange_preferring_socket(
                        &dir,
                        &seed.to_line(dialect),
                        request_timeout,
                        true,
                    ) {
                        Ok(Some(line)) => Input::Replied { line },
                        Ok(None) => Input::Delivered,
                        Err(e) => Input::RequestFailed {
                            failure: failure_of(e),
                        },
                    }
                }
                Err(e) => Input::RequestFailed {
                    failure: failure_of(e),
                },
            };
            let _ = tx.send(input);
        });
        self.reply = Some(rx);
        self.cancel_request = Some(cancel);
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
                // pdb starts with SIGINT ignored: while it waits for the target to
                // connect (`server.accept()`), Ctrl-C is the client's, which cancels the
                // attach cleanly (pdb's own KeyboardInterrupt there would print a
                // traceback and leave its request to run later in the target). Python
                // keeps an ignored SIGINT ignored at start, and pdb's session installs its
                // own SIGINT handler (`_PdbClient._sigint_handler`), so once the session
                // is up Ctrl-C is pdb's again: "Program interrupted".
                libc::signal(libc::SIGINT, libc::SIG_IGN);
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
        match command.spawn() {
            Ok(mut child) => {
                self.pdb_stdin = child.stdin.take();
                let pdb_pid = child.id() as i32;
                let pdb_done = Arc::new(AtomicBool::new(false));
                let within = self
                    .attach_timeout
                    .unwrap_or(Duration::from_secs(365 * 24 * 3600));
                if !crate::io::wake::disabled_by_env() {
                    // pdb's injection waits in the target like the grant's did: a target
                    // blocked in a system call is woken (see io::wake).
                    let done = pdb_done.clone();
                    spawn_quiet(move || {
                        crate::io::wake::wake_for_pdb(
                            target as i32,
                            &done,
                            crate::io::wake::pdb_wake_after(),
                            within,
                        );
                    });
                }
                let watch = Arc::new(PdbWatch::default());
                let (events_tx, events) = crossbeam_channel::unbounded();
                let events_open = events_tx.clone();
                {
                    let (watch, done, progress_open) =
                        (watch.clone(), pdb_done.clone(), self.progress_open.clone());
                    let (terminal_out, timeout) = (self.terminal_out, self.attach_timeout);
                    spawn_quiet(move || {
                        watch_pdb_request(
                            PdbWatched {
                                pdb: pdb_pid,
                                target,
                                timeout,
                                terminal_out,
                            },
                            &watch,
                            &done,
                            &progress_open,
                            &events_tx,
                        )
                    });
                }
                self.pdb = Some(PdbRun {
                    pid: pdb_pid,
                    target,
                    watch,
                    events,
                    _events_open: events_open,
                });
                let (tx, rx) = crossbeam_channel::bounded(1);
                spawn_quiet(move || {
                    let waited = child.wait();
                    pdb_done.store(true, Ordering::Relaxed);
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
                self.learnt(Input::PdbNotStarted {
                    error: e.to_string(),
                });
            }
        }
    }

    /// Waits for the next fact: a line (only if the machine wants one), the request's
    /// outcome or progress, pdb's exit, or Ctrl-C.
    fn next_input(&mut self, wanted: Option<LineWanted>) -> Input {
        if let Some(input) = self.learnt.take() {
            return input;
        }
        let lines = match (&mut self.lines, wanted) {
            // Nothing else is under way at the terminal's prompt (the machine wants a
            // line only when no request is out and pdb does not run).
            (Lines::Terminal(terminal), Some(LineWanted::Prompt(prompt))) => {
                let input = terminal.read_line(prompt);
                // The Ctrl-C that interrupted the read is the prompt's, said by the
                // read's outcome: it must not cancel the next attach.
                while self.interrupts.try_recv().is_ok() {}
                return input;
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
        let pdb_events = self
            .pdb
            .as_ref()
            .map(|p| p.events.clone())
            .unwrap_or_else(never);
        let interrupts = self.interrupts.clone();
        crossbeam_channel::select! {
            recv(lines) -> line => match line {
                Ok(Ok(text)) => Input::LineRead { text },
                Ok(Err(_)) | Err(_) => Input::InputEnded,
            },
            recv(reply) -> outcome => {
                match outcome {
                    Ok(progress @ Input::GrantProgress { .. }) => progress,
                    outcome => {
                        self.reply = None;
                        self.cancel_request = None;
                        outcome.unwrap_or_else(|_| Input::RequestFailed {
                            failure: RequestFailure::Io("the exchange thread ended without an outcome".into()),
                        })
                    }
                }
            },
            // Never disconnected while pdb runs (`PdbRun::_events_open`).
            recv(pdb_events) -> event => match event {
                Ok(input) => input,
                Err(_) => unreachable!("pdb's event channel is held open while pdb runs"),
            },
            recv(pdb_exit) -> exit => {
                self.pdb_exit = None;
                self.pdb_stdin = None;
                self.pdb = None;
                end_progress(&self.progress_open);
                exit.unwrap_or_else(|_| Input::PdbNotStarted {
                    error: "pdb's waiter ended without its status".into(),
                })
            },
            recv(interrupts) -> _ => match wanted {
                // Piped input at the prompt: Ctrl-C ends the session as EOF would.
                Some(LineWanted::Prompt(_)) => Input::InputEnded,
                Some(LineWanted::ForPdb) | None => Input::Interrupted,
            },
        }
    }
}

/// What the client knows of pdb's request in the target.
#[derive(Default)]
struct PdbWatch {
    /// 0 while pdb has not written its request, then [`REQUEST_PENDING`],
    /// [`REQUEST_TAKEN`].
    state: AtomicU8,
}

const REQUEST_PENDING: u8 = 1;
/// Taken by the target: pdb's script runs there, its session comes up.
const REQUEST_TAKEN: u8 = 2;

struct PdbWatched {
    pdb: i32,
    target: u32,
    timeout: Option<Duration>,
    terminal_out: bool,
}

/// Watches pdb's request in the target until it is taken or pdb ends: while it waits,
/// a progress line once a second (what each thread does); after `timeout`, the attach
/// is given up as on Ctrl-C and [`Input::PdbGaveUp`] is sent.
fn watch_pdb_request(
    pdb: PdbWatched,
    watch: &PdbWatch,
    done: &AtomicBool,
    progress_open: &AtomicBool,
    events: &crossbeam_channel::Sender<Input>,
) {
    let Ok(process) = PythonProcess::open(pdb.target as i32) else {
        return;
    };
    let mut pending_since: Option<std::time::Instant> = None;
    let mut next_progress = Duration::from_secs(1);
    while !done.load(Ordering::Relaxed) {
        // A fast target takes the request between two looks: the connection that pdb
        // accepted says the session is up all the same.
        if pdb_connected(pdb.pdb) {
            watch.state.store(REQUEST_TAKEN, Ordering::Relaxed);
            end_progress(progress_open);
            return;
        }
        let Ok(Some(main)) = process.main_thread_tid() else {
            return;
        };
        match process.is_pending(main) {
            Ok(true) => {
                watch.state.store(REQUEST_PENDING, Ordering::Relaxed);
                let since = *pending_since.get_or_insert_with(std::time::Instant::now);
                let waited = since.elapsed();
                // A sleep about to end by itself (a loop that sleeps in steps, left to
                // reach its own code) is no wait worth a word.
                let ends_soon = matches!(
                    crate::io::wake::blocked_in(pdb.target as i32, main),
                    crate::io::wake::BlockedIn::Sleep { left } if left < Duration::from_millis(300)
                );
                if waited >= next_progress && !ends_soon {
                    next_progress = waited + Duration::from_secs(1);
                    let (frames, _) = python_frames(pdb.target);
                    let mut text = format!(
                        "   pdb waits for pid {} to run its request ({}, Ctrl-C cancels): threads {}",
                        pdb.target,
                        crate::core::client::seconds(waited.as_millis() as u64),
                        procfs::describe_threads(pdb.target as i32, Some(main))
                    );
                    if !frames.is_empty() {
                        text.push_str(&format!("; Python: {}", frames.join(", ")));
                    }
                    show_progress(progress_open, pdb.terminal_out, &text);
                }
                if pdb.timeout.is_some_and(|t| waited >= t) {
                    if cancel_pdb(pdb.pdb, pdb.target, watch).is_some() {
                        let _ = events.send(Input::PdbGaveUp {
                            waited_ms: waited.as_millis() as u64,
                        });
                    }
                    return;
                }
            }
            Ok(false) if pending_since.is_some() => {
                watch.state.store(REQUEST_TAKEN, Ordering::Relaxed);
                end_progress(progress_open);
                return;
            }
            Ok(false) => {}
            Err(_) => return,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Ctrl-C while pdb runs. Once the target took pdb's request the session is pdb's
/// (`None`: nothing done). Before, pdb is stopped first (so it writes no request after
/// this), then its request is taken back from the target (the client is the declared
/// ptracer, so it may write there) and the script file pdb left is removed: nothing
/// runs later in the target, nothing is printed there. `Some(withdrawn)`.
fn cancel_pdb(pdb: i32, target: u32, watch: &PdbWatch) -> Option<bool> {
    if watch.state.load(Ordering::Relaxed) == REQUEST_TAKEN || pdb_connected(pdb) {
        return None;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pdb), Signal::SIGKILL);
    // SIGKILL takes effect asynchronously: pdb may still be writing its request. Only a
    // pdb that is gone (a zombie, until its waiter reaps it) can no longer write.
    let dead_by = std::time::Instant::now() + Duration::from_secs(2);
    while procfs::is_running(pdb as u32) && std::time::Instant::now() < dead_by {
        std::thread::sleep(Duration::from_millis(1));
    }
    let Ok(process) = PythonProcess::open(target as i32) else {
        return Some(false);
    };
    let Ok(Some(main)) = process.main_thread_tid() else {
        return Some(false);
    };
    let script = process.pending_script(main).ok().flatten();
    let withdrawn = matches!(process.withdraw(main), Ok(true));
    if withdrawn {
        if let Some(script) = script {
            remove_pdb_script(&script);
        }
    }
    Some(withdrawn)
}

/// Whether the target has connected to pdb (`pdb -p` listens on a localhost TCP port and
/// the target's script connects back): one of pdb's sockets is an established TCP
/// connection, read from `/proc/PID/fd` and `/proc/PID/net/tcp{,6}`.
fn pdb_connected(pdb: i32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pdb}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    const ESTABLISHED: &str = "01";
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pdb}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|row| {
                let fields: Vec<&str> = row.split_whitespace().collect();
                fields.get(3) == Some(&ESTABLISHED)
                    && fields.get(9).is_some_and(|inode| sockets.contains(*inode))
            })
    })
}

/// Removes the connect script of a pdb that was stopped before its request ran (pdb
/// deletes it itself when it ends normally): only a file of ours, directly in the
/// temporary directory, with `tempfile`'s name.
fn remove_pdb_script(script: &Path) {
    let in_tmp = script.parent() == Some(std::env::temp_dir().as_path());
    let named = script
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("tmp"));
    let ours = std::fs::symlink_metadata(script)
        .is_ok_and(|m| m.is_file() && m.uid() == nix::unistd::getuid().as_raw());
    if in_tmp && named && ours {
        let _ = std::fs::remove_file(script);
    }
}

/// The innermost Python frame of each thread of `pid` (`tid: file:line function`), and
/// whether its main thread sits in a debugger of its own. Empty while the process's
/// stacks cannot be read (the native stack reader says why; the kernel's view, in the
/// controller's words, is shown anyway).
fn python_frames(pid: u32) -> (Vec<String>, bool) {
    match crate::io::stack_reader::read_stacks(pid as i32) {
        Ok(stacks) => {
            let frames = stacks
                .threads
                .iter()
                .filter_map(|t| {
                    t.frames.first().map(|f| {
                        let line = f.line.map_or(String::new(), |l| format!(":{l}"));
                        format!("{} {}{line} {}", t.tid, f.filename, f.function)
                    })
                })
                .collect();
            let local = stacks
                .threads
                .iter()
                .any(|t| t.is_main && crate::core::stacks::local_debugger(t).is_some());
            (frames, local)
        }
        Err(_) => (Vec::new(), false),
    }
}

/// One progress line: on a terminal rewritten in place, otherwise a line of its own.
fn show_progress(open: &AtomicBool, terminal: bool, text: &str) {
    let mut out = io::stdout().lock();
    if terminal {
        let _ = write!(out, "\r\x1b[2K{text}");
        open.store(true, Ordering::Relaxed);
    } else {
        let _ = writeln!(out, "{text}");
    }
    let _ = out.flush();
}

/// Ends a progress line left in place, so the next output starts on a fresh line.
fn end_progress(open: &AtomicBool) {
    if open.swap(false, Ordering::Relaxed) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out);
        let _ = out.flush();
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

/// The write end of the self-pipe that turns SIGINT into an event (-1 before it exists).
static INTERRUPT_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigint(_: libc::c_int) {
    let fd = INTERRUPT_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already holds an event.
        let _ = unsafe { libc::write(fd, b"i".as_ptr().cast(), 1) };
    }
}

/// Ctrl-C as a channel event: the handler writes to a self-pipe that a helper thread
/// reads. The handler is installed without SA_RESTART, so at the prompt Ctrl-C also
/// interrupts the terminal read instead of killing the client; during an attach the
/// machine hears [`Input::Interrupted`] and cancels cleanly.
fn interrupt_channel() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let Ok((read_end, write_end)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return rx;
    };
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&write_end),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    INTERRUPT_PIPE.store(write_end.into_raw_fd(), Ordering::Relaxed);
    spawn_quiet(move || {
        let mut pipe = std::fs::File::from(read_end);
        let mut byte = [0u8; 64];
        loop {
            match pipe.read(&mut byte) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls write(2), which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
    rx
}
