//! One request over the control socket (see [`super::socket_server`]): connect, write one
//! line, read one line, with one deadline over all three. The reply read is the reply to
//! this request: the connection is private to it, whatever other clients do.
//!
//! A directory without the socket is reported as [`SocketExchangeError::NoSocket`], apart
//! from every other failure, so that a caller can fall back to the FIFOs (a controller
//! older than the socket).
use super::exchange::{exchange_raw, ExchangeError, TrustedPipeDir};
use super::socket_server::{socket_address, SOCKET};
use crate::core::wire::{parse_reply, Command, Dialect, Reply};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest reply line read; real replies are one short line (an `ERROR:` message stays
/// well under it). A peer that sends more is not a controller.
const MAX_REPLY: usize = 64 * 1024;

#[derive(Debug)]
pub enum SocketExchangeError {
    /// `DIR/control.sock` does not exist: no controller, or one that serves only the
    /// FIFOs. The caller may try the FIFOs.
    NoSocket(PathBuf),
    /// Anything else; the variants and texts of the FIFO exchange.
    Failed(ExchangeError),
}

impl fmt::Display for SocketExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketExchangeError::NoSocket(dir) => write!(
                f,
                "no control socket in {} (no controller, or one that serves only the FIFOs)",
                dir.display()
            ),
            SocketExchangeError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SocketExchangeError {}

impl From<ExchangeError> for SocketExchangeError {
    fn from(e: ExchangeError) -> Self {
        SocketExchangeError::Failed(e)
    }
}

fn io_err(what: &str, error: io::Error) -> SocketExchangeError {
    SocketExchangeError::Failed(ExchangeError::Io {
        what: what.to_string(),
        error,
    })
}

/// One exchange the way `heli-client` does it: the pipe directory is checked first (as
/// for the FIFOs), then the socket is preferred, as its reply can reach only this client;
/// the FIFOs serve a controller without one (a 0.x or an older build).
pub fn exchange_preferring_socket(
    dir: &Path,
    line: &str,
    timeout: Duration,
    expect_reply: bool,
) -> Result<Option<String>, ExchangeError> {
    let started = Instant::now();
    TrustedPipeDir::open(dir, nix::unistd::getuid().as_raw())?;
    match exchange_socket_raw(dir, line, timeout) {
        Ok(reply) => Ok(Some(reply)),
        Err(SocketExchangeError::NoSocket(_)) => {
            let left = timeout.saturating_sub(started.elapsed());
            exchange_raw(dir, line, left, expect_reply)
        }
        Err(SocketExchangeError::Failed(e)) => Err(e),
    }
}

/// Sends `command` (in the seed's words: the controller takes commands in any case) and
/// parses the reply (either dialect).
pub fn exchange_socket(
    dir: &Path,
    command: Command,
    timeout: Duration,
) -> Result<Reply, SocketExchangeError> {
    let raw = exchange_socket_raw(dir, &command.to_line(Dialect::Seed), timeout)?;
    parse_reply(&raw).map_err(|_| ExchangeError::BadReply(raw).into())
}

/// How a waiting request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The final reply line.
    Reply(String),
    /// The caller gave up: the connection was closed before the final reply (the
    /// controller hears it and takes back what it had started).
    Cancelled,
    /// No control socket: a controller that serves only the FIFOs.
    NoSocket,
}

/// A request whose reply may take as long as the caller wants (`GRANT_ACCESS ... WAIT`):
/// the connection is opened within `connect_timeout`, then every `WAITING` line goes to
/// `on_progress` until the final line comes, `cancel` is set (checked every 100 ms), or
/// `timeout` (if any) has passed since the request was sent: then the connection is
/// closed and the wait reported as a timeout.
pub fn exchange_waiting(
    dir: &Path,
    line: &str,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    cancel: &std::sync::atomic::AtomicBool,
    mut on_progress: impl FnMut(String),
) -> Result<WaitOutcome, ExchangeError> {
    use std::sync::atomic::Ordering;
    TrustedPipeDir::open(dir, nix::unistd::getuid().as_raw())?;
    let mut stream = match send_line(dir, line, Instant::now() + connect_timeout) {
        Ok(stream) => stream,
        Err(SocketExchangeError::NoSocket(_)) => return Ok(WaitOutcome::NoSocket),
        Err(SocketExchangeError::Failed(e)) => return Err(e),
    };
    let sent = Instant::now();
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    let step = Duration::from_millis(100);
    loop {
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&pending[..nl]).into_owned();
            pending.drain(..=nl);
            match parse_reply(&text) {
                Ok(Reply::Waiting(progress)) => on_progress(progress),
                Ok(_) | Err(_) => return Ok(WaitOutcome::Reply(text)),
            }
        }
        if pending.len() > MAX_REPLY {
            return Err(ExchangeError::BadReply(format!(
                "{} bytes without a newline",
                pending.len()
            )));
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(WaitOutcome::Cancelled);
        }
        if timeout.is_some_and(|t| sent.elapsed() >= t) {
            return Err(ExchangeError::Timeout {
                waited: sent.elapsed(),
                line: line.to_string(),
            });
        }
        stream
            .set_read_timeout(Some(step))
            .map_err(|e| ExchangeError::Io {
                what: "the control socket".into(),
                error: e,
            })?;
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(if pending.is_empty() {
                    ExchangeError::Io {
                        what: "reading the reply".into(),
                        error: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the controller closed the connection without replying",
                        ),
                    }
                } else {
                    ExchangeError::Truncated(String::from_utf8_lossy(&pending).into_owned())
                })
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return Err(ExchangeError::Io {
                    what: "reading the reply".into(),
                    error: e,
                })
            }
        }
    }
}

/// Connects (checking that the listener runs as our uid) and writes `line`, all before
/// `deadline`.
fn send_line(dir: &Path, line: &str, deadline: Instant) -> Result<UnixStream, SocketExchangeError> {
    let started = Instant::now();
    let timed_out = || {
        SocketExchangeError::Failed(ExchangeError::Timeout {
            waited: started.elapsed(),
            line: line.to_string(),
        })
    };
    let mut stream = connect_by(dir, deadline)?.ok_or_else(timed_out)?;
    // The kernel says who listens: only a controller of our own uid is trusted (another
    // user's process behind a socket of that name would be answering our requests).
    let server = getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|e| io_err("reading the control socket's peer", e.into()))?;
    let me = nix::unistd::getuid().as_raw();
    if server.uid() != me {
        return Err(ExchangeError::Untrusted(format!(
            "{} is served by uid {} (pid {}), not by you (uid {me}); refusing to talk to it",
            dir.join(SOCKET).display(),
            server.uid(),
            server.pid()
        ))
        .into());
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    stream
        .set_write_timeout(Some(left))
        .map_err(|e| io_err("the control socket", e))?;
    match stream.write_all(format!("{line}\n").as_bytes()) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(timed_out())
        }
        Err(e) => return Err(io_err("writing to the control socket", e)),
    }
    Ok(stream)
}

/// Sends `line` (without newline) and returns the reply line (without newline).
pub fn exchange_socket_raw(
    dir: &Path,
    line: &str,
    timeout: Duration,
) -> Result<String, SocketExchangeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let timed_out = || {
        SocketExchangeError::Failed(ExchangeError::Timeout {
            waited: started.elapsed(),
            line: line.to_string(),
        })
    };
    let mut stream = send_line(dir, line, deadline)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(nl) = reply.iter().position(|&b| b == b'\n') {
            reply.truncate(nl);
            return Ok(String::from_utf8_lossy(&reply).into_owned());
        }
        if reply.len() > MAX_REPLY {
            return Err(ExchangeError::BadReply(format!(
                "{}… ({} bytes without a newline)",
                String::from_utf8_lossy(&reply[..80]),
                reply.len()
            ))
            .into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io_err("the control socket", e))?;
        match stream.read(&mut buf) {
            Ok(0) if reply.is_empty() => {
                return Err(io_err(
                    "reading the reply",
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the controller closed the connection without replying",
                    ),
                ))
            }
            Ok(0) => {
                return Err(
                    ExchangeError::Truncated(String::from_utf8_lossy(&reply).into_owned()).into(),
                )
            }
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The read timeout: the loop checks the deadline.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io_err("reading the reply", e)),
        }
    }
}

/// Connects before `deadline`; `Ok(None)` when the deadline came first. A blocking
/// connect waits while the listener's backlog is full (a controller that is stopped, or
/// busy); SO_SNDTIMEO bounds that wait, which a plain `UnixStream::connect` cannot.
fn connect_by(dir: &Path, deadline: Instant) -> Result<Option<UnixStream>, SocketExchangeError> {
    let path = dir.join(SOCKET);
    let (_dir, address) = match socket_address(&path) {
        Ok(address) => address,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SocketExchangeError::NoSocket(dir.to_path_buf()))
        }
        Err(e) => return Err(io_err("opening the pipe directory", e)),
    };
    let address = UnixAddr::new(&address).map_err(|e| io_err("the socket's path", e.into()))?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_err("creating a socket", e.into()))?;
        // At least 1 µs: a zero SO_SNDTIMEO would mean "wait forever".
        let micros = left.as_micros().clamp(1, i64::MAX as u128) as i64;
        setsockopt(
            &fd,
            sockopt::SendTimeout,
            &TimeVal::new(micros / 1_000_000, micros % 1_000_000),
        )
        .map_err(|e| io_err("the control socket", e.into()))?;
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => return Ok(Some(UnixStream::from(fd))),
            // A signal interrupted the wait; the socket is still unconnected: again.
            Err(Errno::EINTR) => continue,
            // SO_SNDTIMEO ran out with the backlog still full.
            Err(Errno::EAGAIN | Errno::EINPROGRESS) => return Ok(None),
            Err(Errno::ENOENT) => return Err(SocketExchangeError::NoSocket(dir.to_path_buf())),
            // A socket file nobody listens on: a controller that was killed.
            Err(Errno::ECONNREFUSED) => {
                return Err(ExchangeError::NotServed(dir.to_path_buf()).into())
            }
            Err(e) => return Err(io_err("connecting to the control socket", e.into())),
        }
    }
}
