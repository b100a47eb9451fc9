//! One request/reply exchange with a controller, done so that no reply can be lost: the
//! response pipe is opened *before* the command is written, and one deadline covers the
//! opens, the write and the wait.
use super::pipes::{self, CONTROL, RESPONSE};
use crate::core::wire::{parse_reply, Reply};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
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
    let control_path = dir.join(CONTROL);
    let response_path = dir.join(RESPONSE);
    if !control_path.exists() || !response_path.exists() {
        return Err(ExchangeError::PipesMissing(dir.to_path_buf()));
    }
    let io_err = |what: &str| {
        let what = what.to_string();
        move |error| ExchangeError::Io { what, error }
    };
    let mut response =
        pipes::open_reader(&response_path).map_err(io_err("opening the response pipe"))?;
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
    // One write of less than PIPE_BUF bytes: atomic, never interleaved with another client.
    control
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io_err("writing the control pipe"))?;
    drop(control);
    if !expect_reply {
        return Ok(None);
    }
    let deadline = started + timeout;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Timeout {
                waited: started.elapsed(),
                line: line.to_string(),
            });
        }
        let mut fds = [PollFd::new(response.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_err("waiting on the response pipe")(e.into())),
        }
        let mut chunk = [0u8; 4096];
        match response.read(&mut chunk) {
            // EOF before any data: a writer that was already open when we opened (the
            // previous client's reply) has closed. Linux then reports POLLHUP for good,
            // so take a fresh reader, opened before the old one closes: the pipe never
            // lacks a reader and our reply cannot be dropped meanwhile.
            Ok(0) if buf.is_empty() => {
                response = pipes::open_reader(&response_path)
                    .map_err(io_err("reopening the response pipe"))?;
            }
            Ok(0) => {
                return Err(ExchangeError::Truncated(
                    String::from_utf8_lossy(&buf).into_owned(),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading the response pipe")(e)),
        }
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            return Ok(Some(String::from_utf8_lossy(&buf[..nl]).into_owned()));
        }
    }
}

/// Sends `line` and parses the reply (either dialect).
pub fn exchange(dir: &Path, line: &str, timeout: Duration) -> Result<Reply, ExchangeError> {
    let raw = exchange_raw(dir, line, timeout, true)?.unwrap_or_default();
    parse_reply(&raw).map_err(|_| ExchangeError::BadReply(raw))
}
