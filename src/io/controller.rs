//! The controller's driver: starts the target, runs the adapters (one blocking thread per
//! FIFO, child and signal source, all feeding one channel) and one owner loop that
//! journals each input, hands it to the core and carries out the effects.
use super::client_watch::ClientWatcher;
use super::find_python::resolve_python;
use super::grant::GrantInjector;
use super::journal_writer::{Appended, JournalWriter, DEFAULT_LIMIT_BYTES};
use super::keeper::{Keeper, KeeperEvent, KeeperEvents};
use super::pipes::{self, PipeDir, PipeHandle};
use super::procfs;
use super::socket_server::SocketServer;
use crate::core::journal::{Header, Record, JOURNAL_FORMAT};
use crate::core::ptrace_policy::controller_may_start;
use crate::core::supervisor::{
    Config, ControllerExit, Effect, ExitStatus, GrantInjection, Input, Origin, ReplyTo, StopSignal,
    Supervisor, WallClock,
};
use crate::core::wire::{Dialect, LineFramer};
use crossbeam_channel::{select, Receiver, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit code for the controller's own failures (see [`ControllerExit::Failed`]).
pub const EXIT_CONTROLLER_FAILED: i32 = ControllerExit::FAILED_CODE;

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub pipe_dir: PathBuf,
    pub python: Option<PathBuf>,
    pub dialect: Dialect,
    /// `None`: the default journal path in the pipe directory; `Some(None)`: no journal.
    pub journal: Option<Option<PathBuf>>,
    pub grant_timeout_ms: u64,
    pub stop_grace_ms: u64,
    /// The first signal of a stop, for the target alone (see [`Config::stop_signal`]).
    pub stop_signal: i32,
    /// Wake a waiting target for grants (see [`super::wake`]).
    pub wake: bool,
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

/// Writes one line on stderr, bounded whatever happens: a message equal to the one before
/// is counted, not repeated (the count is said when another message comes), and beyond
/// [`LOG_LINES_PER_SECOND`] lines in a second the rest of that second is counted and said
/// once. A flood of bad input cannot fill the disk through the log.
fn log(message: &str) {
    static STATE: std::sync::Mutex<LogState> = std::sync::Mutex::new(LogState {
        last: String::new(),
        repeats: 0,
        second: None,
        lines_this_second: 0,
        suppressed: 0,
    });
    let mut state = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut err = io::stderr().lock();
    if state.last == message {
        state.repeats += 1;
        return;
    }
    if state.repeats > 0 {
        let _ = writeln!(
            err,
            "heli-controller: (the message above repeated {} more times)",
            state.repeats
        );
        state.repeats = 0;
    }
    let now = Instant::now();
    let new_second =
        !matches!(state.second, Some(start) if now.duration_since(start) < Duration::from_secs(1));
    if new_second {
        if state.suppressed > 0 {
            let _ = writeln!(err, "heli-controller: ({} log lines left out: more than {LOG_LINES_PER_SECOND} a second)", state.suppressed);
        }
        state.second = Some(now);
        state.lines_this_second = 0;
        state.suppressed = 0;
    }
    state.last = message.to_string();
    if state.lines_this_second >= LOG_LINES_PER_SECOND {
        state.suppressed += 1;
        return;
    }
    state.lines_this_second += 1;
    let _ = writeln!(err, "heli-controller: {message}");
}

const LOG_LINES_PER_SECOND: u32 = 50;

struct LogState {
    last: String,
    repeats: u64,
    second: Option<Instant>,
    lines_this_second: u32,
    suppressed: u64,
}

/// Local time minus UTC now, in seconds (0 when the C library cannot tell).
fn local_utc_offset() -> i32 {
    // SAFETY: time(NULL) and localtime_r into a zeroed tm that we own.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        i32::try_from(tm.tm_gmtoff).unwrap_or(0)
    }
}

/// Runs a whole controller session; returns the exit code.
pub fn run(opts: ControllerOptions) -> Result<i32, ControllerError> {
    let yama = procfs::yama();
    controller_may_start(yama, procfs::own_tracer_privilege()).map_err(ControllerError)?;
    match std::fs::metadata(&opts.script) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return fail(format!("{}: not a regular file", opts.script.display())),
        Err(e) => return fail(format!("{}: {e}", opts.script.display())),
    }
    let python = resolve_python(opts.python.as_deref()).map_err(ControllerError)?;

    // Block the stop signals before any thread exists so that every thread inherits the
    // mask and only the signal thread receives them (with sigwait).
    let stop_signals = stop_signal_set();
    stop_signals
        .thread_block()
        .map_err(|e| ControllerError(format!("blocking signals: {e}")))?;

    let mut pipes = PipeDir::create(&opts.pipe_dir).map_err(|e| ControllerError(e.to_string()))?;
    let controller_pid = std::process::id();
    let journal_err =
        |path: &Path, e: io::Error| ControllerError(format!("journal {}: {e}", path.display()));
    let mut journal = match &opts.journal {
        Some(None) => None,
        Some(Some(path)) => Some(
            JournalWriter::create(path, DEFAULT_LIMIT_BYTES).map_err(|e| journal_err(path, e))?,
        ),
        // Through the pipe directory's handle, not its path (issue 9).
        None => {
            let name = format!("journal-{controller_pid}.jsonl");
            let path = pipes.join(&name);
            let file = pipes
                .create_file(&name)
                .map_err(|e| journal_err(&path, e))?;
            Some(JournalWriter::from_new_file(
                file,
                path,
                DEFAULT_LIMIT_BYTES,
            ))
        }
    };

    let mut target_argv: Vec<OsString> = vec![python.clone().into(), opts.script.clone().into()];
    target_argv.extend(opts.args.iter().cloned());
    // Orphans of the tree come to the controller if the keeper (their subreaper) is
    // killed from outside, so they stay findable and are stopped with the rest.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The waker the target's interpreter installs itself before the program's first line
    // (see `super::startup_waker`). Held until the controller returns: its path names a
    // descriptor of this process.
    let startup_waker = if opts.wake {
        match super::startup_waker::StartupWaker::create() {
            Ok(waker) => Some(waker),
            Err(e) => {
                log(&format!(
                    "the start-up SIGURG waker could not be prepared ({e}); it is written into the target once it runs instead"
                ));
                None
            }
        }
    } else {
        None
    };
    let target_env: Vec<(OsString, OsString)> = startup_waker
        .iter()
        .map(|waker| {
            let existing = std::env::var_os("PYTHONPATH");
            ("PYTHONPATH".into(), waker.python_path(existing.as_deref()))
        })
        .collect();
    let (mut keeper, keeper_events) = Keeper::start(&python, &opts.script, &opts.args, &target_env)
        .map_err(|e| {
            if let Some(writer) = &journal {
                let _ = std::fs::remove_file(writer.path());
            }
            ControllerError(format!(
                "starting {} {}: {e}",
                python.display(),
                opts.script.display()
            ))
        })?;
    let target_pid = keeper.target_pid();
    let started = Instant::now();

    let mut config = Config::new(target_pid, nix::unistd::getuid().as_raw(), yama);
    config.dialect = opts.dialect;
    config.grant_timeout_ms = opts.grant_timeout_ms;
    config.stop_grace_ms = opts.stop_grace_ms;
    config.stop_signal = opts.stop_signal;
    config.delivery.wake = opts.wake;
    config.keeper_pid = Some(keeper.pid());
    config.clock = Some(WallClock {
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        utc_offset_s: local_utc_offset(),
    });
    if std::env::var_os("HELI_DISABLE_GRANT").is_some_and(|v| v == "1") {
        config.grant_injection = GrantInjection::SkippedForDiagnostics;
    }
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
    let record =
        |journal: &mut Option<JournalWriter>,
         write: &mut dyn FnMut(&mut JournalWriter) -> io::Result<Appended>| {
            if let Some(writer) = journal.as_mut() {
                match write(writer) {
                    Ok(Appended::Written | Appended::AlreadyCapped) => {}
                    Ok(Appended::CappedNow) => log(&format!(
                        "journal {} reached its limit of {} MiB; later inputs are not journaled",
                        writer.path().display(),
                        DEFAULT_LIMIT_BYTES >> 20
                    )),
                    Err(e) => {
                        log(&format!(
                            "journal {}: {e}; journaling stopped",
                            writer.path().display()
                        ));
                        *journal = None;
                    }
                }
            }
        };
    record(&mut journal, &mut |w| {
        w.append(&Record::Header(header.clone()))
            .map(|()| Appended::Written)
    });

    // Bounded: a flood of lines waits in the control pipe (the writer blocks), not in
    // the controller's memory.
    let (tx, rx) = crossbeam_channel::bounded::<Input>(1024);
    // Client exits come on a channel of their own: the watcher must be able to start a
    // thread for any later grant, so it keeps a sender for good, which on the adapters'
    // channel would hide that every adapter had stopped.
    let (watch_tx, watch_rx) = crossbeam_channel::unbounded::<Input>();
    let watcher = ClientWatcher::new(watch_tx);
    let adapters = || -> io::Result<(GrantInjector, ResponseWriter, SocketServer)> {
        let injector = GrantInjector::start(target_pid, tx.clone())?.with_wake(opts.wake);
        if opts.wake {
            spawn_waker_installer(target_pid, injector.gate())?;
        }
        let responses = ResponseWriter::start(pipes.handle()?, opts.dialect)?;
        spawn_signal_thread(stop_signals, tx.clone())?;
        spawn_target_waiter(keeper_events, tx.clone())?;
        spawn_control_reader(pipes.handle()?, tx.clone())?;
        // The socket beside the FIFOs: one private connection per request (issue 9,
        // defect 4). Dropped before `pipes`, so it is gone before the directory is.
        let sockets = SocketServer::start(pipes.handle()?, opts.dialect, tx.clone())?;
        Ok((injector, responses, sockets))
    };
    let (mut injector, mut responses, mut sockets) = match adapters() {
        Ok(adapters) => adapters,
        Err(e) => {
            keeper.signal_tree(libc::SIGKILL);
            keeper.finish();
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
        "keeper {} stops the target's whole tree if the controller ends in any way",
        keeper.pid()
    ));
    log(&format!(
        "listening on {} ({yama}, dialect {:?})",
        pipes.path().display(),
        opts.dialect
    ));
    if let Some(writer) = &journal {
        log(&format!("journal: {}", writer.path().display()));
    }
    if config.grant_injection == GrantInjection::SkippedForDiagnostics {
        log("HELI_DISABLE_GRANT=1: grants are answered READY WITHOUT being injected (diagnostics only)");
    }

    let mut supervisor = Supervisor::new(config);
    // Facts the effects just produced (an inspection, an injection's outcome) are handled
    // before anything else arrives, in the order they were found.
    let mut immediate: VecDeque<Input> = VecDeque::new();
    let mut adapters_gone = false;
    loop {
        let input = match immediate.pop_front() {
            Some(input) => input,
            None => next_input(
                &rx,
                &watch_rx,
                supervisor.poll_timeout(),
                started,
                &mut adapters_gone,
            ),
        };
        let at = started.elapsed().as_millis() as u64;
        record(&mut journal, &mut |w| w.step(at, &input, None));
        let effects = supervisor.handle(at, input.clone());
        record(&mut journal, &mut |w| w.step(at, &input, Some(&effects)));
        for effect in effects {
            match effect {
                Effect::Reply { reply, to } => match to {
                    ReplyTo::Fifo => responses.send(reply.to_line(opts.dialect)),
                    ReplyTo::Socket { conn } => {
                        sockets.reply(conn, reply.to_line(opts.dialect), !reply.is_progress())
                    }
                },
                Effect::InspectClient { pid, asker } => {
                    immediate.push_back(Input::ClientInspected {
                        pid,
                        facts: procfs::inspect_for(pid, asker),
                    })
                }
                Effect::Deliver {
                    grant,
                    client,
                    action,
                } => immediate.push_back(Input::Delivery {
                    grant,
                    fact: injector.carry_out(grant, client, &action),
                }),
                Effect::ForgetGrant { grant } => injector.forget(grant),
                Effect::InspectProcess { pid } => immediate.push_back(Input::ProcessInspected {
                    pid,
                    facts: procfs::ancestry(pid),
                }),
                Effect::AimGrant { grant, process } => injector.aim(grant, process),
                Effect::WatchClient { pid } => watcher.watch(pid),
                Effect::SignalTarget { signal } => keeper.signal_target(signal),
                Effect::StopTree { signal } => keeper.signal_tree(signal),
                // Questions about the tree: read in place, each bounded (see io::tree), the
                // outcome handled next, before any other line (the core queues those).
                Effect::ListTree => {
                    // The keeper is the tree's root while it lives; once it is gone its
                    // orphans are the controller's.
                    let root = if procfs::is_running(keeper.pid()) {
                        keeper.pid()
                    } else {
                        controller_pid
                    };
                    immediate.push_back(Input::TreeListed {
                        listing: super::tree::list_tree(root),
                    })
                }
                Effect::ReadStacks { pids } => immediate.push_back(Input::StacksRead {
                    stacks: super::tree::read_all_stacks(&pids),
                }),
                Effect::ReadTasks { pid } => immediate.push_back(Input::TasksRead {
                    pid,
                    outcome: super::tree::read_asyncio_tasks(pid),
                }),
                Effect::RemovePipes => {
                    // Replies already decided reach their readers before the pipes go.
                    responses.finish();
                    sockets.finish();
                    pipes.remove();
                }
                Effect::Log { message } => log(&message),
                Effect::Exit { code } => {
                    record(&mut journal, &mut |w| {
                        w.flush_repeats().map(|()| Appended::Written)
                    });
                    // Closing the keeper's pipe makes it SIGKILL whatever is left of the
                    // tree; waiting for it means nothing of the tree outlives this exit.
                    keeper.finish();
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
    client_exits: &Receiver<Input>,
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
    let never = crossbeam_channel::never();
    let at = deadline.map_or(never, crossbeam_channel::at);
    let input = select! {
        recv(rx) -> input => input.ok(),
        recv(client_exits) -> exit => match exit {
            Ok(exit) => return exit,
            Err(_) => None,
        },
        recv(at) -> _ => return Input::DeadlineReached,
    };
    input.unwrap_or_else(|| {
        *adapters_gone = true;
        Input::AdaptersGone
    })
}

fn stop_signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Installs the SIGURG waker in the target while its interpreter starts (see
/// [`super::wake`]), and logs what became of it. Not journaled: it is no input of the core
/// and decides nothing; a grant's script installs the waker as well.
fn spawn_waker_installer(target: u32, gate: super::wake::InjectionGate) -> io::Result<()> {
    use super::wake::{install_at_start, waker_script, InstallOutcome};
    let script = super::grant::sealed_memfd("heli-waker", waker_script().as_bytes())?;
    let script_path = super::grant::path_for_others(&script);
    let path = script_path.clone();
    std::thread::Builder::new()
        .name("waker-install".into())
        .spawn(move || {
            let outcome = install_at_start(
                target as i32,
                &path,
                &gate,
                Duration::from_secs(10),
                Duration::from_secs(2),
            );
            match outcome {
                InstallOutcome::Installed { after } => log(&format!(
                    "SIGURG waker installed in the target after {} ms",
                    after.as_millis()
                )),
                InstallOutcome::StillPending { tid, after, why } => log(&format!(
                    "SIGURG waker written into thread {tid} after {} ms but not run within 2 s (the target blocked at once), so taken back; a grant installs it (before: {why})",
                    after.as_millis()
                )),
                InstallOutcome::AlreadyCaught { after } => log(&format!(
                    "SIGURG waker: the target caught SIGURG by itself after {} ms (the start-up sitecustomize, or its own handler)",
                    after.as_millis()
                )),
                InstallOutcome::LeftToGrant => {}
                InstallOutcome::NotWritten { why } => log(&format!(
                    "SIGURG waker not installed ({why}): attaching to a target blocked in a system call waits until it runs Python code"
                )),
            }
            // The target may read the script later (a request still pending): it stays
            // open, like the controller's other scripts, for the controller's life.
            std::mem::forget(script);
        })?;
    // The rest of the tree: fresh interpreters it starts get the waker too. It runs for
    // the controller's life (the sender is never dropped).
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    std::mem::forget(stop_tx);
    let tree_script = script_path.clone();
    std::thread::Builder::new()
        .name("tree-waker".into())
        .spawn(move || super::tree_waker::watch(target, tree_script, stop_rx, log))?;
    Ok(())
}

fn spawn_signal_thread(set: SigSet, tx: Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            // sigwaitinfo rather than sigwait: si_code tells a terminal's signal (sent by
            // the kernel to the whole foreground group, the target included) from kill().
            // SAFETY: a zeroed siginfo_t is valid; the set is blocked in every thread.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let number = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
            let signal = match number {
                libc::SIGINT => StopSignal::Interrupt,
                libc::SIGHUP => StopSignal::Hangup,
                libc::SIGTERM => StopSignal::Terminate,
                _ => continue,
            };
            let by_kernel = info.si_code == libc::SI_KERNEL;
            if tx
                .send(Input::SignalReceived { signal, by_kernel })
                .is_err()
            {
                return;
            }
        })?;
    Ok(())
}

/// Turns the keeper's report of the target's end into [`Input::TargetExited`]. The
/// keeper reaps the target (it is its parent) and never signals it afterwards, so the pid
/// cannot be reused under the controller's feet.
fn spawn_target_waiter(mut events: KeeperEvents, tx: Sender<Input>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("target-wait".into())
        .spawn(move || {
            let status = match events.wait_event() {
                KeeperEvent::Exited(code) => ExitStatus::Code(code),
                KeeperEvent::Signaled(sig) => ExitStatus::Signal(sig),
                KeeperEvent::KeeperGone => {
                    // Only a SIGKILL from outside ends the keeper early; the target's
                    // PR_SET_PDEATHSIG then killed it with SIGKILL.
                    log(
                        "the keeper process died; the target was killed with it (PR_SET_PDEATHSIG)",
                    );
                    ExitStatus::Signal(libc::SIGKILL)
                }
            };
            let _ = tx.send(Input::TargetExited { status });
        })?;
    Ok(())
}

/// Reads `control` for the controller's life. A second read descriptor stays open the
/// whole time, so a client never finds the pipe without a reader (writers would get
/// ENXIO or block); the reading descriptor is reopened after each EOF (all writers
/// gone), which is also how a last line without `\n` is recognised as complete.
fn spawn_control_reader(pipes: PipeHandle, tx: Sender<Input>) -> io::Result<()> {
    let keeper = pipes.open_control_reader()?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let _keeper = keeper;
            let mut framer = LineFramer::default();
            let mut buf = [0u8; 4096];
            'reopen: loop {
                let Ok(mut reader) = pipes.open_control_reader() else {
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
                                let origin = Origin::Fifo;
                                if tx.send(Input::LineReceived { frame, origin }).is_err() {
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
                        let origin = Origin::Fifo;
                        if tx.send(Input::LineReceived { frame, origin }).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// How long a reply waits for a reader of `response` (0.x clients open it only after
/// sending) and for room in it (a reader that is late to read).
const REPLY_HOLD: Duration = Duration::from_secs(5);

/// Replies waiting for the writer; beyond this the owner loop waits for room.
const MAX_REPLIES_WAITING: usize = 10_000;

/// The `response` writer: one thread that delivers replies in order, so the owner loop
/// never blocks on a client. A reply waits for room in the pipe (a reader late to read),
/// within [`REPLY_HOLD`]. Whether it also waits for a reader to open the pipe depends on
/// the dialect: seed clients open `response` before they write, so a reply with no reader
/// is nobody's and is dropped at once (held, it would reach the next client); 0.x clients
/// open it only after writing, so for them the reply is held until they do. A reply that
/// cannot be delivered is logged.
struct ResponseWriter {
    replies: Option<Sender<(String, Instant)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResponseWriter {
    fn start(pipes: PipeHandle, dialect: Dialect) -> io::Result<ResponseWriter> {
        let (replies, queue) = crossbeam_channel::bounded::<(String, Instant)>(MAX_REPLIES_WAITING);
        let wait_for_reader = dialect == Dialect::Legacy;
        let thread = std::thread::Builder::new()
            .name("response".into())
            .spawn(move || {
                for (line, deadline) in queue {
                    if let Err(why) = deliver_reply(&pipes, &line, deadline, wait_for_reader) {
                        log(&format!("reply '{line}' not delivered: {why}"));
                    }
                }
            })?;
        Ok(ResponseWriter {
            replies: Some(replies),
            thread: Some(thread),
        })
    }

    /// Queues a reply. When [`MAX_REPLIES_WAITING`] already wait (a reader slower than the
    /// lines coming in), the owner loop waits here: the flood then waits in the control
    /// pipe, not in memory, and no reply is dropped for lack of room. Each reply waits at
    /// most [`REPLY_HOLD`] in the writer, which bounds this wait too.
    fn send(&self, line: String) {
        let Some(replies) = &self.replies else {
            return log(&format!(
                "reply '{line}' not delivered: the pipes are removed"
            ));
        };
        let queued = replies.send((line, Instant::now() + REPLY_HOLD));
        if let Err(e) = queued {
            let (line, _) = e.into_inner();
            log(&format!(
                "reply '{line}' not delivered: the response writer has stopped"
            ));
        }
    }

    /// Delivers what is queued (each reply within its own deadline), then stops.
    fn finish(&mut self) {
        self.replies = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens `response` for writing once a reader is there and writes `line`, both before
/// `deadline`. The open blocks (the rendezvous a FIFO offers: it returns when a reader
/// opens); at the deadline a short-lived reader of our own releases it and the reply is
/// dropped unwritten, so no later client can read a stale reply.
fn deliver_reply(
    pipes: &PipeHandle,
    line: &str,
    deadline: Instant,
    wait_for_reader: bool,
) -> Result<(), String> {
    let mut file = if wait_for_reader {
        open_writer_by(pipes, deadline)?
    } else {
        pipes
            .open_response_writer()
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENXIO) => "no client is reading the response pipe".to_string(),
                _ => e.to_string(),
            })?
    };
    // Non-blocking from here: a reader that never reads must not hold the writer forever.
    pipes::set_nonblocking(&file).map_err(|e| e.to_string())?;
    let bytes = format!("{line}\n");
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!(
                        "the response pipe stayed full for {} s (a client is not reading)",
                        REPLY_HOLD.as_secs()
                    ));
                }
                let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLOUT)];
                let ms = left.as_millis().min(i32::MAX as u128) as i32;
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                return Err("the client closed the response pipe before reading its reply".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn open_writer_by(pipes: &PipeHandle, deadline: Instant) -> Result<std::fs::File, String> {
    // The common case, a client that opened `response` before writing its command.
    match pipes.open_response_writer() {
        Ok(file) => return Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
        Err(e) => return Err(e.to_string()),
    }
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let opened = std::thread::scope(|scope| {
        scope.spawn(|| {
            if done_rx.recv_deadline(deadline).is_err() {
                // Deadline: become the reader for an instant so the blocked open returns.
                pipes.release_response_writer();
            }
        });
        let opened = pipes.open_response_writer_waiting();
        let _ = done_tx.send(());
        opened
    });
    let file = opened.map_err(|e| e.to_string())?;
    if Instant::now() >= deadline {
        return Err(format!(
            "no client opened the response pipe within {} s",
            REPLY_HOLD.as_secs()
        ));
    }
    Ok(file)
}
