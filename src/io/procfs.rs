//! Facts read from `/proc` and `/sys`: Yama's mode, who runs a pid, a pid's executable.
use crate::core::ptrace_policy::TracerPrivilege;
use crate::core::supervisor::{ClientFacts, Kinship, Yama};
use std::fs;
use std::path::PathBuf;

/// Reads `kernel.yama.ptrace_scope`; an absent file means no Yama in this kernel.
pub fn yama() -> Yama {
    match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(text) => text
            .trim()
            .parse()
            .map(Yama::Scope)
            .unwrap_or(Yama::Scope(1)),
        Err(_) => Yama::Absent,
    }
}

/// Whether `pid` runs (a zombie does not) and as which real uid.
pub fn inspect(pid: u32) -> ClientFacts {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ClientFacts::NotRunning;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_string())
    };
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return ClientFacts::NotRunning;
    }
    // Uid: real, effective, saved, filesystem. Yama and ptrace compare the real one.
    let uid = field("Uid:").and_then(|s| s.split_whitespace().next().and_then(|u| u.parse().ok()));
    match uid {
        Some(uid) => ClientFacts::Running {
            uid,
            exe: exe(pid).map(|p| p.display().to_string()),
            privilege: tracer_privilege(pid),
            kinship: None,
        },
        None => ClientFacts::NotRunning,
    }
}

/// [`inspect`], and, when a socket peer asked, how `pid` relates to it.
pub fn inspect_for(pid: u32, asker: Option<u32>) -> ClientFacts {
    match (inspect(pid), asker) {
        (
            ClientFacts::Running {
                uid,
                exe,
                privilege,
                ..
            },
            Some(asker),
        ) => ClientFacts::Running {
            uid,
            exe,
            privilege,
            kinship: Some(kinship(pid, asker)),
        },
        (facts, _) => facts,
    }
}

/// Longest parent chain followed: far deeper than any real process tree, and a bound in
/// case parent links change under us while we walk (a pid reused mid-walk).
const MAX_ANCESTRY: usize = 4096;

/// Whether `pid` is `asker` or one of its descendants: follows the parent links in
/// `/proc/PID/stat` from `pid` upwards. A link that cannot be read (a process that
/// exited) ends the walk: unrelated, the safe answer.
pub fn kinship(pid: u32, asker: u32) -> Kinship {
    if pid == asker {
        return Kinship::Asker;
    }
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        match parent(current) {
            Some(parent) if parent == asker => return Kinship::Descendant,
            // pid 1 (init) and 0 (the kernel, above init and kthreadd) end every chain.
            Some(parent) if parent > 1 => current = parent,
            Some(_) | None => return Kinship::Unrelated,
        }
    }
    Kinship::Unrelated
}

/// The parent pid of `pid` (field 4 of `/proc/PID/stat`, after the command name, which
/// may itself contain spaces and parentheses: hence the last `)`).
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The executable of `pid`, without the ` (deleted)` suffix the kernel adds.
pub fn exe(pid: u32) -> Option<PathBuf> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text),
    ))
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    matches!(inspect(pid), ClientFacts::Running { .. })
}

/// CAP_SYS_PTRACE's bit in the capability sets of `/proc/PID/status`.
const CAP_SYS_PTRACE: u32 = 19;

/// Whether `pid` holds CAP_SYS_PTRACE in its effective set (`CapEff`); a process that
/// cannot be read is taken as ordinary, which only ever asks for a grant it may not need.
pub fn tracer_privilege(pid: u32) -> TracerPrivilege {
    let capable = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_PTRACE) != 0);
    if capable {
        TracerPrivilege::CapSysPtrace
    } else {
        TracerPrivilege::Ordinary
    }
}

/// This process's own privilege as a tracer.
pub fn own_tracer_privilege() -> TracerPrivilege {
    tracer_privilege(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinship_follows_parent_links() {
        let me = std::process::id();
        assert_eq!(kinship(me, me), Kinship::Asker);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let child_kin = kinship(child.id(), me);
        let parent_kin = kinship(me, child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(child_kin, Kinship::Descendant);
        assert_eq!(
            parent_kin,
            Kinship::Unrelated,
            "a parent is not a descendant"
        );
        assert_eq!(kinship(1, me), Kinship::Unrelated);
        assert_eq!(kinship(u32::MAX, me), Kinship::Unrelated, "no such process");
    }
}
