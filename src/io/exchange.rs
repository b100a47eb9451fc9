//! One request/reply exchange with a controller, done so that no reply can be lost: the
//! response pipe is opened *before* the command is written, and one deadline covers the
//! opens, the write and the wait.
use super::pipes::{self, CONTROL, RESPONSE};
use crate::core::wire::{parse_reply, Reply};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub enum ExchangeError {
    /// No FIFOs: no controller has run here (or it cleaned up).
    PipesMissing(PathBuf),
    /// The FIFOs exist but no process reads `control`.
    NotServed(PathBuf),
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
    let mut response = ResponseReader::open(dir)?;
    write_control(dir, format!("{line}\n").as_bytes(), deadline)?;
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
    let control_path = dir.join(CONTROL);
    let mut control = match pipes::open_writer(&control_path) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(ExchangeError::NotServed(dir.to_path_buf()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ExchangeError::PipesMissing(dir.to_path_buf()))
        }
        Err(e) => return Err(io_err("opening the control pipe")(e)),
    };
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
    path: PathBuf,
    file: File,
    /// Bytes read but not yet returned: the rest of a line, or lines after the first.
    pending: Vec<u8>,
}

impl ResponseReader {
    pub fn open(dir: &Path) -> Result<ResponseReader, ExchangeError> {
        let path = dir.join(RESPONSE);
        if !dir.join(CONTROL).exists() || !path.exists() {
            return Err(ExchangeError::PipesMissing(dir.to_path_buf()));
        }
        let file = pipes::open_reader(&path).map_err(io_err("opening the response pipe"))?;
        Ok(ResponseReader {
            path,
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
                    self.file = pipes::open_reader(&self.path)
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
