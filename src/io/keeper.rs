//! The keeper: a small process between the controller and the target that makes sure
//! nothing of the supervised tree outlives the controller, however the controller ends.
//!
//! ```text
//!   heli-controller (child subreaper)
//!     └── keeper (forked, not exec'd; child subreaper)
//!           └── target (python3.14 script.py; PR_SET_PDEATHSIG = SIGKILL)
//!                 └── its children, grandchildren, forkserver, pool workers …
//! ```
//!
//! Why a process in the middle:
//! - A SIGKILLed controller runs no code, so something else must stop the tree. The
//!   keeper holds the read end of a pipe whose only write end is the controller's; the
//!   kernel closes it when the controller dies in any way, and the keeper sees EOF.
//! - To find the tree after its parents died, the keeper must be its ancestor: as a child
//!   subreaper (PR_SET_CHILD_SUBREAPER) it inherits every orphan of the tree, so "every
//!   process whose parent chain reaches the keeper" is the whole tree, whatever forked,
//!   exited or double-forked inside it. Process groups and sessions would not do: any
//!   process may leave them (setsid, setpgid), and a target in its own group loses the
//!   terminal's foreground. PR_SET_PDEATHSIG only reaches one generation.
//! - Yama ptrace_scope=1 lets only ancestors write into the target; the controller, now
//!   its grandparent, still is one while the keeper lives (the chain is intact), and the
//!   keeper outlives the target by construction: if the keeper is killed, the target gets
//!   SIGKILL (PR_SET_PDEATHSIG) and the controller learns it.
//! - The keeper reaps the target itself and reports its status on a second pipe, so the
//!   target's status passes through unchanged. All signals for the target go through the
//!   keeper, which alone knows whether the target's pid is still the target (it has not
//!   reaped it): no signal can reach a process that reused the pid.
//! - Orphans reparented to the keeper are reaped as they exit (SIGCHLD via a signalfd),
//!   so no zombies accumulate during a long session.
//!
//! The keeper is forked while the controller has a single thread, so it may run ordinary
//! Rust code (allocation, `Command`) after the fork. It never execs.
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// What the keeper tells the controller, one line each (see [`KeeperEvents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperEvent {
    /// The target exited normally with this status.
    Exited(i32),
    /// The target was killed by this signal.
    Signaled(i32),
    /// The keeper's pipe closed without a status: the keeper was killed, and with it the
    /// target (PR_SET_PDEATHSIG).
    KeeperGone,
}

/// The controller's end: commands to the keeper, and the keeper's pid.
#[derive(Debug)]
pub struct Keeper {
    pid: Pid,
    target_pid: u32,
    /// The only write end of the keeper's command pipe. Closing it (on purpose or because
    /// the controller died) makes the keeper kill what remains of the tree and exit.
    commands: Option<File>,
}

/// The controller's reading end of the keeper's event pipe.
pub struct KeeperEvents(BufReader<File>, Pid);

impl KeeperEvents {
    /// Blocks until the next event. Every call after the target's exit is reported gives
    /// `KeeperGone`.
    pub fn wait_event(&mut self) -> KeeperEvent {
        let mut line = String::new();
        loop {
            line.clear();
            match self.0.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    // EOF comes while the keeper is still exiting: its other descriptors
                    // (the command pipe) may still be open and the target not yet
                    // reparented. Reaping it first makes both certain, so the controller's
                    // next command fails and it stops the orphans itself.
                    while let Err(Errno::EINTR) = waitpid(self.1, None) {}
                    return KeeperEvent::KeeperGone;
                }
                Ok(_) => {}
            }
            let mut words = line.split_whitespace();
            let (kind, value) = (words.next(), words.next().and_then(|v| v.parse().ok()));
            match (kind, value) {
                (Some("exited"), Some(code)) => return KeeperEvent::Exited(code),
                (Some("signaled"), Some(sig)) => return KeeperEvent::Signaled(sig),
                _ => continue,
            }
        }
    }
}

const OP_TARGET: u8 = b'T';
const OP_TREE: u8 = b'A';

/// How long the keeper's final sweep may take (processes stuck in uninterruptible sleep
/// ignore SIGKILL): the alarm's default action then ends the keeper, so it can never hang
/// the controller, which waits for it.
const SWEEP_SECONDS: u32 = 5;

impl Keeper {
    /// Forks the keeper, which starts the target with `env` added to the controller's
    /// environment. Returns once the target runs (or its start failed: the exec error is
    /// returned).
    pub fn start(
        python: &Path,
        script: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<(Keeper, KeeperEvents)> {
        let threads = std::fs::read_to_string("/proc/self/status")?
            .lines()
            .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().to_string()));
        if threads.as_deref() != Some("1") {
            return Err(io::Error::other(format!(
                "the keeper must be forked while the controller has one thread (it has {})",
                threads.unwrap_or_else(|| "?".into())
            )));
        }
        let (cmd_r, cmd_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (ev_r, ev_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the controller has one thread (checked above), so the child may run
        // ordinary code.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(cmd_w);
                drop(ev_r);
                // The keeper holds nothing of the controller's: its copy of the pipe
                // directory's lock would keep the directory "in use" after a SIGKILLed
                // controller until the keeper has swept the tree, and the next controller
                // would be refused.
                close_all_but(&[cmd_r.as_raw_fd(), ev_w.as_raw_fd()]);
                let code = keeper_main(cmd_r, ev_w, python, script, args, env);
                // SAFETY: leave without running the controller's atexit/destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(cmd_r);
                drop(ev_w);
                let mut events = BufReader::new(File::from(ev_r));
                // First line: "started PID" or "failed ERRNO".
                let mut line = String::new();
                events.read_line(&mut line)?;
                let mut words = line.split_whitespace();
                let (kind, value) = (
                    words.next(),
                    words.next().and_then(|v| v.parse::<i32>().ok()),
                );
                let started = match (kind, value) {
                    (Some("started"), Some(pid)) if pid > 0 => Ok(pid as u32),
                    (Some("failed"), Some(errno)) => Err(io::Error::from_raw_os_error(errno)),
                    _ => Err(io::Error::other(
                        "the keeper process ended before starting the target",
                    )),
                };
                match started {
                    Ok(target_pid) => Ok((
                        Keeper {
                            pid: child,
                            target_pid,
                            commands: Some(File::from(cmd_w)),
                        },
                        KeeperEvents(events, child),
                    )),
                    Err(e) => {
                        let _ = waitpid(child, None);
                        Err(e)
                    }
                }
            }
        }
    }

    pub fn target_pid(&self) -> u32 {
        self.target_pid
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends `signal` to the target alone, unless it has already exited.
    pub fn signal_target(&mut self, signal: i32) {
        self.command(OP_TARGET, signal);
    }

    /// Sends `signal` to every process of the tree below the keeper.
    pub fn signal_tree(&mut self, signal: i32) {
        self.command(OP_TREE, signal);
    }

    fn command(&mut self, op: u8, signal: i32) {
        let sent = self
            .commands
            .as_mut()
            .map(|w| w.write_all(&[op, signal as u8]));
        if !matches!(sent, Some(Ok(()))) {
            // The keeper is gone (killed from outside); the target dies with it
            // (PR_SET_PDEATHSIG) and its orphans come to the controller, the next
            // subreaper up. A SIGKILL is the end of the session: sweep what is below the
            // controller until nothing is left, as the keeper would have. Anything else
            // is sent once.
            let me = std::process::id();
            let found = descendants(me);
            let _ = writeln!(
                io::stderr(),
                "heli-controller: the keeper is gone: sending signal {signal} to the {} processes below the controller",
                found.len()
            );
            match Signal::try_from(signal) {
                Ok(Signal::SIGKILL) => {
                    sweep_below(me, std::time::Duration::from_secs(SWEEP_SECONDS.into()))
                }
                Ok(signal) => {
                    for pid in found {
                        let _ = kill(pid, signal);
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Closes the command pipe, so the keeper kills whatever remains of the tree, and
    /// waits for it (bounded by its own alarm). Then reaps anything else that came to the
    /// controller as an orphan.
    pub fn finish(&mut self) {
        if self.commands.take().is_some() {
            while let Err(Errno::EINTR) = waitpid(self.pid, None) {}
        }
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Every live (not zombie) process whose parent chain reaches `root`, read from /proc.
pub fn descendants(root: u32) -> Vec<Pid> {
    let mut parents = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let Some((_, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = tail.split_whitespace();
        let (Some(state), Some(Ok(ppid))) = (fields.next(), fields.next().map(str::parse::<u32>))
        else {
            continue;
        };
        parents.insert(pid, (ppid, state == "Z"));
    }
    let mut found = Vec::new();
    for (&pid, &(_, zombie)) in &parents {
        if zombie {
            continue;
        }
        let mut at = pid;
        // Bounded: a chain cannot be longer than the number of processes seen.
        for _ in 0..parents.len() {
            match parents.get(&at) {
                Some(&(parent, _)) if parent == root => {
                    found.push(Pid::from_raw(pid as i32));
                    break;
                }
                Some(&(parent, _)) if parent > 1 => at = parent,
                _ => break,
            }
        }
    }
    found
}

/// The keeper's whole life; returns its exit code.
fn keeper_main(
    commands: OwnedFd,
    events: OwnedFd,
    python: &Path,
    script: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> i32 {
    let mut events = File::from(events);
    let mut commands = File::from(commands);
    retitle(b"heli-keeper");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"heli-keeper".as_ptr(), 0, 0, 0) };
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SIGINT/SIGTERM/SIGHUP stay blocked (inherited from the controller): a Ctrl-C on the
    // terminal must not end the keeper; the controller decides how the tree stops.
    // SIGCHLD is read from a signalfd, so the loop below waits on one poll.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if chld.thread_block().is_err() {
        return 125;
    }
    let Ok(sfd) = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    else {
        let _ = writeln!(events, "failed {}", libc::EMFILE);
        return 125;
    };

    let keeper = std::process::id() as i32;
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        command.pre_exec(move || {
            // Undo the blocked signals: the target must see them.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // The keeper only dies before the target if someone SIGKILLs it: then the
            // target must not run on unsupervised.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != keeper {
                libc::_exit(125);
            }
            Ok(())
        });
    }
    let target = match command.spawn() {
        Ok(child) => Pid::from_raw(child.id() as i32),
        Err(e) => {
            let _ = writeln!(events, "failed {}", e.raw_os_error().unwrap_or(libc::EIO));
            return 125;
        }
    };
    if writeln!(events, "started {target}").is_err() {
        sweep();
        return 0;
    }

    let mut target_running = true;
    let mut buf = [0u8; 64];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(commands.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        // The command pipe is blocking: read it only when poll says it has data or EOF.
        let commands_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        // Children first: a target that exited is reaped (and reported) before a command
        // for it is looked at, so a signal never goes to a reaped pid.
        while let Ok(Some(_)) = sfd.read_signal() {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == target => {
                    target_running = false;
                    let _ = writeln!(events, "exited {code}");
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == target => {
                    target_running = false;
                    let _ = writeln!(events, "signaled {}", sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                // An orphan of the tree, reparented here: reaped so no zombie stays.
                Ok(_) => {}
            }
        }
        if !commands_ready {
            continue;
        }
        match commands.read(&mut buf) {
            // EOF: the controller closed the pipe or died. Nothing may outlive it.
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        while pending.len() >= 2 {
            let (op, signal) = (pending[0], pending[1] as i32);
            pending.drain(..2);
            let Ok(signal) = Signal::try_from(signal) else {
                continue;
            };
            match op {
                OP_TARGET if target_running => {
                    let _ = kill(target, signal);
                }
                OP_TREE => {
                    for pid in descendants(keeper as u32) {
                        let _ = kill(pid, signal);
                    }
                }
                _ => {}
            }
        }
    }
    drop(events);
    sweep();
    0
}

/// Replaces the keeper's command line (inherited from the controller, script path
/// included) with `name`, as setproctitle does: otherwise `pgrep -f script.py`, `ps` and
/// the conformance suite, which find the target by its command line, would take the keeper
/// for it. The argument area of /proc/self/stat (fields 48 and 49) is this process's own
/// writable memory; /proc/PID/cmdline is read from it.
fn retitle(name: &[u8]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((_, tail)) = stat.rsplit_once(')') else {
        return;
    };
    // Fields after the command name start at field 3; arg_start and arg_end are 48 and 49.
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(48 - 3).map(|f| f.parse::<usize>()),
        fields.get(49 - 3).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    if start == 0 || end <= start + name.len() {
        return;
    }
    // SAFETY: [start, end) is this process's argument area on its own stack, which the
    // kernel set up and nothing in the keeper reads (std copied the arguments at start).
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
        std::ptr::copy_nonoverlapping(name.as_ptr(), start as *mut u8, name.len());
    }
}

/// SIGKILLs every process below `root` and waits for each to exit (on a pidfd, no
/// polling), again until a walk finds nothing (a dying parent's children are reparented
/// only as it exits) or `within` has passed; reaps the children of this process on the way.
/// For the controller, which must not block on a process that ignores SIGKILL.
fn sweep_below(root: u32, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = descendants(root);
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        if found.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for &pid in &found {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pid in found {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
            if fd < 0 {
                continue; // already gone
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                .unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], timeout);
        }
    }
}

/// The final sweep: SIGKILL every process below the keeper, again after each death (a
/// process may have forked while the previous one was being killed, and orphans arrive
/// here), until the keeper has no child left. The alarm bounds it.
fn sweep() {
    // SAFETY: alarm only arms a timer; SIGALRM's default action ends the keeper.
    unsafe { libc::alarm(SWEEP_SECONDS) };
    let keeper = std::process::id();
    loop {
        for pid in descendants(keeper) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left
        }
    }
}

/// Closes every descriptor above stderr except `keep` (the keeper's own pipes).
fn close_all_but(keep: &[std::os::fd::RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing descriptors this process will not use again; the read_dir
        // handle above is already dropped.
        unsafe { libc::close(fd) };
    }
}
