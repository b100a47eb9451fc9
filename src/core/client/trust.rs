//! What the client trusts: the pipe directory and its FIFOs, and the interpreter it runs
//! for pdb. Pure judgements over facts the driver gathered with `lstat`/`fstat`.
//!
//! Why: whoever answers on the pipes names the target, and the client runs the target's
//! own executable as `<exe> -m pdb -p <target>`. Another user who owns the pipe directory
//! (the default `/tmp/heliparent_debug` is a fixed, guessable path) could answer with a
//! process of theirs whose executable they replaced by a script, and the client would
//! run that script as its user, root included. So the pipes must be the caller's alone,
//! and the interpreter must be a file nobody but root or the caller can have written.
use std::path::{Path, PathBuf};

/// What `lstat` (or `fstat` of an opened descriptor) says about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFacts {
    pub kind: EntryKind,
    pub uid: u32,
    /// The permission bits, with the set-id and sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Fifo,
    Symlink,
    Other,
}

impl EntryKind {
    fn name(self) -> &'static str {
        match self {
            EntryKind::Directory => "a directory",
            EntryKind::File => "a regular file",
            EntryKind::Fifo => "a named pipe",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Other => "a special file",
        }
    }
}

const GROUP_OTHER_ANY: u32 = 0o077;
const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// The pipe directory or one of its FIFOs (`expected` says which), owned by `uid` with
/// no access for group or others; otherwise the refusal says what and why.
pub fn judge_pipe_entry(
    path: &Path,
    expected: EntryKind,
    facts: &EntryFacts,
    uid: u32,
) -> Result<(), String> {
    let refuse = |why: String| {
        Err(format!(
            "refusing to use {}: {why}; another user could be impersonating the controller to make you run their program. Remove it, or use another --pipe-dir",
            path.display()
        ))
    };
    if facts.kind != expected {
        return refuse(format!(
            "it is {}, not {}",
            facts.kind.name(),
            expected.name()
        ));
    }
    if facts.uid != uid {
        return refuse(format!(
            "it belongs to uid {}, not to you (uid {uid})",
            facts.uid
        ));
    }
    if facts.mode & GROUP_OTHER_ANY != 0 {
        return refuse(format!(
            "its mode {:04o} gives group or others access (a controller makes the directory 0700 and the pipes 0600)",
            facts.mode
        ));
    }
    Ok(())
}

/// What the driver found about the target's executable (`/proc/PID/exe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutableFacts {
    /// The link could not be read.
    Unreadable,
    /// The kernel marks it ` (deleted)`: the target runs a file that has no name any more,
    /// so whatever bears the name now is another file.
    Deleted { path: PathBuf },
    Found {
        path: PathBuf,
        /// Whether the file at `path` now is the very file the target runs (same device
        /// and inode); false when it was replaced since.
        same_file: bool,
        /// `lstat` of every component of `path`, from `/` down to the file itself;
        /// `None` for a component that could not be examined.
        components: Vec<(PathBuf, Option<EntryFacts>)>,
    },
}

/// The verdict on running the target's executable as pdb's interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpreterVerdict {
    Run(PathBuf),
    /// Nothing is known: fall back to `python3.14` on `PATH`, as without a target.
    Unknown,
    Refuse(String),
}

/// Runs the target's executable only if nobody but root or `uid` can have put it there:
/// every component of its (symlink-free, as the kernel reports it) path is owned by root
/// or `uid` and not writable by group or others, except a sticky directory (`/tmp`),
/// where others cannot rename or remove what they do not own. Then the path cannot be
/// swapped between this check and the exec by anyone the caller does not already trust.
pub fn judge_interpreter(facts: &ExecutableFacts, uid: u32) -> InterpreterVerdict {
    let (path, same_file, components) = match facts {
        ExecutableFacts::Unreadable => return InterpreterVerdict::Unknown,
        ExecutableFacts::Deleted { path } => {
            return InterpreterVerdict::Refuse(format!(
                "refusing to run the target's interpreter {}: the kernel reports it deleted, so whatever bears that name now is not the program the target runs",
                path.display()
            ))
        }
        ExecutableFacts::Found {
            path,
            same_file,
            components,
        } => (path, *same_file, components),
    };
    let refuse = |why: String| {
        InterpreterVerdict::Refuse(format!(
            "refusing to run the target's interpreter {}: {why}",
            path.display()
        ))
    };
    if components.is_empty() {
        return refuse("its path has no components".into());
    }
    let last = components.len() - 1;
    for (i, (component, facts)) in components.iter().enumerate() {
        let shown = component.display();
        let Some(facts) = facts else {
            return refuse(format!("{shown} cannot be examined"));
        };
        let expected = if i == last {
            EntryKind::File
        } else {
            EntryKind::Directory
        };
        if facts.kind != expected {
            return refuse(format!(
                "{shown} is {}, not {}",
                facts.kind.name(),
                expected.name()
            ));
        }
        if facts.uid != 0 && facts.uid != uid {
            return refuse(format!(
                "{shown} belongs to uid {}, neither root nor you (uid {uid})",
                facts.uid
            ));
        }
        let sticky_dir = expected == EntryKind::Directory && facts.mode & STICKY != 0;
        if facts.mode & GROUP_OTHER_WRITE != 0 && !sticky_dir {
            return refuse(format!(
                "{shown} is writable by group or others (mode {:04o})",
                facts.mode
            ));
        }
    }
    if !same_file {
        return refuse("the file at that path is no longer the one the target runs".into());
    }
    InterpreterVerdict::Run(path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const ME: u32 = 1000;
    const OTHER: u32 = 1001;

    fn entry(kind: EntryKind, uid: u32, mode: u32) -> EntryFacts {
        EntryFacts { kind, uid, mode }
    }

    #[rstest]
    #[case::ours(EntryKind::Directory, entry(EntryKind::Directory, ME, 0o700), None)]
    #[case::another_users(
        EntryKind::Directory,
        entry(EntryKind::Directory, OTHER, 0o700),
        Some("belongs to uid 1001, not to you (uid 1000)")
    )]
    #[case::a_symlink(
        EntryKind::Directory,
        entry(EntryKind::Symlink, ME, 0o777),
        Some("it is a symbolic link, not a directory")
    )]
    #[case::group_readable(
        EntryKind::Directory,
        entry(EntryKind::Directory, ME, 0o750),
        Some("mode 0750 gives group or others access")
    )]
    #[case::root_owned_for_a_user(
        EntryKind::Directory,
        entry(EntryKind::Directory, 0, 0o700),
        Some("belongs to uid 0")
    )]
    #[case::our_fifo(EntryKind::Fifo, entry(EntryKind::Fifo, ME, 0o600), None)]
    #[case::world_writable_fifo(
        EntryKind::Fifo,
        entry(EntryKind::Fifo, ME, 0o622),
        Some("mode 0622")
    )]
    #[case::a_file_for_a_fifo(
        EntryKind::Fifo,
        entry(EntryKind::File, ME, 0o600),
        Some("it is a regular file, not a named pipe")
    )]
    fn pipe_entries(
        #[case] expected: EntryKind,
        #[case] facts: EntryFacts,
        #[case] refusal: Option<&str>,
    ) {
        let verdict = judge_pipe_entry(Path::new("/tmp/x"), expected, &facts, ME);
        match (verdict, refusal) {
            (Ok(()), None) => {}
            (Err(why), Some(part)) => {
                assert!(why.contains(part), "{why}");
                assert!(why.starts_with("refusing to use /tmp/x: "), "{why}");
                assert!(why.contains("--pipe-dir"), "{why}");
            }
            (verdict, refusal) => panic!("{verdict:?}, expected refusal {refusal:?}"),
        }
    }

    fn found(modes: &[(&str, EntryKind, u32, u32)], same_file: bool) -> ExecutableFacts {
        let components = modes
            .iter()
            .map(|(p, kind, uid, mode)| (PathBuf::from(p), Some(entry(*kind, *uid, *mode))))
            .collect();
        ExecutableFacts::Found {
            path: PathBuf::from(modes.last().unwrap().0),
            same_file,
            components,
        }
    }

    use EntryKind::{Directory as D, File as F, Symlink as L};

    #[rstest]
    #[case::system_python(&[("/", D, 0, 0o755), ("/usr", D, 0, 0o755), ("/usr/bin/python3.14", F, 0, 0o755)], true, None)]
    #[case::own_venv(&[("/", D, 0, 0o755), ("/home/me", D, ME, 0o700), ("/home/me/python", F, ME, 0o775 & !0o020)], true, None)]
    #[case::sticky_tmp(&[("/", D, 0, 0o755), ("/tmp", D, 0, 0o1777), ("/tmp/python", F, ME, 0o755)], true, None)]
    #[case::another_users_file(&[("/", D, 0, 0o755), ("/tmp", D, 0, 0o1777), ("/tmp/python", F, OTHER, 0o755)], true, Some("/tmp/python belongs to uid 1001"))]
    #[case::another_users_dir(&[("/", D, 0, 0o755), ("/home/x", D, OTHER, 0o755), ("/home/x/python", F, 0, 0o755)], true, Some("/home/x belongs to uid 1001"))]
    #[case::group_writable_dir(&[("/", D, 0, 0o755), ("/opt", D, 0, 0o775), ("/opt/python", F, 0, 0o755)], true, Some("/opt is writable by group or others (mode 0775)"))]
    #[case::world_writable_file(&[("/", D, 0, 0o755), ("/opt/python", F, 0, 0o757)], true, Some("writable by group or others"))]
    #[case::a_symlink_appeared(&[("/", D, 0, 0o755), ("/usr", L, 0, 0o777), ("/usr/python", F, 0, 0o755)], true, Some("/usr is a symbolic link"))]
    #[case::replaced_since(&[("/", D, 0, 0o755), ("/usr/python", F, 0, 0o755)], false, Some("no longer the one the target runs"))]
    fn interpreters(
        #[case] modes: &[(&str, EntryKind, u32, u32)],
        #[case] same_file: bool,
        #[case] refusal: Option<&str>,
    ) {
        let facts = found(modes, same_file);
        match (judge_interpreter(&facts, ME), refusal) {
            (InterpreterVerdict::Run(path), None) => {
                assert_eq!(path, PathBuf::from(modes.last().unwrap().0))
            }
            (InterpreterVerdict::Refuse(why), Some(part)) => {
                assert!(why.contains(part), "{why}");
                assert!(
                    why.starts_with("refusing to run the target's interpreter "),
                    "{why}"
                );
            }
            (verdict, refusal) => panic!("{verdict:?}, expected refusal {refusal:?}"),
        }
    }

    #[test]
    fn a_deleted_executable_is_never_run() {
        let verdict = judge_interpreter(
            &ExecutableFacts::Deleted {
                path: "/tmp/evil/python".into(),
            },
            ME,
        );
        let InterpreterVerdict::Refuse(why) = verdict else {
            panic!("{verdict:?}");
        };
        assert!(
            why.contains("/tmp/evil/python") && why.contains("deleted"),
            "{why}"
        );
    }

    #[test]
    fn an_unreadable_executable_falls_back_to_the_path() {
        assert_eq!(
            judge_interpreter(&ExecutableFacts::Unreadable, ME),
            InterpreterVerdict::Unknown
        );
    }

    #[test]
    fn an_unexaminable_component_is_refused() {
        let facts = ExecutableFacts::Found {
            path: "/a/python".into(),
            same_file: true,
            components: vec![("/".into(), Some(entry(D, 0, 0o755))), ("/a".into(), None)],
        };
        assert!(
            matches!(judge_interpreter(&facts, ME), InterpreterVerdict::Refuse(why) if why.contains("/a cannot be examined"))
        );
    }
}
