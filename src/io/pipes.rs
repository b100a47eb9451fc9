//! The pipe directory: holds the FIFOs `control` (client → controller) and `response`
//! (controller → client), and by default the controller's journal.
//!
//! Security (issue 9). Whoever can write `control` and read `response` can ask for
//! debugging rights over the target, so the directory must be private, and the
//! controller must not be steered into touching anything else:
//! - The directory is opened once, relative to a handle of its parent, with
//!   `O_DIRECTORY | O_NOFOLLOW`, and the *opened handle* is checked with `fstat` (a
//!   directory, ours, no access for group or others). Every later operation (`mkfifoat`,
//!   `openat`, `unlinkat`, `fchmod`, the lock) goes through that handle, never through the
//!   path again. Someone who can write the parent may rename or replace the path at any
//!   moment; they can then only make the controller refuse, or leave it serving the
//!   directory it verified (clients that follow the path will not find it: a denial of
//!   service that no check can prevent in such a parent).
//! - Only what this controller created is changed or removed: a directory it made is
//!   tightened to 0700 with `fchmod` on the handle; an existing directory is never
//!   chmodded (a loose one is refused, naming `chmod 700`); a file that is not a FIFO is
//!   never removed (it is refused, named); at exit only the FIFOs and the directory this
//!   controller made are removed, and only if they are still the same inodes.
//! - All checks come before the first change, so a refused start changes nothing.
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{mkfifoat, unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// The seed's fixed location.
pub const DEFAULT_PIPE_DIR: &str = "/tmp/heliparent_debug";

/// The directory holding the named controllers of `uid` (`--name`, `heli-client ls`).
pub fn named_root(uid: u32) -> PathBuf {
    PathBuf::from(format!("{DEFAULT_PIPE_DIR}-{uid}"))
}
pub const CONTROL: &str = "control";
pub const RESPONSE: &str = "response";

#[derive(Debug)]
pub enum PipeDirError {
    NotADirectory(PathBuf),
    Symlink(PathBuf),
    NotOwned {
        path: PathBuf,
        owner: u32,
        uid: u32,
    },
    /// An existing directory (not created by this controller) that group or others may use.
    OpenToOthers {
        path: PathBuf,
        mode: u32,
    },
    /// The directory this controller had just created was replaced before it was opened.
    Replaced(PathBuf),
    /// `--pipe-dir` ends in `/`, `.` or `..`: no name to create or open in a parent.
    NoName(PathBuf),
    InUse(PathBuf),
    NotAFifo(PathBuf),
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for PipeDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipeDirError::NotADirectory(p) => write!(
                f,
                "{} exists and is not a directory; it was left as it is. Remove it or choose another --pipe-dir",
                p.display()
            ),
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
            PipeDirError::OpenToOthers { path, mode } => write!(
                f,
                "{} has mode {mode:04o}: other users could reach the pipes, which grant debugging rights; \
                 the controller changes no directory it did not create. Run `chmod 700 {}`, or choose a \
                 --pipe-dir that does not exist yet (it is created 0700)",
                path.display(),
                path.display()
            ),
            PipeDirError::Replaced(p) => write!(
                f,
                "{} was replaced by someone else right after the controller created it; refusing to use it. \
                 Choose a --pipe-dir whose parent only you can write",
                p.display()
            ),
            PipeDirError::NoName(p) => write!(
                f,
                "--pipe-dir {} does not end in a directory name; give a path such as /tmp/heli-pipes",
                p.display()
            ),
            PipeDirError::InUse(p) => write!(
                f,
                "another controller is already serving {}; stop it first or choose another --pipe-dir",
                p.display()
            ),
            PipeDirError::NotAFifo(p) => write!(
                f,
                "{} exists and is not a named pipe; it was left as it is. Move it away or choose another --pipe-dir",
                p.display()
            ),
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

fn errno_err(path: &Path) -> impl FnOnce(Errno) -> PipeDirError + '_ {
    move |errno| io_err(path)(io::Error::from(errno))
}

fn is_type(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

/// The identity of a file: what it was when this controller made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inode {
    dev: u64,
    ino: u64,
}

impl From<&FileStat> for Inode {
    fn from(stat: &FileStat) -> Inode {
        Inode {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// An open handle of a verified pipe directory. Everything in the directory is reached
/// relative to it, so renaming or replacing the directory's path changes nothing for the
/// holder. `Send`: the control reader thread holds its own (see [`PipeDir::handle`]).
#[derive(Debug)]
pub struct PipeHandle {
    fd: OwnedFd,
    /// For messages only; never used to reach a file.
    dir: PathBuf,
}

impl std::os::fd::AsRawFd for PipeHandle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl PipeHandle {
    fn open(&self, name: &str, access: OFlag) -> io::Result<File> {
        let flags = access | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(Some(self.fd.as_raw_fd()), name, flags, Mode::empty())?;
        // SAFETY: openat just returned this descriptor, owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `control` for reading, without blocking (succeeds with or without writers).
    pub fn open_control_reader(&self) -> io::Result<File> {
        self.open(CONTROL, OFlag::O_RDONLY)
    }

    /// `response` for writing, without blocking: ENXIO when no client reads it.
    pub fn open_response_writer(&self) -> io::Result<File> {
        self.open(RESPONSE, OFlag::O_WRONLY)
    }

    /// `response` for writing, waiting until a client opens it for reading (the 0.x
    /// order: it opens `response` only after sending). Blocks: see
    /// [`PipeHandle::release_response_writer`].
    pub fn open_response_writer_waiting(&self) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(Some(self.fd.as_raw_fd()), RESPONSE, flags, Mode::empty())?;
        // SAFETY: openat just returned this descriptor, owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Releases a writer blocked in [`PipeHandle::open_response_writer_waiting`] by being
    /// its reader for an instant; the caller then writes nothing.
    pub fn release_response_writer(&self) {
        let _ = self.open(RESPONSE, OFlag::O_RDONLY);
    }

    /// Whether some process holds the FIFO `name` open for reading.
    fn has_reader(&self, name: &str) -> bool {
        !matches!(self.open(name, OFlag::O_WRONLY), Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// A pipe directory served by this controller until dropped or [`PipeDir::remove`]d.
#[derive(Debug)]
pub struct PipeDir {
    /// Holds the exclusive `flock` too: a second controller on the same directory is
    /// refused, and the lock dies with the process, so a crash leaves no stale lock.
    handle: PipeHandle,
    /// The parent, to remove the directory by its name at exit (after checking that the
    /// name still means our directory).
    parent: OwnedFd,
    name: OsString,
    /// The directory's identity when this controller created it; `None` when it existed.
    created_dir: Option<Inode>,
    /// The FIFOs this controller created, with their identities.
    created: Vec<(&'static str, Inode)>,
    removed: bool,
}

impl PipeDir {
    pub fn create(dir: &Path) -> Result<PipeDir, PipeDirError> {
        let uid = nix::unistd::getuid().as_raw();
        let name = match dir.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => return Err(PipeDirError::NoName(dir.into())),
        };
        let parent_path = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Missing parents are made as before (the user's umask, links followed: the user
        // named that path). Only the last component, the one the controller tightens and
        // serves, must never be followed or trusted by name.
        if !parent_path.is_dir() {
            fs::create_dir_all(&parent_path).map_err(io_err(&parent_path))?;
        }
        let parent = openat(
            None,
            &parent_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_err(&parent_path))?;
        // SAFETY: openat just returned this descriptor, owned by nobody else.
        let parent = unsafe { OwnedFd::from_raw_fd(parent) };
        let p = parent.as_raw_fd();

        let created = match mkdirat(Some(p), name.as_os_str(), Mode::S_IRWXU) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(errno_err(dir)(e)),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(Some(p), name.as_os_str(), flags, Mode::empty()) {
            // SAFETY: openat just returned this descriptor, owned by nobody else.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            // O_NOFOLLOW on a link gives ELOOP, O_DIRECTORY on a non-directory ENOTDIR
            // (also for a link, on some kernels): tell the two apart without following.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let link = fstatat(Some(p), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| is_type(&st, SFlag::S_IFLNK));
                return Err(if link {
                    PipeDirError::Symlink(dir.into())
                } else {
                    PipeDirError::NotADirectory(dir.into())
                });
            }
            Err(e) => return Err(errno_err(dir)(e)),
        };
        let stat = fstat(fd.as_raw_fd()).map_err(errno_err(dir))?;
        if !is_type(&stat, SFlag::S_IFDIR) {
            return Err(PipeDirError::NotADirectory(dir.into()));
        }
        if stat.st_uid != uid {
            return Err(PipeDirError::NotOwned {
                path: dir.into(),
                owner: stat.st_uid,
                uid,
            });
        }
        let mode = stat.st_mode & 0o7777;
        let created_dir = if created {
            // Made 0700 minus the umask, and empty. Anything else is a directory of ours
            // that someone who can write the parent moved into the name between mkdirat
            // and openat: not ours to tighten or remove.
            if mode & 0o077 != 0 || !is_empty(&fd) {
                return Err(PipeDirError::Replaced(dir.into()));
            }
            // The umask may have taken the owner's bits; set exactly 0700, on the handle.
            fchmod(fd.as_raw_fd(), Mode::S_IRWXU).map_err(errno_err(dir))?;
            let stat = fstat(fd.as_raw_fd()).map_err(errno_err(dir))?;
            if stat.st_mode & 0o7777 != 0o700 {
                return Err(PipeDirError::Replaced(dir.into()));
            }
            Some(Inode::from(&stat))
        } else {
            // The user's directory: never chmodded behind their back.
            if mode & 0o077 != 0 {
                return Err(PipeDirError::OpenToOthers {
                    path: dir.into(),
                    mode,
                });
            }
            None
        };
        // SAFETY: flock on a valid open descriptor has no memory effects. (nix's `Flock`
        // would take the descriptor by value; this one is also the directory handle.)
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(match Errno::last() {
                Errno::EWOULDBLOCK => PipeDirError::InUse(dir.into()),
                e => errno_err(dir)(e),
            });
        }
        let mut pipes = PipeDir {
            handle: PipeHandle {
                fd,
                dir: dir.to_path_buf(),
            },
            parent,
            name,
            created_dir,
            created: Vec::new(),
            removed: false,
        };
        // Check both names before changing anything: a refused start removes nothing.
        let mut stale = Vec::new();
        for name in [CONTROL, RESPONSE] {
            if pipes.check_fifo(name, uid)? {
                stale.push(name);
            }
        }
        for name in [CONTROL, RESPONSE] {
            pipes.make_fifo(name, stale.contains(&name))?;
        }
        Ok(pipes)
    }

    /// Whether `name` is a stale FIFO to replace (`false`: absent); refuses anything else.
    ///
    /// A FIFO of ours is replaced: it holds no data, it sits in a directory that is ours
    /// and private, and the lock we now hold says no controller serves it, so it was
    /// left by one that died (SIGKILL, a crash). One with a reader on `control` is still
    /// served by a controller that takes no lock (an older version): refused. A FIFO
    /// of another user (only root can put one in our 0700 directory) and every other
    /// kind of file are refused and left alone: they may be someone's data.
    fn check_fifo(&self, name: &'static str, uid: u32) -> Result<bool, PipeDirError> {
        let path = self.join(name);
        let stat = match fstatat(Some(self.raw()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(errno_err(&path)(e)),
        };
        if is_type(&stat, SFlag::S_IFLNK) {
            return Err(PipeDirError::Symlink(path));
        }
        if !is_type(&stat, SFlag::S_IFIFO) {
            return Err(PipeDirError::NotAFifo(path));
        }
        if stat.st_uid != uid {
            return Err(PipeDirError::NotOwned {
                path,
                owner: stat.st_uid,
                uid,
            });
        }
        if name == CONTROL && self.handle.has_reader(name) {
            return Err(PipeDirError::InUse(self.path().into()));
        }
        Ok(true)
    }

    fn make_fifo(&mut self, name: &'static str, stale: bool) -> Result<(), PipeDirError> {
        let path = self.join(name);
        if stale {
            unlinkat(Some(self.raw()), name, UnlinkatFlags::NoRemoveDir)
                .map_err(errno_err(&path))?;
        }
        mkfifoat(Some(self.raw()), name, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(errno_err(&path))?;
        let stat = fstatat(Some(self.raw()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(errno_err(&path))?;
        self.created.push((name, Inode::from(&stat)));
        Ok(())
    }

    fn raw(&self) -> i32 {
        self.handle.fd.as_raw_fd()
    }

    /// The directory's path as given (for messages and for clients; the controller
    /// itself reaches its files through the handle).
    pub fn path(&self) -> &Path {
        &self.handle.dir
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.handle.dir.join(name)
    }

    /// A second handle of the same directory, for a thread that outlives a borrow.
    pub fn handle(&self) -> io::Result<PipeHandle> {
        Ok(PipeHandle {
            fd: self.handle.fd.try_clone()?,
            dir: self.handle.dir.clone(),
        })
    }

    pub fn open_control_reader(&self) -> io::Result<File> {
        self.handle.open_control_reader()
    }

    pub fn open_response_writer(&self) -> io::Result<File> {
        self.handle.open_response_writer()
    }

    /// Creates a new file `name` (0600) in the directory; never replaces one.
    pub fn create_file(&self, name: &str) -> io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(Some(self.raw()), name, flags, Mode::S_IRUSR | Mode::S_IWUSR)?;
        // SAFETY: openat just returned this descriptor, owned by nobody else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Removes the FIFOs this controller created, then the directory if it created it
    /// and nothing else (a journal, the user's files) is in it. A name that no longer
    /// means what was created is left alone.
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let same = |dir: i32, name: &OsStr, made: Inode| {
            fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| Inode::from(&st) == made)
        };
        for (name, made) in std::mem::take(&mut self.created) {
            if same(self.raw(), OsStr::new(name), made) {
                let _ = unlinkat(Some(self.raw()), name, UnlinkatFlags::NoRemoveDir);
            }
        }
        if let Some(made) = self.created_dir {
            let parent = self.parent.as_raw_fd();
            if same(parent, &self.name, made) {
                let _ = unlinkat(
                    Some(parent),
                    self.name.as_os_str(),
                    UnlinkatFlags::RemoveDir,
                );
            }
        }
    }
}

impl Drop for PipeDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Whether the directory open as `fd` has no entries. Read through the handle's
/// `/proc/self/fd` link, which names the open directory itself, not its path; without
/// `/proc`, a directory with subdirectories (link count above 2) is not empty, and one
/// without is taken as empty.
fn is_empty(fd: &OwnedFd) -> bool {
    match fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_nlink <= 2),
    }
}

/// Whether some process holds the FIFO open for reading (a non-blocking write-open
/// fails with ENXIO exactly when nobody does).
pub fn has_reader(path: &Path) -> bool {
    !matches!(open_writer(path), Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32))
}

/// Opens a FIFO by path for writing without blocking: ENXIO when it has no reader. For
/// clients, which know only the path; the controller uses [`PipeHandle`].
pub fn open_writer(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a FIFO by path for reading without blocking (succeeds with or without writers).
pub fn open_reader(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// Makes reads and writes on `file` non-blocking: past an open that had to wait for its
/// peer, a slow or vanished peer must not hold the caller.
pub fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns through `file`.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes (0700) or checks the directory that holds named controllers' pipe directories
/// (`--name`): it must be a real directory of this user that nobody else may enter,
/// since every named controller's directory is created in it by name.
pub fn ensure_named_root(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid().as_raw();
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", root.display())),
    }
    let meta = fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (a symbolic link or a file): refusing to put pipes under it",
            root.display()
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to you (uid {uid}): refusing to put pipes under it",
            root.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:o}: others may enter it; run `chmod 700 {}`",
            root.display(),
            meta.mode() & 0o7777,
            root.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_made_private_and_removed_with_its_pipes() {
        let tmp = tempfile::tempdir().unwrap();
        // A trailing slash names the same directory.
        let dir = tmp.path().join("a/b/pipes/");
        let mut pipes = PipeDir::create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for name in [CONTROL, RESPONSE] {
            assert!(fs::symlink_metadata(dir.join(name))
                .unwrap()
                .file_type()
                .is_fifo());
        }
        pipes.remove();
        assert!(!dir.exists());
        assert!(
            tmp.path().join("a/b").is_dir(),
            "parents made for it are the user's"
        );
    }

    #[test]
    fn a_directory_holding_a_journal_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
        let mut pipes = PipeDir::create(&dir).unwrap();
        drop(pipes.create_file("journal-1.jsonl").unwrap());
        assert!(
            pipes.create_file("journal-1.jsonl").is_err(),
            "never replaced"
        );
        pipes.remove();
        assert!(dir.join("journal-1.jsonl").is_file());
        assert!(!dir.join(CONTROL).exists());
    }

    #[test]
    fn a_path_without_a_final_name_is_refused() {
        for path in [".", "/", "a/.."] {
            let err = PipeDir::create(Path::new(path)).unwrap_err();
            assert!(matches!(err, PipeDirError::NoName(_)), "{path}: {err}");
        }
    }

    #[test]
    fn a_loose_existing_directory_is_refused_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pipes");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let err = PipeDir::create(&dir).unwrap_err().to_string();
        assert!(
            err.contains("mode 0750") && err.contains("chmod 700"),
            "{err}"
        );
        assert_eq!(mode(&dir), 0o750);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }
}
