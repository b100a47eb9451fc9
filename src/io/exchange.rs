//! One request/reply exchange with a controller, done so that no reply can be lost: the
//! response pipe is opened *before* the command is written, and one deadline covers the
//! opens, the write and the wait.
//!
//! [`exchange_raw`] first checks that the pipes are the caller's own ([`TrustedPipeDir`]):
//! whoever answers on them names the process whose interpreter the client runs.
use super::pipes::{self, CONTROL, RESPONSE};
use crate::core::client::trust::{judge_pipe_entry, EntryFacts, EntryKind};
use crate::core::wire::{parse_reply, Reply};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum ExchangeError {
    /// No FIFOs: no controller has run here (or it cleaned up).
    PipesMissing(PathBuf),
    /// The FIFOs exist but no process reads `control`.
    NotServed(PathBuf),
    /// The directory or a FIFO is not the caller's alone; the text says what and why.
    Untrusted(String),
    /// No complete reply before the deadline.
    Timeout {
        waited: Duration,
        line: String,
    },
    /// The controller closed the response pipe in the middle of a reply.
    Truncated(String),
    BadReply(String),
    Io {
        what: String,
        error: io::Error,
    },
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::PipesMissing(_) => f.write_str("Controller not running (pipes not found)"),
            ExchangeError::NotServed(dir) => write!(
                f,
                "Controller not responding: the pipes in {} exist but no controller reads them (left over from a controller that was killed?). Start the controller again; it replaces stale pipes",
                dir.display()
            ),
            ExchangeError::Untrusted(why) => f.write_str(why),
            ExchangeError::Timeout { waited, line } => write!(
                f,
                "Timeout waiting for response to {line} after {:.1} s (is the controller stuck or stopped?)",
                waited.as_secs_f64()
            ),
            ExchangeError::Truncated(partial) => {
                write!(f, "the controller closed the response pipe after a partial reply '{partial}'")
            }
            ExchangeError::BadReply(line) => write!(f, "unexpected reply from the controller: '{line}'"),
            ExchangeError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// Sends `line` and returns the raw reply line (without newline), or `Ok(None)` when
/// `expect_reply` is false (the legacy dialect's terminate).
pub fn exchange_raw(
    dir: &Path,
    line: &str,
    timeout: Duration,
    expect_reply: bool,
) -> Result<Option<String>, ExchangeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let pipes = TrustedPipeDir::open(dir, nix::unistd::getuid().as_raw())?;
    let mut response = pipes.response_reader()?;
    write_all_until(
        pipes.open_control_until(deadline)?,
        format!("{line}\n").as_bytes(),
        deadline,
    )?;
    if !expect_reply {
        return Ok(None);
    }
    match response.next_line(deadline, None)? {
        NextLine::Line(reply) => Ok(Some(reply)),
        NextLine::TimedOut | NextLine::Woken => Err(ExchangeError::Timeout {
            waited: started.elapsed(),
            line: line.to_string(),
        }),
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> ExchangeError {
    let what = what.to_string();
    move |error| ExchangeError::Io { what, error }
}

/// Writes `bytes` on `control` and closes it. The pipe is opened without blocking, so a
/// controller that is not reading is reported (`NotServed`) instead of hanging; a payload
/// larger than the pipe buffer is written in parts as the controller drains it, until
/// `deadline`.
pub fn write_control(dir: &Path, bytes: &[u8], deadline: Instant) -> Result<(), ExchangeError> {
    let control = control_opened(dir, pipes::open_writer(&dir.join(CONTROL)))?;
    write_all_until(control, bytes, deadline)
}

/// The outcome of opening `control` for writing, without blocking, as an exchange error.
fn control_opened(dir: &Path, opened: io::Result<File>) -> Result<File, ExchangeError> {
    match opened {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            Err(ExchangeError::NotServed(dir.to_path_buf()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ExchangeError::PipesMissing(dir.to_path_buf()))
        }
        Err(e) => Err(io_err("opening the control pipe")(e)),
    }
}

/// Writes `bytes` on an opened `control` and closes it.
fn write_all_until(
    mut control: File,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    // The first write carries everything: below PIPE_BUF bytes it is atomic, never
    // interleaved with another client's line.
    let mut rest = bytes;
    while !rest.is_empty() {
        match control.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io_err("writing the control pipe")(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{} bytes still unwritten: the controller stopped reading",
                            rest.len()
                        ),
                    )));
                }
                let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, poll_timeout(left)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(io_err("waiting on the control pipe")(e.into())),
                }
            }
            Err(e) => return Err(io_err("writing the control pipe")(e)),
        }
    }
    Ok(())
}

fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::from(u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX))
}

/// What [`ResponseReader::next_line`] saw before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextLine {
    /// One complete reply line, without its newline.
    Line(String),
    TimedOut,
    /// The `wake` descriptor became readable first.
    Woken,
}

/// The client's end of `response`, opened before the command is written so that the
/// controller always finds a reader for the reply. Reads any number of reply lines.
#[derive(Debug)]
pub struct ResponseReader {
    source: ResponseSource,
    file: File,
    /// Bytes read but not yet returned: the rest of a line, or lines after the first.
    pending: Vec<u8>,
}

/// Where a [`ResponseReader`] opens `response` again.
#[derive(Debug)]
enum ResponseSource {
    /// By path (the pipes were not checked).
    Path(PathBuf),
    /// In a checked directory, by its descriptor: a renamed or replaced directory
    /// cannot slip another pipe in.
    Trusted { dir: File, uid: u32, shown: PathBuf },
}

impl ResponseSource {
    fn open(&self) -> io::Result<File> {
        match self {
            ResponseSource::Path(path) => pipes::open_reader(path),
            ResponseSource::Trusted { dir, uid, shown } => {
                let file = open_at(dir, RESPONSE, libc::O_RDONLY)?;
                check_opened(&file, &shown.join(RESPONSE), EntryKind::Fifo, *uid)
                    .map_err(io::Error::other)?;
                Ok(file)
            }
        }
    }
}

impl ResponseReader {
    /// Opens `response` by path, without checking who owns the pipes (the conformance
    /// runner's use: it tests a controller it started itself).
    pub fn open(dir: &Path) -> Result<ResponseReader, ExchangeError> {
        let path = dir.join(RESPONSE);
        if !dir.join(CONTROL).exists() || !path.exists() {
            return Err(ExchangeError::PipesMissing(dir.to_path_buf()));
        }
        let source = ResponseSource::Path(path);
        let file = source.open().map_err(io_err("opening the response pipe"))?;
        Ok(ResponseReader {
            source,
            file,
            pending: Vec::new(),
        })
    }

    /// Waits for the next complete line until `deadline`, or until `wake` (if given)
    /// becomes readable.
    pub fn next_line(
        &mut self,
        deadline: Instant,
        wake: Option<BorrowedFd<'_>>,
    ) -> Result<NextLine, ExchangeError> {
        loop {
            if let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).take(nl).collect();
                return Ok(NextLine::Line(String::from_utf8_lossy(&line).into_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(NextLine::TimedOut);
            }
            let mut fds = vec![PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if let Some(wake) = wake {
                fds.push(PollFd::new(wake, PollFlags::POLLIN));
            }
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io_err("waiting on the response pipe")(e.into())),
            }
            let woken = fds
                .get(1)
                .and_then(|fd| fd.revents())
                .is_some_and(|events| !events.is_empty());
            let mut chunk = [0u8; 4096];
            match self.file.read(&mut chunk) {
                // EOF between lines: a writer that was already open when we opened (the
                // previous client's reply, or our previous reply) has closed. Linux then
                // reports POLLHUP for good, so take a fresh reader, opened before the old
                // one closes: the pipe never lacks a reader and no reply can be dropped.
                Ok(0) if self.pending.is_empty() => {
                    self.file = self
                        .source
                        .open()
                        .map_err(io_err("reopening the response pipe"))?;
                }
                Ok(0) => {
                    return Err(ExchangeError::Truncated(
                        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
                    ))
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("reading the response pipe")(e)),
            }
            if woken && !self.pending.contains(&b'\n') {
                return Ok(NextLine::Woken);
            }
        }
    }
}

/// Sends `line` and parses the reply (either dialect).
pub fn exchange(dir: &Path, line: &str, timeout: Duration) -> Result<Reply, ExchangeError> {
    let raw = exchange_raw(dir, line, timeout, true)?.unwrap_or_default();
    parse_reply(&raw).map_err(|_| ExchangeError::BadReply(raw))
}

/// A pipe directory checked to be the caller's alone, held open by descriptor so that the
/// FIFOs are opened in the very directory that was checked.
///
/// The directory is opened with `O_NOFOLLOW` and judged by `fstat` of that descriptor;
/// each FIFO is judged by `fstatat(.., AT_SYMLINK_NOFOLLOW)` before it is opened and by
/// `fstat` after. Nobody but the caller (and root) can change the entries of a directory
/// the caller owns with mode 0700, so what was checked is what is used.
#[derive(Debug)]
pub struct TrustedPipeDir {
    dir: File,
    path: PathBuf,
    uid: u32,
}

impl TrustedPipeDir {
    /// Checks `dir` and both FIFOs for `uid`: no symlinks, owned by `uid`, no access for
    /// group or others. A missing directory or FIFO is [`ExchangeError::PipesMissing`].
    pub fn open(dir: &Path, uid: u32) -> Result<TrustedPipeDir, ExchangeError> {
        // lstat first, only to name a symlink as such: opening it with O_NOFOLLOW fails
        // with a less telling ELOOP/ENOTDIR.
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ExchangeError::PipesMissing(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(&format!("examining {}", dir.display()))(e)),
            // A directory without either FIFO serves no exchange, whoever owns it: the
            // controller is simply not there.
            Ok(meta)
                if meta.is_dir()
                    && [CONTROL, RESPONSE].iter().all(|name| {
                        matches!(std::fs::symlink_metadata(dir.join(name)),
                            Err(e) if e.kind() == io::ErrorKind::NotFound)
                    }) =>
            {
                return Err(ExchangeError::PipesMissing(dir.to_path_buf()))
            }
            Ok(meta) => judge(dir, EntryKind::Directory, facts_of(&meta), uid)?,
        }
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)
            .map_err(io_err(&format!("opening {}", dir.display())))?;
        check_opened(&handle, dir, EntryKind::Directory, uid).map_err(ExchangeError::Untrusted)?;
        let pipes = TrustedPipeDir {
            dir: handle,
            path: dir.to_path_buf(),
            uid,
        };
        for name in [CONTROL, RESPONSE] {
            let facts = match stat_at(&pipes.dir, name) {
                Ok(facts) => facts,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ExchangeError::PipesMissing(dir.to_path_buf()))
                }
                Err(e) => {
                    return Err(io_err(&format!("examining {}", dir.join(name).display()))(
                        e,
                    ))
                }
            };
            judge(&dir.join(name), EntryKind::Fifo, facts, uid)?;
        }
        Ok(pipes)
    }

    /// A reader of `response` in this directory (open it before writing the command).
    pub fn response_reader(&self) -> Result<ResponseReader, ExchangeError> {
        let source = ResponseSource::Trusted {
            dir: self
                .dir
                .try_clone()
                .map_err(io_err("duplicating the pipe directory"))?,
            uid: self.uid,
            shown: self.path.clone(),
        };
        let file = match source.open() {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ExchangeError::PipesMissing(self.path.clone()))
            }
            Err(e) => return Err(io_err("opening the response pipe")(e)),
        };
        Ok(ResponseReader {
            source,
            file,
            pending: Vec::new(),
        })
    }

    /// `control` opened for writing, waiting until `deadline` for a reader. A 0.x
    /// controller closes and reopens `control` between clients, so a moment without a
    /// reader does not yet mean stale pipes. The wait is the FIFO's own rendezvous (a
    /// blocking open returns when a reader opens); at the deadline a reader of our own
    /// releases it, and the pipes are then called stale (`NotServed`).
    pub fn open_control_until(&self, deadline: Instant) -> Result<File, ExchangeError> {
        match self.open_control() {
            Err(ExchangeError::NotServed(_)) => {}
            other => return other,
        }
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let opened = std::thread::scope(|scope| {
            scope.spawn(|| {
                if done_rx.recv_deadline(deadline).is_err() {
                    let _ = open_at(&self.dir, CONTROL, libc::O_RDONLY);
                }
            });
            let opened = open_blocking_writer(&self.dir, CONTROL);
            let _ = done_tx.send(());
            opened
        });
        let control = control_opened(&self.path, opened)?;
        if Instant::now() >= deadline {
            return Err(ExchangeError::NotServed(self.path.clone()));
        }
        check_opened(
            &control,
            &self.path.join(CONTROL),
            EntryKind::Fifo,
            self.uid,
        )
        .map_err(ExchangeError::Untrusted)?;
        // Writes go on without blocking, bounded by the deadline (`write_all_until`).
        pipes::set_nonblocking(&control).map_err(io_err("the control pipe"))?;
        Ok(control)
    }

    /// `control` opened for writing without blocking (`NotServed` when nobody reads it).
    pub fn open_control(&self) -> Result<File, ExchangeError> {
        let control = control_opened(&self.path, open_at(&self.dir, CONTROL, libc::O_WRONLY))?;
        check_opened(
            &control,
            &self.path.join(CONTROL),
            EntryKind::Fifo,
            self.uid,
        )
        .map_err(ExchangeError::Untrusted)?;
        Ok(control)
    }
}

fn judge(path: &Path, kind: EntryKind, facts: EntryFacts, uid: u32) -> Result<(), ExchangeError> {
    judge_pipe_entry(path, kind, &facts, uid).map_err(ExchangeError::Untrusted)
}

/// Judges what an opened descriptor really is (the name may have changed since lstat).
fn check_opened(file: &File, path: &Path, kind: EntryKind, uid: u32) -> Result<(), String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("examining {}: {e}", path.display()))?;
    judge_pipe_entry(path, kind, &facts_of(&meta), uid)
}

pub(crate) fn facts_of(meta: &std::fs::Metadata) -> EntryFacts {
    EntryFacts {
        kind: kind_of(meta.mode()),
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    }
}

pub(crate) fn kind_of(mode: u32) -> EntryKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => EntryKind::Directory,
        libc::S_IFREG => EntryKind::File,
        libc::S_IFIFO => EntryKind::Fifo,
        libc::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
fn stat_at(dir: &File, name: &str) -> io::Result<EntryFacts> {
    let name = CString::new(name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: stat is plain data, fully written by a successful fstatat.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, valid out pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(EntryFacts {
        kind: kind_of(stat.st_mode),
        uid: stat.st_uid,
        mode: stat.st_mode & 0o7777,
    })
}

/// Opens `name` in `dir` without blocking and without following a symlink.
/// `name` opened for writing relative to `dir`, blocking until a reader opens it.
fn open_blocking_writer(dir: &File, name: &str) -> io::Result<File> {
    open_at_with(dir, name, libc::O_WRONLY)
}

fn open_at(dir: &File, name: &str, access: libc::c_int) -> io::Result<File> {
    open_at_with(dir, name, access | libc::O_NONBLOCK)
}

fn open_at_with(dir: &File, name: &str, flags: libc::c_int) -> io::Result<File> {
    let name = CString::new(Path::new(name).as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}
