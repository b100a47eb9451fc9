//! The injector's errors, and the diagnosis that goes into a permission error.

use std::fmt;

/// Why an injection could not be done; every message says what the user can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectError {
    NoSuchProcess {
        pid: i32,
    },
    NotPython {
        pid: i32,
        detail: String,
    },
    UnsupportedVersion {
        pid: i32,
        found: String,
        supported: String,
    },
    RemoteDebugDisabled {
        pid: i32,
    },
    PermissionDenied {
        pid: i32,
        detail: String,
    },
    FreeThreaded {
        pid: i32,
    },
    PathTooLong {
        len: usize,
        max: usize,
    },
    NoSuchThread {
        pid: i32,
        tid: i32,
    },
    Memory {
        pid: i32,
        detail: String,
    },
    /// The script path is not absolute or contains a NUL byte.
    InvalidPath {
        path: String,
        reason: String,
    },
    /// The interpreter has no main thread state (it is starting up or shutting down).
    NoMainThread {
        pid: i32,
    },
    /// The runtime lists no main interpreter yet (the process is starting up).
    NoMainInterpreter {
        pid: i32,
    },
    /// [`super::deliver`] gave up; the request was withdrawn and will never run.
    NotPickedUp {
        pid: i32,
        waited_ms: u64,
        threads: String,
    },
}

impl InjectError {
    /// Whether the same request may succeed in a moment without anyone changing anything:
    /// the interpreter is still starting (a client that attaches right after launch).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            InjectError::NoMainThread { .. } | InjectError::NoMainInterpreter { .. }
        )
    }
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InjectError::NoSuchProcess { pid } => {
                write!(
                    f,
                    "no such process: {pid} (it has exited, or the pid is wrong)"
                )
            }
            InjectError::NotPython { pid, detail } => write!(
                f,
                "process {pid} is not a CPython process this tool can find: {detail}"
            ),
            InjectError::UnsupportedVersion {
                pid,
                found,
                supported,
            } => write!(
                f,
                "process {pid} runs Python {found}, which is not supported; supported: \
                 {supported} (any patch level)"
            ),
            InjectError::RemoteDebugDisabled { pid } => write!(
                f,
                "remote debugging is disabled in process {pid}: restart it without \
                 `-X disable-remote-debug` and with PYTHON_DISABLE_REMOTE_DEBUG unset \
                 (any value, even empty, disables it)"
            ),
            InjectError::PermissionDenied { pid, detail } => {
                write!(
                    f,
                    "permission denied to access the memory of process {pid}: {detail}"
                )
            }
            InjectError::FreeThreaded { pid } => write!(
                f,
                "process {pid} runs a free-threaded (no-GIL) Python build, which is not \
                 supported; run the program with a standard (GIL) build"
            ),
            InjectError::PathTooLong { len, max } => write!(
                f,
                "script path is too long: {len} bytes, the target's buffer holds at most \
                 {max}; use a shorter path (e.g. under /tmp)"
            ),
            InjectError::NoSuchThread { pid, tid } => write!(
                f,
                "process {pid} has no Python thread with native id {tid} in its main \
                 interpreter (the thread may have exited)"
            ),
            InjectError::Memory { pid, detail } => write!(
                f,
                "reading the memory of process {pid} failed: {detail} (the process may be \
                 exiting or its runtime is damaged)"
            ),
            InjectError::InvalidPath { path, reason } => {
                write!(f, "script path {path:?} cannot be used: {reason}")
            }
            InjectError::NoMainInterpreter { pid } => write!(
                f,
                "process {pid} has no main Python interpreter yet: it is still starting up; try again"
            ),
            InjectError::NoMainThread { pid } => write!(
                f,
                "process {pid} has no main Python thread state: the interpreter is starting \
                 up or shutting down; try again"
            ),
            InjectError::NotPickedUp {
                pid,
                waited_ms,
                threads,
            } => write!(
                f,
                "process {pid} did not pick up the script within {waited_ms} ms, so the \
                 request was withdrawn; a thread must run Python bytecode to pick it up \
                 (threads: {threads})"
            ),
        }
    }
}

impl std::error::Error for InjectError {}

/// A permission error with everything that decides it: Yama and its scope, ancestry,
/// uids and dumpability.
pub(crate) fn permission_denied(pid: i32, action: &str) -> InjectError {
    let mut facts = vec![format!("{action} was refused")];
    let descendant = crate::io::procfs::is_descendant_of_self(pid);
    match crate::io::procfs::yama_scope() {
        None => facts.push("Yama is not active (classic ptrace rules: same uid and a dumpable target, or CAP_SYS_PTRACE)".into()),
        Some(0) => facts.push("Yama ptrace_scope=0 (classic ptrace rules)".into()),
        Some(1) => facts.push(format!(
            "Yama ptrace_scope=1: only an ancestor of the target or a tracer it declared \
             with PR_SET_PTRACER may access it, and this process is {}",
            if descendant { "its ancestor" } else { "NOT its ancestor" }
        )),
        Some(2) => facts.push(
            "Yama ptrace_scope=2: only processes with CAP_SYS_PTRACE may access it".into(),
        ),
        Some(scope) => facts.push(format!(
            "Yama ptrace_scope={scope}: no process may access it until reboot"
        )),
    }
    if crate::io::procfs::yama_scope() != Some(1) {
        facts.push(format!(
            "target is {}a descendant of this process",
            if descendant { "" } else { "not " }
        ));
    }
    let my_uid = nix::unistd::geteuid().as_raw();
    match crate::io::procfs::effective_uid(pid) {
        Some(uid) if uid != my_uid => facts.push(format!(
            "target runs as uid {uid}, this process as uid {my_uid}"
        )),
        Some(_) => facts.push(format!("same uid {my_uid}")),
        None => {}
    }
    match crate::io::procfs::is_dumpable(pid) {
        Some(true) => facts.push("target is dumpable".into()),
        Some(false) => facts.push(
            "target is NOT dumpable (PR_SET_DUMPABLE 0 or a setuid program): refused even to its parent".into(),
        ),
        None => facts.push("target dumpability unknown".into()),
    }
    InjectError::PermissionDenied {
        pid,
        detail: facts.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_to_do() {
        let disabled = InjectError::RemoteDebugDisabled { pid: 7 }.to_string();
        assert!(disabled.contains("-X disable-remote-debug"));
        assert!(disabled.contains("PYTHON_DISABLE_REMOTE_DEBUG"));

        let version = InjectError::UnsupportedVersion {
            pid: 7,
            found: "3.13.5".into(),
            supported: "3.14".into(),
        }
        .to_string();
        assert!(version.contains("3.13.5") && version.contains("supported: 3.14"));

        let long = InjectError::PathTooLong { len: 600, max: 511 }.to_string();
        assert!(long.contains("600") && long.contains("511"));

        assert!(InjectError::NoSuchProcess { pid: 7 }
            .to_string()
            .contains("no such process"));
        assert!(InjectError::FreeThreaded { pid: 7 }
            .to_string()
            .contains("free-threaded"));
    }

    #[test]
    fn permission_detail_states_yama_ancestry_and_dumpability() {
        let message = permission_denied(std::process::id() as i32, "writing").to_string();
        assert!(message.contains("Yama"), "{message}");
        assert!(
            message.contains("descendant") || message.contains("ancestor"),
            "{message}"
        );
        assert!(message.contains("dumpab"), "{message}");
    }
}
