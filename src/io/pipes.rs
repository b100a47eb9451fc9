//! The pipe directory: created 0700, verified with `lstat` (never followed through a
//! symlink), locked for the controller's life, holding the FIFOs `control` (client →
//! controller), `response` (controller → client).
use nix::errno::Errno;
use nix::sys::stat::Mode;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The seed's fixed location.
pub const DEFAULT_PIPE_DIR: &str = "/tmp/heliparent_debug";
pub const CONTROL: &str = "control";
pub const RESPONSE: &str = "response";

#[derive(Debug)]
pub enum PipeDirError {
    NotADirectory(PathBuf),
    Symlink(PathBuf),
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    InUse(PathBuf),
    NotAFifo(PathBuf),
    Io { path: PathBuf, error: io::Error },
}

impl fmt::Display for PipeDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipeDirError::NotADirectory(p) => write!(f, "{} exists and is not a directory", p.display()),
            PipeDirError::Symlink(p) => write!(
                f,
                "{} is a symbolic link; refusing to use it (someone may be redirecting the pipes). Remove it or choose --pipe-dir",
                p.display()
            ),
            PipeDirError::NotOwned { path, owner, uid } => write!(
                f,
                "{} belongs to uid {owner}, not to you (uid {uid}); refusing to use it. Choose another --pipe-dir",
                path.display()
            ),
            PipeDirError::InUse(p) => write!(
                f,
                "another controller is already serving {}; stop it first or choose another --pipe-dir",
                p.display()
            ),
            PipeDirError::NotAFifo(p) => {
                write!(f, "{} exists and is not a named pipe; remove it or choose another --pipe-dir", p.display())
            }
            PipeDirError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for PipeDirError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PipeDirError + '_ {
    move |error| PipeDirError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A pipe directory owned by this controller until dropped or [`PipeDir::remove`]d.
#[derive(Debug)]
pub struct PipeDir {
    dir: PathBuf,
    created_dir: bool,
    /// Held open with an exclusive `flock`: a second controller on the same directory
    /// is refused, and the lock dies with the process, so a crash leaves no stale lock.
    _lock: File,
    removed: bool,
}

impl PipeDir {
    pub fn create(dir: &Path) -> Result<PipeDir, PipeDirError> {
        let uid = nix::unistd::getuid().as_raw();
        let created_dir = match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err(dir))?;
                true
            }
            Err(e) => return Err(io_err(dir)(e)),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PipeDirError::Symlink(dir.into()))
            }
            Ok(meta) if !meta.is_dir() => return Err(PipeDirError::NotADirectory(dir.into())),
            Ok(meta) if meta.uid() != uid => {
                return Err(PipeDirError::NotOwned {
                    path: dir.into(),
                    owner: meta.uid(),
                    uid,
                })
            }
            Ok(_) => false,
        };
        // Tighten an existing directory of ours: the pipes grant debugging rights.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .map_err(io_err(dir))?;
        // SAFETY: flock on a valid open descriptor has no memory effects.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EWOULDBLOCK) => PipeDirError::InUse(dir.into()),
                _ => io_err(dir)(error),
            });
        }
        let pipes = PipeDir {
            dir: dir.to_path_buf(),
            created_dir,
            _lock: lock,
            removed: false,
        };
        for name in [CONTROL, RESPONSE] {
            pipes.make_fifo(name)?;
        }
        Ok(pipes)
    }

    /// Creates a FIFO, replacing a stale one. A FIFO with a reader means a controller
    /// that does not take the lock (an older version) is serving it: refuse.
    fn make_fifo(&self, name: &str) -> Result<(), PipeDirError> {
        let path = self.dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(PipeDirError::Symlink(path)),
            Ok(meta) if !std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) => {
                return Err(PipeDirError::NotAFifo(path))
            }
            Ok(_) => {
                if name == CONTROL && has_reader(&path) {
                    return Err(PipeDirError::InUse(self.dir.clone()));
                }
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600))
            .map_err(|e| io_err(&path)(io::Error::from(e)))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes the FIFOs, then the directory if this
    /// controller made it and nothing else (a journal) is in it.
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        for name in [CONTROL, RESPONSE] {
            let _ = fs::remove_file(self.dir.join(name));
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

impl Drop for PipeDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether some process holds the FIFO open for reading (a non-blocking write-open
/// fails with ENXIO exactly when nobody does).
pub fn has_reader(path: &Path) -> bool {
    !matches!(open_writer(path), Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32))
}

/// Opens a FIFO for writing without blocking: ENXIO when it has no reader.
pub fn open_writer(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a FIFO for reading without blocking (succeeds with or without writers).
pub fn open_reader(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}
