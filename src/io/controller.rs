//! The controller's driver: starts the target, runs the adapters (one blocking thread per
//! FIFO, child and signal source, all feeding one channel) and one owner loop that
//! journals each input, hands it to the core and carries out the effects.
use super::grant::{spawn_ack_reader, Granter};
use super::journal::JournalWriter;
use super::pipes::{self, PipeDir, CONTROL, RESPONSE};
use super::procfs;
use crate::core::journal::{Header, Record, Session, JOURNAL_FORMAT};
use crate::core::machine::{Config, Effect, ExitStatus, Input, StopSignal, Yama};
use crate::core::wire::{Dialect, LineFramer};
use crossbeam_channel::{select, Receiver, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Exit code for the controller's own failures, distinct from any target status it
/// passes through (the convention of `timeout`, `env` and `docker run`).
pub const EXIT_CONTROLLER_FAILED: i32 = 125;

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub pipe_dir: PathBuf,
    pub python: Option<PathBuf>,
    pub dialect: Dialect,
    /// `None`: the default journal path in the pipe directory; `Some(None)`: no journal.
    pub journal: Option<Option<PathBuf>>,
    pub grant_timeout_ms: u64,
    pub stop_grace_ms: u64,
    pub script: PathBuf,
    pub args: Vec<OsString>,
}

#[derive(Debug)]
pub struct ControllerError(pub String);

impl fmt::Display for ControllerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ControllerError {}

fn fail<T>(message: impl Into<String>) -> Result<T, ControllerError> {
    Err(ControllerError(message.into()))
}

fn log(message: &str) {
    let _ = writeln!(io::stderr(), "heli-controller: {message}");
}

/// Finds the interpreter: `--python`, else `$HELI_PYTHON`, else `python3.X` on PATH for
/// each supported minor version, newest first. Any interpreter is accepted here: the
/// version is read from the target itself when a grant is asked for.
pub fn resolve_python(explicit: Option<&Path>) -> Result<PathBuf, ControllerError> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    };
    if let Some(p) = explicit {
        return if executable(p) {
            Ok(p.to_path_buf())
        } else {
            fail(format!("--python {}: not an executable file", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("HELI_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if executable(&p) {
            Ok(p)
        } else {
            fail(format!(
                "HELI_PYTHON={}: not an executable file",
                p.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let names: Vec<String> = crate::pyruntime::LAYOUTS
        .iter()
        .rev()
        .map(|l| format!("python{}.{}", l.major, l.minor))
        .collect();
    for name in &names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    fail(format!(
        "Python {supported} not found: tried --python (not given), $HELI_PYTHON (not set) and {names} on PATH ({}). Install Python {supported} or pass --python PATH (scripts/provision-python.sh provisions one)",
        path.to_string_lossy(),
        supported = crate::pyruntime::supported_versions().replace(", ", " or "),
        names = names.join(", "),
    ))
}

/// Runs a whole controller session; returns the exit code.
pub fn run(opts: ControllerOptions) -> Result<i32, ControllerError> {
    let yama = procfs::yama();
    if let Yama::Scope(scope) = yama {
        if scope >= 3 || (scope == 2 && !nix::unistd::geteuid().is_root()) {
            return fail(format!(
                "kernel.yama.ptrace_scope is {scope}: {}; no grant can help. Lower it (as root: sysctl kernel.yama.ptrace_scope=1){}",
                if scope >= 3 { "no process may attach to another" } else { "only processes with CAP_SYS_PTRACE may attach" },
                if scope >= 3 { " after a reboot: scope 3 cannot be lowered while running" } else { "" }
            ));
        }
    }
    match std::fs::metadata(&opts.script) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return fail(format!("{}: not a regular file", opts.script.display())),
        Err(e) => return fail(format!("{}: {e}", opts.script.display())),
    }
    let python = resolve_python(opts.python.as_deref())?;

    // Block the stop signals before any thread exists so that every thread inherits the
    // mask and only the signal thread receives them (with sigwait).
    let stop_signals = stop_signal_set();
    stop_signals
        .thread_block()
        .map_err(|e| ControllerError(format!("blocking signals: {e}")))?;

    let mut pipes = PipeDir::create(&opts.pipe_dir).map_err(|e| ControllerError(e.to_string()))?;
    let controller_pid = std::process::id();
    let mut journal = match &opts.journal {
        Some(None) => None,
        Some(Some(path)) => Some(path.clone()),
        None => Some(pipes.join(&format!("journal-{controller_pid}.jsonl"))),
    }
    .map(|path| {
        JournalWriter::create(&path)
            .map_err(|e| ControllerError(format!("journal {}: {e}", path.display())))
    })
    .transpose()?;

    let mut target_argv: Vec<OsString> = vec![python.clone().into(), opts.script.clone().into()];
    target_argv.extend(opts.args.iter().cloned());
    let child = spawn_target(&python, &opts.script, &opts.args).map_err(|e| {
        if let Some(writer) = &journal {
            let _ = std::fs::remove_file(writer.path());
        }
        ControllerError(format!(
            "starting {} {}: {e}",
            python.display(),
            opts.script.display()
        ))
    })?;
    let target_pid = child.id();
    let started = Instant::now();

    let mut config = Config::new(target_pid, nix::unistd::getuid().as_raw(), yama);
    config.dialect = opts.dialect;
    config.grant_timeout_ms = opts.grant_timeout_ms;
    config.stop_grace_ms = opts.stop_grace_ms;
    let header = Header {
        format: JOURNAL_FORMAT,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        target_argv: target_argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        controller_pid,
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        config: config.clone(),
    };
    // After a failed write the journal stops for good: a journal with a gap in it would
    // replay as a divergence; one that ends early is reported as truncated.
    let record = |journal: &mut Option<JournalWriter>, record: Record| {
        if let Some(writer) = journal.as_mut() {
            if let Err(e) = writer.append(&record) {
                log(&format!(
                    "journal {}: {e}; journaling stopped",
                    writer.path().display()
                ));
                *journal = None;
            }
        }
    };
    record(&mut journal, Record::Header(header));

    let (tx, rx) = crossbeam_channel::unbounded::<Input>();
    let disabled = std::env::var_os("HELI_DISABLE_GRANT").is_some_and(|v| v == "1");
    let adapters = || -> io::Result<Granter> {
        let granter = Granter::new(target_pid, pipes.path(), disabled)?;
        spawn_signal_thread(stop_signals, tx.clone())?;
        spawn_target_waiter(target_pid, tx.clone())?;
        spawn_ack_reader(pipes.path(), granter.token().to_string(), tx.clone())?;
        spawn_control_reader(&pipes.join(CONTROL), tx.clone())?;
        Ok(granter)
    };
    let mut granter = match adapters() {
        Ok(granter) => granter,
        Err(e) => {
            let _ = kill(Pid::from_raw(target_pid as i32), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(target_pid as i32), None);
            return fail(format!("starting the controller's adapters: {e}"));
        }
    };
    drop(tx);

    log(&format!(
        "target {} started: {}",
        target_pid,
        target_argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    log(&format!(
        "listening on {} ({yama}, dialect {:?})",
        pipes.path().display(),
        opts.dialect
    ));
    if let Some(writer) = &journal {
        log(&format!("journal: {}", writer.path().display()));
    }
    if disabled {
        log("HELI_DISABLE_GRANT=1: grants are acknowledged WITHOUT being injected (diagnostics only)");
    }
    let response_path = pipes.join(RESPONSE);

    let mut session = Session::new(config);
    let mut immediate: VecDeque<Input> = VecDeque::new();
    let mut adapters_gone = false;
    loop {
        let input = match immediate.pop_front() {
            Some(input) => input,
            None => next_input(
                &rx,
                session.controller().poll_timeout(),
                started,
                &mut adapters_gone,
            ),
        };
        let at = started.elapsed().as_millis() as u64;
        record(
            &mut journal,
            Record::Input {
                at,
                input: input.clone(),
            },
        );
        if let Input::GrantRan { grant, .. } = input {
            granter.acknowledged(grant);
        }
        let effects = session.handle(at, input);
        record(
            &mut journal,
            Record::Effects {
                at,
                effects: effects.clone(),
            },
        );
        for effect in effects {
            match effect {
                Effect::Reply { reply } => send_reply(&response_path, &reply.to_line(opts.dialect)),
                Effect::InspectClient { pid } => immediate.push_back(Input::ClientInspected {
                    pid,
                    facts: procfs::inspect(pid),
                }),
                Effect::ScheduleGrant { grant, client } => {
                    immediate.push_back(granter.schedule(grant, client))
                }
                Effect::RetargetGrant { grant } => immediate.push_back(granter.retarget(grant)),
                Effect::WithdrawGrant { grant } => granter.withdraw(grant),
                Effect::StopTarget { force } => {
                    let signal = if force {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    let _ = kill(Pid::from_raw(target_pid as i32), signal);
                }
                Effect::RemovePipes => pipes.remove(),
                Effect::Log { message } => log(&message),
                Effect::Exit { code } => {
                    // The waiter left the child unreaped (WNOWAIT) so its pid could not be
                    // reused while we might still signal it; reap it now.
                    let _ = waitpid(Pid::from_raw(target_pid as i32), Some(WaitPidFlag::WNOHANG));
                    return Ok(code);
                }
            }
        }
    }
}

/// The next fact: from an adapter, or `DeadlineReached` when the core's deadline comes.
/// Every adapter thread holds a sender for the controller's life; if they are all gone
/// the only sound move left is to stop, said once; after that only deadlines can come.
fn next_input(
    rx: &Receiver<Input>,
    timeout: Option<u64>,
    started: Instant,
    adapters_gone: &mut bool,
) -> Input {
    let deadline = timeout.map(|ms| started + Duration::from_millis(ms));
    if *adapters_gone {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let _ = crossbeam_channel::at(deadline).recv();
        return Input::DeadlineReached;
    }
    let input = match deadline {
        Some(deadline) => select! {
            recv(rx) -> input => input.ok(),
            recv(crossbeam_channel::at(deadline)) -> _ => return Input::DeadlineReached,
        },
        None => rx.recv().ok(),
    };
    input.unwrap_or_else(|| {
        *adapters_gone = true;
        Input::SignalReceived {
            signal: StopSignal::Terminate,
        }
    })
}

fn stop_signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

fn spawn_target(
    python: &Path,
    script: &Path,
    args: &[OsString],
) -> io::Result<std::process::Child> {
    let parent = std::process::id() as i32;
    let mut command = Command::new(python);
    command.arg(script).args(args);
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        command.pre_exec(move || {
            // Undo the controller's blocked stop signals: the target must see them.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // If the controller dies (even by SIGKILL) the target is told to stop rather
            // than left running unsupervised with nobody able to attach to it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != parent {
                libc::_exit(EXIT_CONTROLLER_FAILED);
            }
            Ok(())
        });
    }
    command.spawn()
}

fn spawn_signal_thread(set: SigSet, tx: Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let signal = match set.wait() {
                Ok(Signal::SIGINT) => StopSignal::Interrupt,
                Ok(Signal::SIGHUP) => StopSignal::Hangup,
                Ok(_) => StopSignal::Terminate,
                Err(_) => continue,
            };
            if tx.send(Input::SignalReceived { signal }).is_err() {
                return;
            }
        })?;
    Ok(())
}

fn spawn_target_waiter(pid: u32, tx: Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("target-wait".into())
        .spawn(move || loop {
            // WNOWAIT: observe the exit but leave the zombie, so the pid stays ours until the
            // owner loop has stopped sending signals to it.
            let status = match waitid(
                Id::Pid(Pid::from_raw(pid as i32)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            ) {
                Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let _ = tx.send(Input::TargetExited { status });
            return;
        })?;
    Ok(())
}

/// Reads `control` for the controller's life. A second read descriptor stays open the
/// whole time, so a client never finds the pipe without a reader (writers would get
/// ENXIO or block); the reading descriptor is reopened after each EOF (all writers
/// gone), which is also how a last line without `\n` is recognised as complete.
fn spawn_control_reader(path: &Path, tx: Sender<Input>) -> io::Result<()> {
    let keeper = pipes::open_reader(path)?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let _keeper = keeper;
            let mut framer = LineFramer::default();
            let mut buf = [0u8; 4096];
            'reopen: loop {
                let Ok(mut reader) = pipes::open_reader(&path) else {
                    return;
                };
                // After data, read again before polling: Linux reports POLLHUP on a FIFO
                // reader only for writers that closed after that reader was opened. A
                // client that wrote and closed while this descriptor was being (re)opened
                // leaves its bytes with no HUP ever, so poll would wait for the next
                // client and a last line without newline would never be answered; read()
                // returns 0 for it all the same.
                let mut read_again = false;
                loop {
                    if !read_again {
                        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                        match poll(&mut fds, PollTimeout::NONE) {
                            Ok(_) => {}
                            Err(nix::errno::Errno::EINTR) => continue,
                            Err(_) => return,
                        }
                    }
                    read_again = false;
                    let frames = match reader.read(&mut buf) {
                        Ok(0) => {
                            if let Some(frame) = framer.finish() {
                                if tx.send(Input::LineReceived { frame }).is_err() {
                                    return;
                                }
                            }
                            continue 'reopen;
                        }
                        Ok(n) => {
                            read_again = true;
                            framer.push(&buf[..n])
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            continue
                        }
                        Err(_) => return,
                    };
                    for frame in frames {
                        if tx.send(Input::LineReceived { frame }).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// Writes one reply line. Never blocks: a reply nobody is reading is dropped and said so
/// (a client that follows the protocol opens `response` before writing its command).
fn send_reply(path: &Path, line: &str) {
    let result = pipes::open_writer(path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = result {
        let why = match e.raw_os_error() {
            Some(libc::ENXIO) => "no client is reading the response pipe".to_string(),
            Some(libc::EAGAIN) => "the response pipe is full (a client is not reading)".to_string(),
            _ => e.to_string(),
        };
        log(&format!("reply '{line}' not delivered: {why}"));
    }
}
