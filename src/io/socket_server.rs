//! The control socket, `<pipe dir>/control.sock`, beside the FIFOs: one connection per
//! request, one request line and one reply line on it, in the words of the FIFOs.
//!
//! Why a socket beside the FIFOs: every FIFO client reads the one shared `response` pipe,
//! and replies carry no request id, so concurrent clients read each other's replies, a
//! client that holds `response` without reading shifts every later exchange, and a
//! controller stopped and continued answers new clients with stale replies. A connection
//! is private to its client: its reply cannot reach anyone else. And the kernel names the
//! peer (SO_PEERCRED), so the core knows who asks ([`Origin::Socket`]) and the journal
//! records the real requester.
//!
//! A waiting `GRANT_ACCESS ... WAIT` gets `WAITING` progress lines before its reply: those
//! are written as they come and the connection stays open; only the final line closes it.
//! A client that hangs up before its final reply is reported ([`Input::ConnectionClosed`]):
//! the core then takes back what it had started for it.
//!
//! One thread owns the listener and every connection, polling them all with a wake socket
//! for replies: lines go to the owner loop as [`Input::LineReceived`]; the owner loop's
//! replies come back through [`SocketServer::reply`]. Nothing is shared between threads
//! but channels.
use super::pipes::PipeHandle;
use crate::core::supervisor::{Input, Origin};
use crate::core::wire::{Dialect, LineFramer, Reply};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use nix::fcntl::AtFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{fchmodat, fstatat, FchmodatFlags, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The socket's name in the pipe directory.
pub const SOCKET: &str = "control.sock";

/// How long a connection may take to send its command line. Our client writes it right
/// after connecting; the bound only keeps a silent peer from holding a slot forever.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// How long a reply may wait for room in its connection. A reply is one short line and a
/// fresh connection's buffer holds far more, so this is a bound, not a wait that happens.
const REPLY_HOLD: Duration = Duration::from_secs(5);

/// Progress lines held for a client that does not read them; beyond it new ones are
/// dropped whole (they only say how the wait goes), never cut.
const MAX_PROGRESS_BACKLOG: usize = 64 * 1024;

/// Connections served at once. Beyond it the listener is not polled: further clients wait
/// in the kernel's backlog (within their own deadlines) instead of being turned away.
const MAX_CONNECTIONS: usize = 256;

/// How long the listener rests after an accept that failed for want of resources (EMFILE,
/// ENOBUFS): the connection stays in the backlog and the listener stays readable, so
/// polling it at once again would spin.
const ACCEPT_REST: Duration = Duration::from_millis(100);

/// Longest `sun_path` Linux accepts, its terminating NUL included.
const SUN_PATH_MAX: usize = 108;

fn log(message: &str) {
    let _ = writeln!(io::stderr(), "heli-controller: {message}");
}

/// An address `bind` and `connect` accept for the socket at `path`. A path too long for
/// `sun_path` is reached through the directory's descriptor (`/proc/self/fd/N/NAME`),
/// so a deep `--pipe-dir` keeps its socket; the returned directory handle must stay open
/// while the address is used.
pub fn socket_address(path: &Path) -> io::Result<(Option<File>, PathBuf)> {
    if path.as_os_str().len() < SUN_PATH_MAX {
        return Ok((None, path.to_path_buf()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a socket path", path.display()),
        ));
    };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((Some(dir), short))
}

/// The listener's handle, owned by the controller's owner loop.
pub struct SocketServer {
    /// The verified pipe directory: the socket is bound, checked and removed through it,
    /// never through the directory's path (which someone may have swapped since).
    dir: PipeHandle,
    path: PathBuf,
    replies: Option<Sender<(u64, String, bool)>>,
    wake: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketServer {
    /// Creates the socket in `dir` (mode 0600; a stale socket of a killed controller is
    /// replaced: the caller holds the directory's lock, so no live controller serves it)
    /// and starts serving it, sending every request line to `inputs`.
    pub fn start(
        dir: PipeHandle,
        dialect: Dialect,
        inputs: Sender<Input>,
    ) -> io::Result<SocketServer> {
        let path = dir.path().join(SOCKET);
        let listener = bind(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        let (replies, queue) = crossbeam_channel::unbounded::<(u64, String, bool)>();
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        listener.set_nonblocking(true)?;
        let server = Server {
            listener,
            woken,
            queue,
            inputs,
            dialect,
            conns: BTreeMap::new(),
            next_conn: 1,
            accept_rest_until: None,
        };
        let thread = std::thread::Builder::new()
            .name("socket".into())
            .spawn(move || server.run());
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                let _ = unlinkat(Some(dir.as_raw_fd()), SOCKET, UnlinkatFlags::NoRemoveDir);
                return Err(e);
            }
        };
        Ok(SocketServer {
            dir,
            path,
            replies: Some(replies),
            wake,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `line` (without newline) on connection `conn`; `last`: the connection's final
    /// line, after which it closes (a progress line keeps it open). Never blocks.
    pub fn reply(&self, conn: u64, line: String, last: bool) {
        match &self.replies {
            Some(replies) if replies.send((conn, line.clone(), last)).is_ok() => self.wake(),
            Some(_) | None => log(&format!(
                "reply '{line}' on connection {conn} not delivered: the socket is closed"
            )),
        }
    }

    fn wake(&self) {
        // A full wake buffer already holds a pending wake-up: nothing is lost.
        let _ = (&self.wake).write(&[1]);
    }

    /// Delivers the replies already sent, tells connections still waiting that the
    /// controller is shutting down, closes them and removes the socket. Idempotent.
    pub fn finish(&mut self) {
        self.replies = None;
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            let _ = unlinkat(
                Some(self.dir.as_raw_fd()),
                SOCKET,
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Binds `control.sock` in the verified directory. `bind` takes a path, so it gets one
/// that goes through the directory's descriptor (`/proc/self/fd/N/control.sock`): the
/// socket lands in the directory the controller checked, whatever its path means now.
fn bind(dir: &PipeHandle) -> io::Result<UnixListener> {
    let fd = dir.as_raw_fd();
    match fstatat(Some(fd), SOCKET, AtFlags::AT_SYMLINK_NOFOLLOW) {
        // A socket left by a killed controller: the caller holds the directory's lock,
        // so no live controller serves it.
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            unlinkat(Some(fd), SOCKET, UnlinkatFlags::NoRemoveDir)?
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; remove it or choose another --pipe-dir",
            ))
        }
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let address = PathBuf::from(format!("/proc/self/fd/{fd}")).join(SOCKET);
    let listener = UnixListener::bind(&address)?;
    // bind creates the socket with the process umask; it is tightened right after. The
    // directory is 0700 and ours, so nobody else can reach the socket in between.
    if let Err(e) = fchmodat(
        Some(fd),
        SOCKET,
        Mode::from_bits_truncate(0o600),
        FchmodatFlags::FollowSymlink,
    ) {
        let _ = unlinkat(Some(fd), SOCKET, UnlinkatFlags::NoRemoveDir);
        return Err(e.into());
    }
    Ok(listener)
}

/// One client's connection and how far its exchange is.
struct Conn {
    stream: UnixStream,
    pid: u32,
    uid: u32,
    stage: Stage,
    /// Progress lines not yet written (while `Waiting`).
    progress: Vec<u8>,
}

enum Stage {
    /// Reading the request line until `deadline`.
    Reading {
        framer: LineFramer,
        deadline: Instant,
    },
    /// The line is with the owner loop; the reply is awaited (the peer may hang up).
    Waiting,
    /// Writing the reply line; the connection closes when it is out.
    Writing {
        bytes: Vec<u8>,
        written: usize,
        deadline: Instant,
    },
}

/// What the socket thread owns: the listener, every connection, the reply queue.
struct Server {
    listener: UnixListener,
    woken: UnixStream,
    queue: Receiver<(u64, String, bool)>,
    inputs: Sender<Input>,
    dialect: Dialect,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// Set after a failed accept: the listener is not polled until then.
    accept_rest_until: Option<Instant>,
}

/// Why the thread stops.
enum Stop {
    /// [`SocketServer::finish`]: the controller is ending.
    Finished,
    /// The owner loop is gone: nobody would handle a line.
    OwnerGone,
}

impl Server {
    fn run(mut self) {
        let stop = loop {
            if let Err(stop) = self.step() {
                break stop;
            }
        };
        match stop {
            Stop::Finished => self.close_all("the controller is shutting down"),
            Stop::OwnerGone => self.close_all("the controller stopped handling requests"),
        }
    }

    /// One round: wait for any descriptor or the nearest deadline, then serve what is due.
    fn step(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        let nearest = self
            .conns
            .values()
            .filter_map(|c| match &c.stage {
                Stage::Reading { deadline, .. } | Stage::Writing { deadline, .. } => {
                    Some(*deadline)
                }
                Stage::Waiting => None,
            })
            .chain(self.accept_rest_until)
            .min();
        let timeout = match nearest {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        if self.accept_rest_until.is_some_and(|until| now >= until) {
            self.accept_rest_until = None;
        }
        let accepting = self.conns.len() < MAX_CONNECTIONS && self.accept_rest_until.is_none();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        let mut ready: Vec<(u64, PollFlags)> = Vec::new();
        let (woken, listener_ready) = {
            let mut fds = vec![PollFd::new(self.woken.as_fd(), PollFlags::POLLIN)];
            if accepting {
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            }
            for id in &ids {
                let conn = &self.conns[id];
                // Waiting polls for nothing: POLLHUP and POLLERR come anyway, and say
                // that the client gave up.
                let events = match conn.stage {
                    Stage::Reading { .. } => PollFlags::POLLIN,
                    Stage::Waiting if !conn.progress.is_empty() => PollFlags::POLLOUT,
                    Stage::Waiting => PollFlags::empty(),
                    Stage::Writing { .. } => PollFlags::POLLOUT,
                };
                fds.push(PollFd::new(conn.stream.as_fd(), events));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log(&format!(
                        "control socket: poll failed: {e}; closing the socket"
                    ));
                    return Err(Stop::OwnerGone);
                }
            }
            let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            let conn_fds = if accepting { &fds[2..] } else { &fds[1..] };
            for (id, fd) in ids.iter().zip(conn_fds) {
                if !revents(fd).is_empty() {
                    ready.push((*id, revents(fd)));
                }
            }
            (
                !revents(&fds[0]).is_empty(),
                accepting && !revents(&fds[1]).is_empty(),
            )
        };
        if woken {
            let mut sink = [0u8; 256];
            while matches!((&self.woken).read(&mut sink), Ok(n) if n > 0) {}
        }
        // Replies first: they may free connection slots.
        loop {
            match self.queue.try_recv() {
                Ok((conn, line, true)) => self.send_reply(conn, line),
                Ok((conn, line, false)) => self.send_progress(conn, line)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(Stop::Finished),
            }
        }
        for (id, events) in ready {
            self.serve(id, events)?;
        }
        if listener_ready {
            self.accept_all();
        }
        self.expire(Instant::now());
        Ok(())
    }

    fn accept_all(&mut self) {
        while self.conns.len() < MAX_CONNECTIONS {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE, ENOBUFS and the like: said, and the listener rests a moment
                    // (the connection waits in the backlog) instead of spinning on it.
                    log(&format!(
                        "control socket: accept failed: {e}; trying again in {} ms",
                        ACCEPT_REST.as_millis()
                    ));
                    self.accept_rest_until = Some(Instant::now() + ACCEPT_REST);
                    return;
                }
            };
            let creds = match getsockopt(&stream, PeerCredentials) {
                Ok(creds) => creds,
                Err(e) => {
                    log(&format!(
                        "control socket: no peer credentials for a connection ({e}); closed"
                    ));
                    continue;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                log(&format!("control socket: {e}; connection closed"));
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            self.conns.insert(
                id,
                Conn {
                    stream,
                    pid: creds.pid() as u32,
                    uid: creds.uid(),
                    stage: Stage::Reading {
                        framer: LineFramer::default(),
                        deadline: Instant::now() + REQUEST_WAIT,
                    },
                    progress: Vec::new(),
                },
            );
        }
    }

    /// Serves a connection whose descriptor is ready.
    fn serve(&mut self, id: u64, events: PollFlags) -> Result<(), Stop> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        match &mut conn.stage {
            Stage::Reading { framer, .. } => {
                let mut buf = [0u8; 4096];
                let frame = match (&conn.stream).read(&mut buf) {
                    Ok(0) => match framer.finish() {
                        // A last line without newline, complete because the peer closed
                        // its writing side (as on the FIFO).
                        Some(frame) => frame,
                        // Connected and left without a word: nothing to answer.
                        None => {
                            self.conns.remove(&id);
                            return Ok(());
                        }
                    },
                    // One request per connection: bytes after the first line are not
                    // read (the reply, then the close, ends the exchange).
                    Ok(n) => match framer.push(&buf[..n]).into_iter().next() {
                        Some(frame) => frame,
                        None => return Ok(()),
                    },
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok(())
                    }
                    Err(_) => {
                        self.conns.remove(&id);
                        return Ok(());
                    }
                };
                conn.stage = Stage::Waiting;
                let origin = Origin::Socket {
                    conn: id,
                    pid: conn.pid,
                    uid: conn.uid,
                };
                self.inputs
                    .send(Input::LineReceived { frame, origin })
                    .map_err(|_| Stop::OwnerGone)?;
            }
            Stage::Waiting => {
                if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // The client gave up (Ctrl-C, its deadline passed, or it was
                    // killed). The core hears of it, so that it takes back what it
                    // started for this line; the reply, when decided, is dropped.
                    self.hung_up(id)?;
                } else if events.contains(PollFlags::POLLOUT) {
                    self.flush_progress(id)?;
                }
            }
            Stage::Writing { .. } => self.write_some(id),
        }
        Ok(())
    }

    /// A client whose line waits for its reply has gone.
    fn hung_up(&mut self, id: u64) -> Result<(), Stop> {
        self.conns.remove(&id);
        self.inputs
            .send(Input::ConnectionClosed { conn: id })
            .map_err(|_| Stop::OwnerGone)
    }

    /// A progress line for a connection still waiting: written now as far as the socket
    /// takes it, the rest when it has room.
    fn send_progress(&mut self, id: u64, line: String) -> Result<(), Stop> {
        match self.conns.get_mut(&id) {
            Some(conn) if matches!(conn.stage, Stage::Waiting) => {
                if conn.progress.len() + line.len() < MAX_PROGRESS_BACKLOG {
                    conn.progress
                        .extend_from_slice(format!("{line}\n").as_bytes());
                }
                self.flush_progress(id)
            }
            // Gone, or its final reply is already out: a progress line no longer matters.
            Some(_) | None => Ok(()),
        }
    }

    fn flush_progress(&mut self, id: u64) -> Result<(), Stop> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        while !conn.progress.is_empty() {
            match (&conn.stream).write(&conn.progress) {
                Ok(n) => {
                    conn.progress.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return self.hung_up(id),
            }
        }
        Ok(())
    }

    fn send_reply(&mut self, id: u64, line: String) {
        match self.conns.get_mut(&id) {
            Some(conn) if matches!(conn.stage, Stage::Waiting) => {
                let mut bytes = std::mem::take(&mut conn.progress);
                bytes.extend_from_slice(format!("{line}\n").as_bytes());
                conn.stage = Stage::Writing {
                    bytes,
                    written: 0,
                    deadline: Instant::now() + REPLY_HOLD,
                };
                self.write_some(id);
            }
            Some(_) => {
                // A second reply for one line would be a core bug: the client gets the
                // first, and this one is named rather than sent.
                debug_assert!(false, "a second reply for connection {id}: {line}");
                log(&format!(
                    "reply '{line}' on connection {id} not delivered: it already has its reply"
                ));
            }
            None => log(&format!(
                "reply '{line}' on connection {id} not delivered: the client closed the connection first"
            )),
        }
    }

    /// Writes what the socket takes of the connection's reply; closes it when all is out.
    fn write_some(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Stage::Writing { bytes, written, .. } = &mut conn.stage else {
            return;
        };
        loop {
            match (&conn.stream).write(&bytes[*written..]) {
                Ok(n) => {
                    *written += n;
                    if *written == bytes.len() {
                        // Done: closing is the end of the exchange for the client.
                        let _ = conn.stream.shutdown(Shutdown::Both);
                        self.conns.remove(&id);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    let line = String::from_utf8_lossy(bytes).trim_end().to_string();
                    let why = match e.raw_os_error() {
                        Some(libc::EPIPE | libc::ECONNRESET) => {
                            "the client closed the connection first".to_string()
                        }
                        _ => e.to_string(),
                    };
                    log(&format!(
                        "reply '{line}' to pid {} (connection {id}) not delivered: {why}",
                        conn.pid
                    ));
                    self.conns.remove(&id);
                    return;
                }
            }
        }
    }

    /// Ends the connections whose time is up.
    fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| match &c.stage {
                Stage::Reading { deadline, .. } | Stage::Writing { deadline, .. } => {
                    *deadline <= now
                }
                Stage::Waiting => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(conn) = self.conns.remove(&id) else {
                continue;
            };
            match conn.stage {
                Stage::Reading { .. } => {
                    let line = Reply::Error(format!(
                        "no complete command line within {} s of connecting",
                        REQUEST_WAIT.as_secs()
                    ))
                    .to_line(self.dialect);
                    let _ = (&conn.stream).write(format!("{line}\n").as_bytes());
                    log(&format!(
                        "connection {id} from pid {} sent no command line within {} s; closed",
                        conn.pid,
                        REQUEST_WAIT.as_secs()
                    ));
                }
                Stage::Writing { bytes, .. } => log(&format!(
                    "reply '{}' to pid {} (connection {id}) not delivered: the client did not read it within {} s",
                    String::from_utf8_lossy(&bytes).trim_end(),
                    conn.pid,
                    REPLY_HOLD.as_secs()
                )),
                Stage::Waiting => {}
            }
        }
    }

    /// The end: replies already decided are written (a short line always fits an
    /// unread connection), the others are told `why`, every connection is closed.
    fn close_all(&mut self, why: &str) {
        while let Ok((conn, line, last)) = self.queue.try_recv() {
            if last {
                self.send_reply(conn, line);
            }
        }
        let last = Reply::Error(why.to_string()).to_line(self.dialect);
        for (_, conn) in std::mem::take(&mut self.conns) {
            let bytes = match conn.stage {
                Stage::Reading { .. } | Stage::Waiting => {
                    let mut bytes = conn.progress;
                    bytes.extend_from_slice(format!("{last}\n").as_bytes());
                    bytes
                }
                Stage::Writing { bytes, written, .. } => bytes[written..].to_vec(),
            };
            let _ = (&conn.stream).write(&bytes);
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_long_path_is_reached_through_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(120));
        fs::create_dir(&deep).unwrap();
        let path = deep.join(SOCKET);
        let (dir, address) = socket_address(&path).unwrap();
        assert!(dir.is_some() && address.as_os_str().len() < SUN_PATH_MAX);
        let listener = UnixListener::bind(&address).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        let _client = UnixStream::connect(&address).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
    }
}
