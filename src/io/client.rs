//! The client REPL: `attach`, `quit`, `terminate`, `help`.
//!
//! `attach` asks for `GRANT_ACCESS <own pid>`, then runs `<python> -m pdb -p <target>` as a
//! child (the grant covers the client's descendants). On a terminal pdb gets the terminal
//! itself. When stdin is a pipe the client is the only reader of it: a child pdb reads
//! ahead and would swallow the commands after its `q`, so the client hands pdb exactly
//! the lines up to and including its quit command and keeps the rest for itself.
use super::exchange::{exchange, exchange_raw, ExchangeError};
use super::find_python::resolve_python;
use super::procfs;
use crate::core::ptrace_policy::{attach_rule, AttachRule};
use crate::core::wire::{Command, Dialect, Reply};
use crossbeam_channel::Receiver;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

pub const EXIT_OK: i32 = 0;
pub const EXIT_COMMAND_FAILED: i32 = 1;
pub const EXIT_NO_CONTROLLER: i32 = 3;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub pipe_dir: PathBuf,
    pub python: Option<PathBuf>,
    pub timeout: Duration,
    pub dialect: Dialect,
}

const HELP: &str = "Available commands:
  attach     - Attach debugger to the target process
  quit       - Exit client (leave controller running)
  terminate  - Stop controller, target, and exit client
  help       - Show this help message";

/// Where the REPL's lines come from.
enum Lines {
    /// A terminal: read byte by byte from fd 0, so nothing beyond the line is taken from
    /// the terminal that pdb will use next.
    Terminal,
    /// A pipe or file: one reader thread owns stdin; lines wait in the channel, so those
    /// after pdb's quit are still there for the REPL.
    Piped(Receiver<io::Result<String>>),
}

enum Line {
    Text(String),
    Interrupted,
    End,
}

impl Lines {
    fn from_stdin() -> Lines {
        if io::stdin().is_terminal() {
            return Lines::Terminal;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let stop = line.is_err();
                if tx.send(line).is_err() || stop {
                    return;
                }
            }
        });
        Lines::Piped(rx)
    }

    fn next(&self) -> Line {
        match self {
            Lines::Piped(rx) => match rx.recv() {
                Ok(Ok(text)) => Line::Text(text),
                Ok(Err(_)) | Err(_) => Line::End,
            },
            Lines::Terminal => {
                let mut bytes = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    match io::stdin().lock().read(&mut byte) {
                        Ok(0) if bytes.is_empty() => return Line::End,
                        Ok(0) => break,
                        Ok(_) if byte[0] == b'\n' => break,
                        Ok(_) => bytes.push(byte[0]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            return Line::Interrupted
                        }
                        Err(_) => return Line::End,
                    }
                }
                Line::Text(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// pdb's own ways to end a session: after one of these the client takes stdin back.
fn is_pdb_quit(line: &str) -> bool {
    matches!(
        line.split_whitespace().next(),
        Some("q" | "quit" | "exit" | "EOF")
    )
}

/// Whether the Yama policy leaves this client no way to attach, whatever the controller does.
fn scope_forbids_attach() -> Option<String> {
    match attach_rule(procfs::yama(), procfs::own_tracer_privilege()) {
        AttachRule::Forbidden(why) => Some(why),
        AttachRule::Grant | AttachRule::NoGrantNeeded(_) => None,
    }
}

extern "C" fn interrupt_read(_: libc::c_int) {}

/// At the prompt Ctrl-C interrupts the read (no SA_RESTART) instead of killing the client.
fn set_sigint(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler is async-signal-safe (it does nothing).
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}

fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

pub struct Client {
    opts: ClientOptions,
    lines: Lines,
    failures: u32,
    /// Whether pdb was handed its quit line in the current attach (piped mode).
    pdb_quit_sent: bool,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Client {
        Client {
            opts,
            lines: Lines::from_stdin(),
            failures: 0,
            pdb_quit_sent: false,
        }
    }

    pub fn run(mut self) -> i32 {
        say("Helicopter Parent - Debug Client");
        if let Err(e) = self.target_pid() {
            say(&format!("❌ {e}"));
            // The controller refuses to start at these scopes: say why none is running.
            if let Some(why) = scope_forbids_attach() {
                say(&format!("   note: {why}"));
            }
            return EXIT_NO_CONTROLLER;
        }
        say("Type 'help' for available commands");
        if matches!(self.lines, Lines::Terminal) {
            set_sigint(SigHandler::Handler(interrupt_read));
        }
        loop {
            print!(">>> ");
            let _ = io::stdout().flush();
            let line = match self.lines.next() {
                Line::Text(line) => line,
                Line::Interrupted => {
                    say("\nInterrupted (type 'quit' to exit)");
                    continue;
                }
                Line::End => {
                    say("\nGoodbye!");
                    break;
                }
            };
            match line.trim().to_ascii_lowercase().as_str() {
                "" => {}
                "attach" => {
                    if !self.attach() {
                        self.failures += 1;
                    }
                }
                "quit" | "exit" => {
                    say("Goodbye!");
                    break;
                }
                "terminate" => {
                    return match self.terminate() {
                        Ok(()) => self.exit_code(),
                        Err(e) => {
                            say(&format!("❌ {e}"));
                            EXIT_COMMAND_FAILED
                        }
                    };
                }
                "help" => say(HELP),
                other => {
                    say(&format!(
                        "Unknown command: {other}. Type 'help' for available commands"
                    ));
                    self.failures += 1;
                }
            }
        }
        self.exit_code()
    }

    fn exit_code(&self) -> i32 {
        if self.failures == 0 {
            EXIT_OK
        } else {
            EXIT_COMMAND_FAILED
        }
    }

    fn request(&self, command: Command) -> Result<Reply, ExchangeError> {
        exchange(
            &self.opts.pipe_dir,
            &command.to_line(self.opts.dialect),
            self.opts.timeout,
        )
    }

    fn target_pid(&self) -> Result<u32, String> {
        match self
            .request(Command::GetTargetPid)
            .map_err(|e| e.to_string())?
        {
            Reply::TargetPid(pid) => Ok(pid),
            Reply::Error(msg) => Err(format!("Controller error: {msg}")),
            Reply::Ready => Err("unexpected reply READY to GET_TARGET_PID".into()),
        }
    }

    /// One attach cycle; false when it failed.
    fn attach(&mut self) -> bool {
        self.pdb_quit_sent = false;
        let ok = self.try_attach();
        // Lines meant for pdb that it never took (it failed, or never started) are not
        // client commands: drop them up to pdb's quit.
        if !self.pdb_quit_sent && matches!(self.lines, Lines::Piped(_)) {
            self.skip_pdb_lines();
        }
        ok
    }

    fn try_attach(&mut self) -> bool {
        let target = match self.target_pid() {
            Ok(pid) => pid,
            Err(e) => {
                say(&format!("❌ {e}"));
                return false;
            }
        };
        if let Some(why) = scope_forbids_attach() {
            say(&format!("❌ {why}"));
            return false;
        }
        let me = std::process::id();
        say(&format!(
            "Requesting ptrace permission for client PID {me}..."
        ));
        match self.request(Command::GrantAccess { pid: me }) {
            Ok(Reply::Ready) => say("✅ Permission granted"),
            Ok(Reply::Error(msg)) => {
                say(&format!("❌ Permission denied: {msg}"));
                return false;
            }
            Ok(other) => {
                say(&format!("❌ unexpected reply to GRANT_ACCESS: {other}"));
                return false;
            }
            Err(e) => {
                say(&format!("❌ {e}"));
                return false;
            }
        }
        let python = match self.opts.python.clone().or_else(|| procfs::exe(target)) {
            Some(python) => python,
            None => match resolve_python(None) {
                Ok(python) => python,
                Err(e) => {
                    say(&format!("❌ {e}"));
                    return false;
                }
            },
        };
        say(&format!("\nAttaching pdb to target PID {target}..."));
        say("Type pdb commands (list, next, print, etc.) or 'quit' to detach\n");
        let ok = self.run_pdb(&python, target);
        say("\nDebugger detached");
        ok
    }

    fn run_pdb(&mut self, python: &PathBuf, target: u32) -> bool {
        let piped = matches!(self.lines, Lines::Piped(_));
        let mut command = std::process::Command::new(python);
        command.args(["-m", "pdb", "-p", &target.to_string()]);
        if piped {
            command.stdin(Stdio::piped());
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // The client ignores SIGINT while pdb runs; pdb must not inherit that, or
                // Python would not install its KeyboardInterrupt handler.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        set_sigint(SigHandler::SigIgn);
        let result = command
            .spawn()
            .map(|child| self.feed_and_wait(child, piped));
        set_sigint(if piped {
            SigHandler::SigDfl
        } else {
            SigHandler::Handler(interrupt_read)
        });
        match result {
            Ok(Ok(status)) if status.success() => true,
            Ok(Ok(status)) => {
                match (status.code(), status.signal()) {
                    (Some(code), _) => say(&format!("❌ pdb exited with status {code}")),
                    (_, Some(sig)) => say(&format!("❌ pdb was killed by signal {sig}")),
                    _ => say("❌ pdb failed"),
                }
                false
            }
            Ok(Err(e)) | Err(e) => {
                say(&format!("❌ cannot run {} -m pdb: {e}", python.display()));
                false
            }
        }
    }

    /// Hands pdb the client's lines up to its quit command (piped mode) and waits for it.
    fn feed_and_wait(
        &mut self,
        mut child: Child,
        piped: bool,
    ) -> io::Result<std::process::ExitStatus> {
        let Some(mut stdin) = child.stdin.take().filter(|_| piped) else {
            return child.wait();
        };
        let Lines::Piped(rx) = &self.lines else {
            return child.wait();
        };
        let rx = rx.clone();
        // A watcher turns the child's exit into a channel event, so the feeder never
        // blocks on a line while pdb has already gone.
        let (exit_tx, exit_rx) = crossbeam_channel::bounded(1);
        let pid = child.id();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = exit_tx.send(());
            status
        });
        let mut quit_sent = false;
        loop {
            crossbeam_channel::select! {
                recv(exit_rx) -> _ => break,
                recv(rx) -> line => match line {
                    Ok(Ok(line)) => {
                        let quit = is_pdb_quit(&line);
                        if stdin.write_all(format!("{line}\n").as_bytes()).is_err() {
                            break;
                        }
                        if quit {
                            quit_sent = true;
                            break;
                        }
                    }
                    _ => break, // EOF of our stdin: pdb gets EOF too and detaches
                },
            }
        }
        drop(stdin);
        self.pdb_quit_sent = quit_sent;
        waiter
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("waiting for pdb {pid} failed"))))
    }

    /// After an attach that failed in piped mode, the lines meant for pdb up to its quit
    /// command are dropped rather than run as client commands.
    fn skip_pdb_lines(&mut self) {
        let Lines::Piped(rx) = &self.lines else {
            return;
        };
        while let Ok(Ok(line)) = rx.recv() {
            eprintln!("heli-client: not run (meant for pdb, which is not attached): {line}");
            if is_pdb_quit(&line) {
                break;
            }
        }
    }

    fn terminate(&self) -> Result<(), String> {
        say("Terminating controller and target...");
        let line = Command::Terminate.to_line(self.opts.dialect);
        let expect_reply = self.opts.dialect == Dialect::Seed;
        match exchange_raw(&self.opts.pipe_dir, &line, self.opts.timeout, expect_reply)
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(raw) => match crate::core::wire::parse_reply(&raw) {
                Ok(Reply::Ready) => {
                    say("✅ Controller is stopping the target");
                    Ok(())
                }
                Ok(Reply::Error(msg)) => Err(format!("Controller error: {msg}")),
                _ => Err(format!("unexpected reply to TERMINATE: {raw}")),
            },
        }
    }
}
