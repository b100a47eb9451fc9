//! Watches processes that hold a grant and reports their exit as
//! [`Input::ClientExited`], so the core can take the grant back.
use crate::core::supervisor::Input;
use crossbeam_channel::Sender;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

pub struct ClientWatcher {
    inputs: Sender<Input>,
    /// Pids with a watcher thread now: a client granted twice is watched once.
    watched: Arc<Mutex<HashSet<u32>>>,
}

impl ClientWatcher {
    pub fn new(inputs: Sender<Input>) -> ClientWatcher {
        ClientWatcher {
            inputs,
            watched: Arc::default(),
        }
    }

    /// Reports when `pid` exits (at once if it already has).
    pub fn watch(&self, pid: u32) {
        if !lock(&self.watched).insert(pid) {
            return;
        }
        let inputs = self.inputs.clone();
        let watched = Arc::clone(&self.watched);
        let spawned = std::thread::Builder::new()
            .name(format!("watch-{pid}"))
            .spawn(move || {
                // A pidfd names this very process: a pid reused by another process later
                // cannot be mistaken for it.
                if let Ok(pidfd) = pidfd_open(pid) {
                    wait_readable(&pidfd);
                }
                lock(&watched).remove(&pid);
                let _ = inputs.send(Input::ClientExited { pid });
            });
        if spawned.is_err() {
            lock(&self.watched).remove(&pid);
        }
    }
}

fn lock(set: &Mutex<HashSet<u32>>) -> std::sync::MutexGuard<'_, HashSet<u32>> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd becomes readable when its process exits.
fn wait_readable(fd: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) | Err(_) => return,
        }
    }
}
