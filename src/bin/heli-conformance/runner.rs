//! Runs conformance cases against a controller from the outside: it starts the controller
//! from a command template, talks to it through its FIFOs only (with
//! [`helicopter_parent::io::exchange`]), and watches processes through `/proc` and pidfds.
//!
//! Every wait has a deadline. Every process a case starts (the controller, its target,
//! helper processes) is killed when the case ends, pass or fail: the suite is a child
//! subreaper, so whatever the controller leaves behind becomes the suite's child, and
//! between cases the suite has no children of its own.
use crate::model::case::{
    check_unique_names, parse_case_file, Case, CaseFile, CaseFileError, Concurrently, Exchange,
    Send, SendPart, Step,
};
use crate::model::dialect;
use crate::model::pattern::{Bindings, Pattern, Var};
use crate::model::template::{CommandTemplate, TemplateValues};
use crate::model::{Outcome, Summary, Verdict};
use helicopter_parent::core::wire::{parse_reply, Dialect, Reply};
use helicopter_parent::io::exchange::{write_control, ExchangeError, NextLine, ResponseReader};
use helicopter_parent::io::pipes::{self, CONTROL, RESPONSE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long cleanup waits for killed processes to be reaped.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A controller that opens `control` with a blocking `open` is counted as a reader by the
/// kernel, but the open (and so inotify's IN_OPEN) completes only when a writer arrives:
/// no event tells the suite that it is served. Only for that case is the state re-checked
/// at this interval while waiting for the pipes; everything else is event-driven.
const SERVED_RECHECK: Duration = Duration::from_millis(20);

/// The controller's output, in the case's directory. Files, not pipes: a chatty
/// controller can never block on its output, and `expect_output` can watch it.
const CONTROLLER_STDOUT: &str = "controller.stdout";
const CONTROLLER_STDERR: &str = "controller.stderr";

#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub controller: CommandTemplate,
    pub dialect: Dialect,
    /// Fills `{python}` in the template.
    pub python: Option<PathBuf>,
    /// For a controller whose pipe directory is fixed: where its pipes are. Otherwise
    /// each case gets a fresh directory.
    pub fixed_pipe_dir: Option<PathBuf>,
    /// How long a controller may take to serve its pipes.
    pub startup_timeout: Duration,
    /// Only the cases with these names (all when empty).
    pub only: Vec<String>,
    /// After a failure, also print the tail of the controller's stderr.
    pub verbose: bool,
    /// Skip the cases of this project's protocol extensions (for another implementation).
    pub no_extensions: bool,
}

/// Reads every `*.json` case file in `dir` (sorted by name) and checks that the targets
/// exist and the case names are unique.
pub fn load_cases(dir: &Path) -> Result<Vec<CaseFile>, CaseFileError> {
    let dir_error = |message: String| CaseFileError {
        path: dir.to_path_buf(),
        message,
    };
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| dir_error(e.to_string()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(dir_error("no *.json case files here".into()));
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = fs::read_to_string(&path).map_err(|e| CaseFileError {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut file = parse_case_file(&path, &text)?;
        for case in &mut file.cases {
            // Absolute, so that the controller finds it whatever its working directory,
            // and so that the target can be recognised in /proc by its argument.
            case.target = fs::canonicalize(&case.target)
                .ok()
                .filter(|target| target.is_file())
                .ok_or_else(|| CaseFileError {
                    path: path.clone(),
                    message: format!(
                        "case '{}': target {} is not a file",
                        case.name,
                        case.target.display()
                    ),
                })?;
        }
        files.push(file);
    }
    check_unique_names(&files)?;
    Ok(files)
}

/// Runs the cases, one output line each, then the closing `N passed, N failed` line.
pub fn run_suite(
    opts: &SuiteOptions,
    files: &[CaseFile],
    out: &mut dyn Write,
) -> io::Result<Summary> {
    // SAFETY: prctl with integer arguments has no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut summary = Summary::default();
    let cases = files
        .iter()
        .flat_map(|file| &file.cases)
        .filter(|case| opts.only.is_empty() || opts.only.contains(&case.name));
    for case in cases {
        let (outcome, stderr_tail) = if case.seed_only && opts.dialect == Dialect::Legacy {
            let verdict = Verdict::Skip("seed dialect only".into());
            (outcome(case, verdict), Vec::new())
        } else if case.extension && opts.no_extensions {
            let verdict = Verdict::Skip("an extension of the protocol (--no-extensions)".into());
            (outcome(case, verdict), Vec::new())
        } else {
            run_case(opts, case)
        };
        summary.add(&outcome);
        writeln!(out, "{}", outcome.line())?;
        if opts.verbose && matches!(outcome.verdict, Verdict::Fail(_)) {
            // What the case is for, then what the controller said: the failure line
            // alone names a step, not the property it checks.
            if let Some(about) = &case.about {
                writeln!(out, "    about: {about}")?;
            }
            for line in stderr_tail {
                writeln!(out, "    | {line}")?;
            }
        }
        out.flush()?;
    }
    writeln!(out, "{}", summary.line())?;
    out.flush()?;
    Ok(summary)
}

fn outcome(case: &Case, verdict: Verdict) -> Outcome {
    Outcome {
        name: case.name.clone(),
        verdict,
    }
}

/// Runs one case; returns its outcome and the last lines of the controller's stderr.
fn run_case(opts: &SuiteOptions, case: &Case) -> (Outcome, Vec<String>) {
    // Dropped in reverse order, also on a panic: the run (stopping the busy threads),
    // then the sweep (killing every process the case started), then the directory.
    let work_dir = match WorkDir::create() {
        Ok(dir) => dir,
        Err(e) => return (outcome(case, Verdict::Fail(e)), Vec::new()),
    };
    let _sweep = ProcessSweep;
    let mut run = CaseRun::new(opts, case, &work_dir);
    let result = run
        .start()
        .and_then(|()| run.steps(&case.steps).map_err(|e| e.to_string()));
    let verdict = match result {
        Ok(()) => Verdict::Pass,
        Err(why) => Verdict::Fail(why),
    };
    (outcome(case, verdict), run.stderr_tail(10))
}

/// A step's failure and where it happened, innermost step last.
#[derive(Debug)]
struct StepError {
    message: String,
    at: Vec<String>,
}

impl StepError {
    fn within(mut self, context: String) -> StepError {
        self.at.insert(0, context);
        self
    }
}

impl From<String> for StepError {
    fn from(message: String) -> StepError {
        StepError {
            message,
            at: Vec::new(),
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if !self.at.is_empty() {
            write!(f, " (at {})", self.at.join(", "))?;
        }
        Ok(())
    }
}

/// One case against one controller process.
struct CaseRun<'a> {
    opts: &'a SuiteOptions,
    case: &'a Case,
    work_dir: &'a WorkDir,
    pipe_dir: PathBuf,
    controller: Option<Controller>,
    /// Live helper processes standing for `{live_pid}` (killed by the sweep).
    helpers: Vec<Child>,
    bindings: Bindings,
    deadline: Instant,
    _busy: BusyThreads,
}

struct Controller {
    child: Child,
    /// Readable once the controller has exited.
    exit_fd: OwnedFd,
    stdin: Option<ChildStdin>,
    stderr_path: PathBuf,
}

impl<'a> CaseRun<'a> {
    fn new(opts: &'a SuiteOptions, case: &'a Case, work_dir: &'a WorkDir) -> CaseRun<'a> {
        let pipe_dir = opts
            .fixed_pipe_dir
            .clone()
            .unwrap_or_else(|| work_dir.path.join("pipes"));
        CaseRun {
            opts,
            case,
            work_dir,
            pipe_dir,
            controller: None,
            helpers: Vec::new(),
            bindings: Bindings::default(),
            deadline: Instant::now() + case.timeout,
            _busy: BusyThreads::start(case.busy_threads),
        }
    }

    /// Starts the controller and waits until it serves its pipes.
    fn start(&mut self) -> Result<(), String> {
        let argv = self.opts.controller.render(&TemplateValues {
            pipe_dir: &self.pipe_dir,
            target: &self.case.target,
            python: self.opts.python.as_deref(),
        })?;
        let stdout_path = self.work_dir.path.join(CONTROLLER_STDOUT);
        let stderr_path = self.work_dir.path.join(CONTROLLER_STDERR);
        let create = |path: &Path| {
            File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
        };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            // A pipe the suite holds: `close_stdin` turns it into EOF for the target.
            .stdin(Stdio::piped())
            .stdout(create(&stdout_path)?)
            .stderr(create(&stderr_path)?)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start the controller {}: {e}",
                    argv[0].to_string_lossy()
                )
            })?;
        let exit_fd = pidfd_open(child.id() as i32).map_err(|e| {
            format!("pidfd_open on the controller: {e} (Linux 5.3 or later needed)")
        })?;
        let stdin = child.stdin.take();
        self.controller = Some(Controller {
            child,
            exit_fd,
            stdin,
            stderr_path,
        });
        let controller = self.controller.as_ref().expect("just set");
        let deadline = (Instant::now() + self.opts.startup_timeout).min(self.deadline);
        let dir = self.pipe_dir.clone();
        match wait_for_dir(
            &dir,
            Watch::PipesServed,
            deadline,
            Some(controller.exit_fd.as_fd()),
            Some(SERVED_RECHECK),
            || is_served(&dir),
        ) {
            Ok(()) => {}
            Err(WaitEnd::TimedOut) => {
                return Err(format!(
                    "expected the controller to serve {} within {} ms, got no reader on its control pipe{}",
                    dir.display(),
                    self.opts.startup_timeout.as_millis(),
                    self.last_stderr_note()
                ))
            }
            Err(WaitEnd::ProcessExited) => {
                let status = self.controller_status().unwrap_or_else(|| "?".into());
                return Err(format!(
                    "expected the controller to serve {}, got its exit ({status}) first{}",
                    dir.display(),
                    self.last_stderr_note()
                ));
            }
        }
        // Found from the outside, so that `TARGET_PID` replies can be checked against it.
        self.bindings.target_pid = self.find_target();
        Ok(())
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), StepError> {
        for (index, step) in steps.iter().enumerate() {
            self.step(step)
                .map_err(|e| e.within(format!("step {} {}", index + 1, step.describe())))?;
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Exchange(exchange) => self.exchange(exchange)?,
            Step::SignalTarget(signal) => self.signal_target(*signal)?,
            Step::CloseStdin => {
                if let Some(controller) = self.controller.as_mut() {
                    controller.stdin = None;
                }
            }
            Step::ExpectOutput { text, within } => self.expect_output(text, *within)?,
            Step::ExpectExit { within, code } => self.expect_exit(*within, *code)?,
            Step::ExpectPipesRemoved { within } => self.expect_pipes_removed(*within)?,
            Step::ExpectTargetStopped { within } => self.expect_target_stopped(*within)?,
            Step::AnyOf(alternatives) => {
                let mut failures = Vec::new();
                for (index, steps) in alternatives.iter().enumerate() {
                    match self.steps(steps) {
                        Ok(()) => return Ok(()),
                        Err(e) => failures.push(format!("({}) {e}", index + 1)),
                    }
                }
                return Err(format!("no alternative held: {}", failures.join("; ")).into());
            }
            Step::Repeat { times, steps } => {
                for round in 1..=*times {
                    self.steps(steps)
                        .map_err(|e| e.within(format!("repetition {round} of {times}")))?;
                }
            }
            Step::Concurrently(concurrently) => self.concurrently(concurrently)?,
        }
        Ok(())
    }

    /// The step's deadline: `within` from now, but never past the case's.
    fn until(&self, within: Duration) -> Instant {
        (Instant::now() + within).min(self.deadline)
    }

    fn exchange(&mut self, exchange: &Exchange) -> Result<(), String> {
        let dialect = self.opts.dialect;
        let expected: Vec<Pattern> = match (&exchange.expect_legacy, dialect) {
            (Some(legacy), Dialect::Legacy) => legacy.clone(),
            _ => exchange
                .expect
                .iter()
                .map(|pattern| dialect::reply_pattern(pattern, dialect))
                .collect(),
        };
        for var in expected.iter().flat_map(|pattern| pattern.vars()) {
            self.bind(var)?;
        }
        let bytes = self.render_send(&exchange.send)?;
        let deadline = self.until(exchange.within);
        let shown = |pattern: &Pattern| format!("{:?}", pattern.render(&self.bindings));
        let first = expected.first().map_or("no reply".into(), shown);
        let mut reader = ResponseReader::open(&self.pipe_dir)
            .map_err(|e| format!("expected {first}, got: {e}"))?;
        write_control(&self.pipe_dir, &bytes, deadline)
            .map_err(|e| format!("expected {first}, got: {e}"))?;
        for (index, pattern) in expected.iter().enumerate() {
            let which = if expected.len() > 1 {
                format!(" as reply {} of {}", index + 1, expected.len())
            } else {
                String::new()
            };
            match reader.next_line(deadline, None) {
                Ok(NextLine::Line(line)) if pattern.matches(&line, &self.bindings) => {}
                Ok(NextLine::Line(line)) => {
                    return Err(format!(
                        "expected {}{which}, got {line:?}{}",
                        shown(pattern),
                        self.unbound_note(pattern)
                    ))
                }
                Ok(NextLine::TimedOut | NextLine::Woken) => {
                    return Err(format!(
                        "expected {}{which}, got no reply within {} ms",
                        shown(pattern),
                        exchange.within.as_millis()
                    ))
                }
                Err(e) => return Err(format!("expected {}{which}, got: {e}", shown(pattern))),
            }
        }
        if !exchange.silent.is_zero() {
            let quiet_until = self.until(exchange.silent);
            let nothing_more = if expected.is_empty() {
                "no reply"
            } else {
                "no further reply"
            };
            match reader.next_line(quiet_until, None) {
                Ok(NextLine::Line(extra)) => {
                    return Err(format!(
                        "expected {nothing_more} within {} ms, got {extra:?}",
                        exchange.silent.as_millis()
                    ))
                }
                Err(ExchangeError::Truncated(partial)) => {
                    return Err(format!(
                        "expected {nothing_more} within {} ms, got the partial line {partial:?}",
                        exchange.silent.as_millis()
                    ))
                }
                Ok(NextLine::TimedOut | NextLine::Woken) | Err(_) => {}
            }
        }
        Ok(())
    }

    /// The bytes a send step puts on `control`, in the suite's dialect.
    fn render_send(&mut self, send: &Send) -> Result<Vec<u8>, String> {
        let dialect = self.opts.dialect;
        match send {
            Send::Line(line) => {
                let text = self.render_pattern(line)?;
                let mut bytes = dialect::command_line(&text, dialect).into_bytes();
                bytes.push(b'\n');
                Ok(bytes)
            }
            Send::Bytes(parts) => {
                let mut bytes = Vec::new();
                for part in parts {
                    match part {
                        SendPart::Text(text) => {
                            bytes.extend_from_slice(self.render_pattern(text)?.as_bytes())
                        }
                        SendPart::Bytes(raw) => bytes.extend_from_slice(raw),
                    }
                }
                Ok(dialect::command_bytes(&bytes, dialect))
            }
        }
    }

    fn render_pattern(&mut self, pattern: &Pattern) -> Result<String, String> {
        for var in pattern.vars() {
            self.bind(var)?;
            if self.bindings.get(var).is_none() {
                return Err(format!(
                    "cannot send {:?}: {}",
                    pattern.to_string(),
                    self.unbound_note(pattern)
                        .trim_start_matches(" (")
                        .trim_end_matches(')')
                ));
            }
        }
        Ok(pattern.render(&self.bindings))
    }

    /// Gives `var` a value if it has none yet. The target may stay unknown (a controller
    /// that started none); the helpers are the suite's own.
    fn bind(&mut self, var: Var) -> Result<(), String> {
        if self.bindings.get(var).is_some() {
            return Ok(());
        }
        match var {
            Var::TargetPid => self.bindings.target_pid = self.find_target(),
            Var::LivePid => {
                // Any long-lived process of the suite's user will do; it is killed by the
                // sweep when the case ends.
                let helper = Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("starting the {{live_pid}} helper (sleep): {e}"))?;
                self.bindings.live_pid = Some(helper.id());
                self.helpers.push(helper);
            }
            Var::DeadPid => {
                // A pid that was just a process and has been reaped: no process now.
                let mut gone = Command::new("true")
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("starting the {{dead_pid}} helper (true): {e}"))?;
                gone.wait()
                    .map_err(|e| format!("waiting for the {{dead_pid}} helper: {e}"))?;
                self.bindings.dead_pid = Some(gone.id());
            }
        }
        Ok(())
    }

    fn unbound_note(&self, pattern: &Pattern) -> String {
        if pattern.vars().any(|var| self.bindings.get(var).is_none()) {
            format!(
                " (the suite found no process running {} among the controller's, so {{target_pid}} is unknown)",
                self.case.target.display()
            )
        } else {
            String::new()
        }
    }

    /// The process running the case's target script among the controller's descendants.
    fn find_target(&self) -> Option<u32> {
        let controller = self.controller.as_ref()?;
        let helpers: Vec<u32> = self.helpers.iter().map(Child::id).collect();
        let mut candidates = descendants_of(controller.child.id());
        // After the controller's death its children are re-parented to the suite.
        candidates.extend(descendants_of(std::process::id()));
        candidates
            .into_iter()
            .filter(|pid| !helpers.contains(pid) && *pid != controller.child.id())
            .find(|&pid| runs_script(pid, &self.case.target))
    }

    fn signal_target(&mut self, signal: Signal) -> Result<(), String> {
        let dialect = self.opts.dialect;
        let line = dialect::command_line("GET_TARGET_PID", dialect);
        let deadline = self.until(Duration::from_secs(5));
        let reply = (|| -> Result<String, ExchangeError> {
            let mut reader = ResponseReader::open(&self.pipe_dir)?;
            write_control(&self.pipe_dir, format!("{line}\n").as_bytes(), deadline)?;
            match reader.next_line(deadline, None)? {
                NextLine::Line(reply) => Ok(reply),
                NextLine::TimedOut | NextLine::Woken => Err(ExchangeError::Timeout {
                    waited: Duration::from_secs(5),
                    line: line.clone(),
                }),
            }
        })()
        .map_err(|e| format!("expected TARGET_PID <pid> to {line:?}, got: {e}"))?;
        let pid = match parse_reply(&reply) {
            Ok(Reply::TargetPid(pid)) => pid,
            _ => {
                return Err(format!(
                    "expected TARGET_PID <pid> to {line:?}, got {reply:?}"
                ))
            }
        };
        // Never signal a pid just because a controller named it: it must be the process
        // the suite saw running the target.
        let target = self.find_target();
        if target != Some(pid) {
            return Err(format!(
                "expected TARGET_PID to name the process running {} ({}), got {reply:?}; not signalling it",
                self.case.target.display(),
                target.map_or("not found".into(), |pid| format!("pid {pid}"))
            ));
        }
        self.bindings.target_pid = Some(pid);
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| format!("sending {signal} to the target {pid}: {e}"))
    }

    fn expect_output(&self, text: &str, within: Duration) -> Result<(), String> {
        let path = self.work_dir.path.join(CONTROLLER_STDOUT);
        let holds_text = || {
            fs::read(&path).is_ok_and(|output| {
                output
                    .windows(text.len())
                    .any(|window| window == text.as_bytes())
            })
        };
        let until = self.until(within);
        wait_for_dir(&self.work_dir.path, Watch::Output, until, None, None, holds_text).map_err(
            |_| {
                format!(
                    "expected {text:?} on the controller's stdout (from its target) within {} ms, got {:?}",
                    within.as_millis(),
                    String::from_utf8_lossy(&fs::read(&path).unwrap_or_default())
                )
            },
        )
    }

    fn expect_exit(&mut self, within: Duration, code: Option<i32>) -> Result<(), String> {
        let deadline = self.until(within);
        let controller = self.controller.as_ref().ok_or("no controller")?;
        if !wait_readable(controller.exit_fd.as_fd(), deadline) {
            return Err(format!(
                "expected the controller to exit within {} ms, got it still running",
                within.as_millis()
            ));
        }
        let controller = self.controller.as_mut().ok_or("no controller")?;
        let status = match controller.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return Err("the controller's pidfd said it exited but it did not".into()),
            Err(e) => return Err(format!("waiting for the controller: {e}")),
        };
        match code {
            Some(code) if status.code() != Some(code) => Err(format!(
                "expected the controller to exit with code {code}, got {}",
                describe_status(status)
            )),
            _ => Ok(()),
        }
    }

    fn expect_pipes_removed(&self, within: Duration) -> Result<(), String> {
        let dir = &self.pipe_dir;
        let gone = || !dir.join(CONTROL).exists() && !dir.join(RESPONSE).exists();
        match wait_for_dir(
            dir,
            Watch::PipesRemoved,
            self.until(within),
            None,
            None,
            gone,
        ) {
            Ok(()) => Ok(()),
            Err(_) => {
                let left: Vec<&str> = [CONTROL, RESPONSE]
                    .into_iter()
                    .filter(|name| dir.join(name).exists())
                    .collect();
                Err(format!(
                    "expected the pipes to be removed within {} ms, got {} still in {}",
                    within.as_millis(),
                    left.join(" and "),
                    dir.display()
                ))
            }
        }
    }

    fn expect_target_stopped(&self, within: Duration) -> Result<(), String> {
        let Some(pid) = self.bindings.target_pid else {
            return Err(format!(
                "expected the target to stop, but the suite never saw a process running {}",
                self.case.target.display()
            ));
        };
        let fd = match pidfd_open(pid as i32) {
            Ok(fd) => fd,
            // Gone and reaped already.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
            Err(e) => return Err(format!("pidfd_open on the target {pid}: {e}")),
        };
        if wait_readable(fd.as_fd(), self.until(within)) {
            Ok(())
        } else {
            Err(format!(
                "expected the target {pid} to stop within {} ms, got it still running",
                within.as_millis()
            ))
        }
    }

    /// `clients` threads, each with its own response reader opened first, send together.
    /// Which client reads which reply is up to the kernel (all readers share one pipe),
    /// so the replies are pooled: every request must have got exactly one matching line.
    fn concurrently(&mut self, concurrently: &Concurrently) -> Result<(), String> {
        let dialect = self.opts.dialect;
        let expected = dialect::reply_pattern(&concurrently.expect, dialect);
        for var in expected.vars() {
            self.bind(var)?;
        }
        let line = self.render_send(&Send::Line(concurrently.send.clone()))?;
        let clients = concurrently.clients as usize;
        for round in 1..=concurrently.rounds {
            let deadline = self.until(concurrently.within);
            let replies = Mutex::new(Vec::new());
            let errors = Mutex::new(Vec::new());
            // Readable once the pool is complete (or a client failed): wakes the others.
            let (wake_read, wake_write) =
                nix::unistd::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
            let wake_others = || {
                let _ = nix::unistd::write(&wake_write, b"x");
            };
            let start_together = Barrier::new(clients);
            let dir = &self.pipe_dir;
            std::thread::scope(|scope| {
                for _ in 0..clients {
                    scope.spawn(|| {
                        let fail = |e: ExchangeError| {
                            errors.lock().expect("no panics").push(e.to_string());
                            wake_others();
                        };
                        let reader = ResponseReader::open(dir);
                        start_together.wait();
                        let mut reader = match reader {
                            Ok(reader) => reader,
                            Err(e) => return fail(e),
                        };
                        if let Err(e) = write_control(dir, &line, deadline) {
                            return fail(e);
                        }
                        loop {
                            match reader.next_line(deadline, Some(wake_read.as_fd())) {
                                Ok(NextLine::Line(reply)) => {
                                    let mut replies = replies.lock().expect("no panics");
                                    replies.push(reply);
                                    if replies.len() >= clients {
                                        wake_others();
                                    }
                                }
                                Ok(NextLine::TimedOut | NextLine::Woken) => return,
                                Err(e) => return fail(e),
                            }
                        }
                    });
                }
            });
            let replies = replies.into_inner().expect("no panics");
            let errors = errors.into_inner().expect("no panics");
            let wanted = format!("{clients} replies {:?}", expected.render(&self.bindings));
            let in_round = format!("round {round} of {}", concurrently.rounds);
            if let Some(error) = errors.first() {
                return Err(format!("expected {wanted}, got: {error} ({in_round})"));
            }
            if let Some(wrong) = replies
                .iter()
                .find(|reply| !expected.matches(reply, &self.bindings))
            {
                return Err(format!(
                    "expected {wanted}, got {wrong:?}{} ({in_round})",
                    self.unbound_note(&expected)
                ));
            }
            if replies.len() != clients {
                return Err(format!(
                    "expected {wanted}, got {} within {} ms ({in_round})",
                    replies.len(),
                    concurrently.within.as_millis()
                ));
            }
        }
        Ok(())
    }

    fn controller_status(&mut self) -> Option<String> {
        let controller = self.controller.as_mut()?;
        match controller.child.try_wait() {
            Ok(Some(status)) => Some(describe_status(status)),
            _ => None,
        }
    }

    fn stderr_tail(&self, lines: usize) -> Vec<String> {
        let Some(controller) = &self.controller else {
            return Vec::new();
        };
        let text = fs::read(&controller.stderr_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|line| line.to_string())
            .collect()
    }

    fn last_stderr_note(&self) -> String {
        match self.stderr_tail(1).pop() {
            Some(line) => format!("; its last stderr line: {line:?}"),
            None => String::new(),
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("killed by {signal}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        (None, None) => format!("{status}"),
    }
}

/// Both FIFOs exist and some process reads `control`.
fn is_served(dir: &Path) -> bool {
    let is_fifo =
        |name| fs::symlink_metadata(dir.join(name)).is_ok_and(|meta| meta.file_type().is_fifo());
    is_fifo(CONTROL) && is_fifo(RESPONSE) && pipes::has_reader(&dir.join(CONTROL))
}

/// A private directory under `$TMPDIR`, removed when dropped: one per case (its fresh
/// pipe directory, the controller's output), and one for the unpacked built-in cases.
pub struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir, String> {
        let template = std::env::temp_dir().join("heli-conformance-XXXXXX");
        nix::unistd::mkdtemp(&template)
            .map(|path| WorkDir { path })
            .map_err(|e| format!("creating a directory like {}: {e}", template.display()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Threads that keep cores busy for a case, stopped and joined when dropped.
struct BusyThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyThreads {
    fn start(count: u32) -> BusyThreads {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// When dropped, kills every descendant of the suite and reaps its children. Cases run
/// one at a time and the suite is a subreaper, so these are exactly the case's processes.
struct ProcessSweep;

impl Drop for ProcessSweep {
    fn drop(&mut self) {
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        let me = std::process::id();
        loop {
            let all = descendants_of(me);
            if all.is_empty() || Instant::now() >= deadline {
                return;
            }
            for &pid in &all {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            // A killed child's own children (killed too) are re-parented to the suite
            // when it dies: the next round reaps them.
            for child in children_of(me) {
                if let Ok(fd) = pidfd_open(child as i32) {
                    wait_readable(fd.as_fd(), deadline);
                }
                let _ = waitpid(Pid::from_raw(child as i32), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Direct children of `pid`, from every thread's `/proc/<pid>/task/<tid>/children`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    children
}

fn descendants_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        for child in children_of(parent) {
            if !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Whether one of the process's arguments names `script` (absolute or relative to its cwd).
fn runs_script(pid: u32, script: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
    cmdline
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .any(|arg| {
            let arg = Path::new(std::ffi::OsStr::from_bytes(arg));
            if arg == script {
                return true;
            }
            let full = match (&cwd, arg.is_relative()) {
                (Some(cwd), true) => cwd.join(arg),
                _ => arg.to_path_buf(),
            };
            fs::canonicalize(full).is_ok_and(|full| full == script)
        })
}

/// A descriptor that becomes readable when process `pid` exits.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn poll_timeout(deadline: Instant) -> PollTimeout {
    let left = deadline.saturating_duration_since(Instant::now());
    PollTimeout::from(u16::try_from(left.as_millis()).unwrap_or(u16::MAX))
}

/// Waits until `fd` is readable; false if `deadline` passes first.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(deadline)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Watches `dir` or, while it does not exist, its deepest existing ancestor (for the
/// creation of the next path component). A component created between finding the deepest
/// one and watching it would never be reported, so the search repeats until the deepest
/// existing path is the same after its watch was added.
fn watch_deepest(inotify: &Inotify, dir: &Path, in_dir: AddWatchFlags, in_ancestor: AddWatchFlags) {
    let deepest = || dir.ancestors().find(|path| path.exists());
    let mut watched = None;
    while let Some(path) = deepest() {
        if watched == Some(path) {
            return;
        }
        let flags = if path == dir { in_dir } else { in_ancestor };
        if inotify.add_watch(path, flags).is_err() {
            return;
        }
        watched = Some(path);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum WaitEnd {
    TimedOut,
    /// `exit_fd` became readable first.
    ProcessExited,
}

/// Which changes in a directory can make a wait's condition true. Each excludes what the
/// check itself causes (reading a file is an IN_OPEN), or the wait would wake itself.
#[derive(Debug, Clone, Copy)]
enum Watch {
    /// FIFOs created, replaced, opened (a reader arriving).
    PipesServed,
    PipesRemoved,
    /// A file written to.
    Output,
}

impl Watch {
    fn flags(self) -> AddWatchFlags {
        let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
        match self {
            Watch::PipesServed => {
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_OPEN
                    | gone
            }
            Watch::PipesRemoved => AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | gone,
            Watch::Output => AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MODIFY | gone,
        }
    }
}

/// Waits until `ready()` holds for the directory `dir`, woken by inotify events on `dir`
/// (or, while it does not exist yet, on its nearest existing ancestor), by `exit_fd`, and
/// every `recheck` if given (see [`SERVED_RECHECK`]).
fn wait_for_dir(
    dir: &Path,
    watch: Watch,
    deadline: Instant,
    exit_fd: Option<BorrowedFd<'_>>,
    recheck: Option<Duration>,
    mut ready: impl FnMut() -> bool,
) -> Result<(), WaitEnd> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
    let in_ancestor = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM;
    // Without inotify (none left for this user) only the recheck interval is left.
    let recheck = if inotify.is_none() {
        Some(recheck.unwrap_or(SERVED_RECHECK))
    } else {
        recheck
    };
    loop {
        // Watches first, then the check: a change between the two still wakes the poll.
        if let Some(inotify) = &inotify {
            watch_deepest(inotify, dir, watch.flags(), in_ancestor);
        }
        if ready() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitEnd::TimedOut);
        }
        let wake_at = recheck.map_or(deadline, |every| (now + every).min(deadline));
        let mut fds = Vec::with_capacity(2);
        if let Some(inotify) = &inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        if let Some(exit_fd) = exit_fd {
            fds.push(PollFd::new(exit_fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, poll_timeout(wake_at)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Err(WaitEnd::TimedOut),
        }
        let exited = exit_fd.is_some()
            && fds
                .last()
                .and_then(|fd| fd.revents())
                .is_some_and(|events| !events.is_empty());
        if let Some(inotify) = &inotify {
            while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
        }
        if exited {
            return if ready() {
                Ok(())
            } else {
                Err(WaitEnd::ProcessExited)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_a_directory_wakes_on_creation() {
        let base = WorkDir::create().unwrap();
        // Many rounds: the creator races the setting up of the watches.
        for round in 0..50 {
            let dir = base.path.join(format!("{round}/a/b"));
            let path = dir.join("file");
            let creator = {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    fs::create_dir_all(&dir).unwrap();
                    fs::write(dir.join("file"), b"").unwrap();
                })
            };
            let started = Instant::now();
            let result = wait_for_dir(
                &dir,
                Watch::Output,
                started + Duration::from_secs(10),
                None,
                None,
                || path.exists(),
            );
            creator.join().unwrap();
            assert_eq!(result, Ok(()));
            assert!(started.elapsed() < Duration::from_secs(5), "round {round}");
        }
        let result = wait_for_dir(
            &base.path,
            Watch::PipesRemoved,
            Instant::now() + Duration::from_millis(50),
            None,
            None,
            || false,
        );
        assert_eq!(result, Err(WaitEnd::TimedOut));
    }

    #[test]
    fn finds_children_and_what_they_run() {
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id();
        assert!(descendants_of(std::process::id()).contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        // A child's arguments can lag behind `spawn` returning (the parent resumes in
        // the middle of the child's exec), so the arguments are checked on this process.
        let me = std::process::id();
        let program = std::env::args().next().unwrap();
        assert!(runs_script(me, Path::new(&program)));
        assert!(runs_script(me, &fs::canonicalize(&program).unwrap()));
        assert!(!runs_script(me, Path::new("/nonexistent/script.py")));
    }
}
